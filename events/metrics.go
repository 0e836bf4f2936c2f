package events

import (
	"cmp"
	"io"
	"math"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// PhaseBuckets are the upper bounds, in seconds, of the phase duration
// histogram's buckets (+Inf is implied).
var PhaseBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}

// sinceNote ends the help of every counter: they are computed from the event
// files still on disk, so they count from the oldest retained event and go
// down (a counter reset, to Prometheus) when a day's file is pruned.
const sinceNote = " since the oldest retained event (gpusnap_events_oldest_timestamp_seconds); resets when old event files are pruned."

// The metric families, as client_golang describes them.
var (
	oldestDesc = prometheus.NewDesc("gpusnap_events_oldest_timestamp_seconds",
		"Unix time of the oldest event still on disk; the counters count events since then.", nil, nil)
	restoresDesc = prometheus.NewDesc("gpusnap_restores_total",
		"Restore decisions (restored, cold-start fallback, failed under restore = required)"+sinceNote, []string{"outcome"}, nil)
	checkpointsDesc = prometheus.NewDesc("gpusnap_checkpoints_total",
		"Checkpoints published or failed"+sinceNote, []string{"outcome"}, nil)
	fallbacksDesc = prometheus.NewDesc("gpusnap_cold_start_fallbacks_total",
		"Containers cold-started instead of restored, by reason code"+sinceNote, []string{"reason"}, nil)
	bytesReadDesc = prometheus.NewDesc("gpusnap_restore_bytes_read_total",
		"Bytes of checkpoints restored"+sinceNote, nil, nil)
	bytesWrittenDesc = prometheus.NewDesc("gpusnap_checkpoint_bytes_written_total",
		"Bytes of checkpoints published"+sinceNote, nil, nil)
	transfersDesc = prometheus.NewDesc("gpusnap_registry_transfers_total",
		"Checkpoints pushed to or pulled from a registry, or failed"+sinceNote, []string{"outcome"}, nil)
	transferBytesDesc = prometheus.NewDesc("gpusnap_registry_bytes_total",
		"Bytes moved to (push: blobs the registry lacked) or from (pull) a registry"+sinceNote, []string{"direction"}, nil)
	phaseDesc = prometheus.NewDesc("gpusnap_phase_duration_seconds",
		"Duration of restore and checkpoint phases"+sinceNote, []string{"kind", "phase"}, nil)
)

// Collector is the node's metrics, computed from the event files at each
// scrape rather than kept in memory: the files are the only state, written
// by many shim processes. The families:
//
//	gpusnap_events_oldest_timestamp_seconds             gauge (absent without events)
//	gpusnap_restores_total{outcome}                     counter
//	gpusnap_checkpoints_total{outcome}                  counter
//	gpusnap_cold_start_fallbacks_total{reason}          counter, reason = reason code
//	gpusnap_restore_bytes_read_total                    counter
//	gpusnap_checkpoint_bytes_written_total              counter
//	gpusnap_registry_transfers_total{outcome}           counter
//	gpusnap_registry_bytes_total{direction}             counter, direction = push or pull
//	gpusnap_phase_duration_seconds{kind,phase}          histogram (PhaseBuckets)
//
// Every known outcome and reason code is present, zero when no event has
// it, so rates start from zero; values seen only in the files follow. The
// counters are "since the oldest retained event".
type Collector struct {
	read func() ([]Event, error)
}

// NewCollector returns a Collector that calls read at each collection.
func NewCollector(read func() ([]Event, error)) *Collector {
	return &Collector{read: read}
}

// Describe sends every family's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{oldestDesc, restoresDesc, checkpointsDesc, fallbacksDesc, bytesReadDesc, bytesWrittenDesc,
		transfersDesc, transferBytesDesc, phaseDesc} {
		ch <- d
	}
}

// Collect reads the events and sends their metrics; a read error becomes an
// invalid metric, which fails the whole gather (a scrape answers 500 rather
// than zeros that would look like a counter reset).
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	evts, err := c.read()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(restoresDesc, err)
		return
	}
	collect(evts, ch)
}

func collect(evts []Event, ch chan<- prometheus.Metric) {
	var (
		oldest       float64
		haveOldest   bool
		restores     = counterSet(RestoreOutcomes)
		checkpoints  = counterSet(CheckpointOutcomes)
		fallbacks    = counterSet(ReasonCodes)
		bytesRead    int64
		bytesWritten int64
		transfers    = counterSet(TransferOutcomes)
		moved        = map[string]int64{"push": 0, "pull": 0}
		histograms   = map[[2]string]*histogram{}
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
			restores[labelValue(e.Outcome)]++
			bytesRead += e.BytesRead
			if e.Outcome == OutcomeColdStart {
				fallbacks[labelValue(cmp.Or(e.Code(), ReasonOther))]++
			}
		case KindCheckpoint:
			checkpoints[labelValue(e.Outcome)]++
			bytesWritten += e.BytesWritten
		case KindTransfer:
			transfers[labelValue(e.Outcome)]++
			moved["push"] += e.BytesWritten
			moved["pull"] += e.BytesRead
		default:
			continue
		}
		for phase, seconds := range e.Phases {
			if math.IsNaN(seconds) {
				continue
			}
			key := [2]string{e.Kind, labelValue(phase)}
			h := histograms[key]
			if h == nil {
				h = &histogram{buckets: make([]uint64, len(PhaseBuckets))}
				histograms[key] = h
			}
			h.observe(seconds)
		}
	}

	if haveOldest {
		ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, oldest)
	}
	counters(ch, restoresDesc, restores)
	counters(ch, checkpointsDesc, checkpoints)
	counters(ch, fallbacksDesc, fallbacks)
	ch <- prometheus.MustNewConstMetric(bytesReadDesc, prometheus.CounterValue, float64(bytesRead))
	ch <- prometheus.MustNewConstMetric(bytesWrittenDesc, prometheus.CounterValue, float64(bytesWritten))
	counters(ch, transfersDesc, transfers)
	for direction, n := range moved {
		ch <- prometheus.MustNewConstMetric(transferBytesDesc, prometheus.CounterValue, float64(n), direction)
	}
	for key, h := range histograms {
		buckets := make(map[float64]uint64, len(PhaseBuckets))
		var cumulative uint64
		for i, upper := range PhaseBuckets {
			cumulative += h.buckets[i]
			buckets[upper] = cumulative
		}
		ch <- prometheus.MustNewConstHistogram(phaseDesc, h.count, h.sum, buckets, key[0], key[1])
	}
}

// WriteMetrics writes the metrics of evts in the Prometheus text exposition
// format (0.0.4), families sorted by name and series by label values.
func WriteMetrics(w io.Writer, evts []Event) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(func() ([]Event, error) { return evts, nil }))
	families, err := reg.Gather()
	if err != nil {
		return err
	}
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range families {
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	return nil
}

// counterSet starts every known label value at zero.
func counterSet(known []string) map[string]uint64 {
	m := make(map[string]uint64, len(known))
	for _, k := range known {
		m[k] = 0
	}
	return m
}

// counters sends one counter per label value.
func counters(ch chan<- prometheus.Metric, desc *prometheus.Desc, values map[string]uint64) {
	for k, v := range values {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), k)
	}
}

// labelValue makes a value from an event file a valid label value (the
// format requires UTF-8, and a file may hold anything); applied before
// counting, so two values that become the same count as one series.
func labelValue(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

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
