package events

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// PhaseBuckets are the upper bounds, in seconds, of the phase duration
// histogram's buckets (+Inf is implied).
var PhaseBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}

// sinceNote ends the help of every counter: they are computed from the event
// files still on disk, so they count from the oldest retained event and go
// down (a counter reset, to Prometheus) when a day's file is pruned.
const sinceNote = " since the oldest retained event (gpusnap_events_oldest_timestamp_seconds); resets when old event files are pruned."

// Metrics renders evts in the Prometheus text exposition format (0.0.4):
//
//	gpusnap_events_oldest_timestamp_seconds             gauge (absent without events)
//	gpusnap_restores_total{outcome}                     counter
//	gpusnap_checkpoints_total{outcome}                  counter
//	gpusnap_cold_start_fallbacks_total{reason}          counter, reason = reason code
//	gpusnap_restore_bytes_read_total                    counter
//	gpusnap_checkpoint_bytes_written_total              counter
//	gpusnap_phase_duration_seconds{kind,phase}          histogram (PhaseBuckets)
//
// Every known outcome and reason code is present, zero when no event has
// it, so rates start from zero; values seen only in the files follow. The
// counters are "since the oldest retained event": they are computed from
// the events given, which are those still on disk.
func Metrics(evts []Event) string {
	var (
		oldest        float64
		haveOldest    bool
		restores      = counterSet(RestoreOutcomes)
		checkpoints   = counterSet(CheckpointOutcomes)
		fallbacks     = counterSet(ReasonCodes)
		bytesRead     int64
		bytesWritten  int64
		histograms    = map[[2]string]*histogram{}
		histogramKeys [][2]string
	)
	for _, e := range evts {
		if !e.Time.IsZero() {
			t := float64(e.Time.UnixNano()) / 1e9
			if !haveOldest || t < oldest {
				oldest, haveOldest = t, true
			}
		}
		switch e.Kind {
		case KindRestore:
			restores[e.Outcome]++
			bytesRead += e.BytesRead
			if e.Outcome == OutcomeColdStart {
				fallbacks[cmp.Or(e.Code(), ReasonOther)]++
			}
		case KindCheckpoint:
			checkpoints[e.Outcome]++
			bytesWritten += e.BytesWritten
		default:
			continue
		}
		for phase, seconds := range e.Phases {
			if math.IsNaN(seconds) {
				continue
			}
			key := [2]string{e.Kind, phase}
			h := histograms[key]
			if h == nil {
				h = &histogram{buckets: make([]uint64, len(PhaseBuckets))}
				histograms[key] = h
				histogramKeys = append(histogramKeys, key)
			}
			h.observe(seconds)
		}
	}

	var b strings.Builder
	family(&b, "gpusnap_events_oldest_timestamp_seconds", "gauge",
		"Unix time of the oldest event still on disk; the counters count events since then.")
	if haveOldest {
		sample(&b, "gpusnap_events_oldest_timestamp_seconds", nil, formatFloat(oldest))
	}
	counterFamily(&b, "gpusnap_restores_total", "outcome",
		"Restore decisions (restored, cold-start fallback, failed under restore = required)"+sinceNote, restores)
	counterFamily(&b, "gpusnap_checkpoints_total", "outcome",
		"Checkpoints published or failed"+sinceNote, checkpoints)
	counterFamily(&b, "gpusnap_cold_start_fallbacks_total", "reason",
		"Containers cold-started instead of restored, by reason code"+sinceNote, fallbacks)
	family(&b, "gpusnap_restore_bytes_read_total", "counter", "Bytes of checkpoints restored"+sinceNote)
	sample(&b, "gpusnap_restore_bytes_read_total", nil, strconv.FormatInt(bytesRead, 10))
	family(&b, "gpusnap_checkpoint_bytes_written_total", "counter", "Bytes of checkpoints published"+sinceNote)
	sample(&b, "gpusnap_checkpoint_bytes_written_total", nil, strconv.FormatInt(bytesWritten, 10))

	const hname = "gpusnap_phase_duration_seconds"
	family(&b, hname, "histogram", "Duration of restore and checkpoint phases"+sinceNote)
	slices.SortFunc(histogramKeys, func(a, b [2]string) int {
		return cmp.Or(strings.Compare(a[0], b[0]), strings.Compare(a[1], b[1]))
	})
	for _, key := range histogramKeys {
		h := histograms[key]
		labels := []string{"kind", key[0], "phase", key[1]}
		var cumulative uint64
		for i, upper := range PhaseBuckets {
			cumulative += h.buckets[i]
			sample(&b, hname+"_bucket", slices.Concat(labels, []string{"le", formatFloat(upper)}), strconv.FormatUint(cumulative, 10))
		}
		sample(&b, hname+"_bucket", slices.Concat(labels, []string{"le", "+Inf"}), strconv.FormatUint(h.count, 10))
		sample(&b, hname+"_sum", labels, formatFloat(h.sum))
		sample(&b, hname+"_count", labels, strconv.FormatUint(h.count, 10))
	}
	return b.String()
}

// counterSet starts every known label value at zero.
func counterSet(known []string) map[string]uint64 {
	m := make(map[string]uint64, len(known))
	for _, k := range known {
		m[k] = 0
	}
	return m
}

// counterFamily writes one counter per label value, sorted by value.
func counterFamily(b *strings.Builder, name, label, help string, values map[string]uint64) {
	family(b, name, "counter", help)
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		sample(b, name, []string{label, k}, strconv.FormatUint(values[k], 10))
	}
}

type histogram struct {
	buckets []uint64 // per bucket, not cumulative
	count   uint64
	sum     float64
}

func (h *histogram) observe(v float64) {
	h.count++
	h.sum += v
	for i, upper := range PhaseBuckets {
		if v <= upper {
			h.buckets[i]++
			return
		}
	}
}

func family(b *strings.Builder, name, typ, help string) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(help), name, typ)
}

// sample writes one line; labels are name, value pairs.
func sample(b *strings.Builder, name string, labels []string, value string) {
	b.WriteString(name)
	if len(labels) > 0 {
		b.WriteByte('{')
		for i := 0; i < len(labels); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(labels[i])
			b.WriteString(`="`)
			b.WriteString(EscapeLabelValue(labels[i+1]))
			b.WriteByte('"')
		}
		b.WriteByte('}')
	}
	b.WriteByte(' ')
	b.WriteString(value)
	b.WriteByte('\n')
}

var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

// EscapeLabelValue escapes a label value for the text format: backslash,
// double quote and line feed.
func EscapeLabelValue(s string) string { return labelEscaper.Replace(s) }

func escapeHelp(s string) string { return helpEscaper.Replace(s) }

// formatFloat writes a sample value as the text format expects.
func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}
