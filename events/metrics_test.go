package events

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// series is one parsed sample line.
type series struct {
	name   string
	labels map[string]string
	value  float64
}

// key is the series' identity: name and labels, sorted, unescaped.
func (s series) key() string {
	return seriesKey(s.name, s.labels)
}

func seriesKey(name string, labels map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, k+"="+strconv.Quote(labels[k]))
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}

// exposition is a parsed text exposition.
type exposition struct {
	help, typ map[string]string // by family name
	samples   map[string]float64
	order     []series
}

// parseExposition parses the text format strictly enough to catch
// malformed output: every sample belongs to a family announced by HELP and
// TYPE before it, label values are quoted with only \\, \" and \n escapes,
// and no series appears twice. Prometheus' own parser must accept it too.
func parseExposition(t *testing.T, text string) exposition {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	if _, err := parser.TextToMetricFamilies(strings.NewReader(text)); err != nil {
		t.Fatalf("Prometheus' parser: %v\n%s", err, text)
	}
	x := exposition{help: map[string]string{}, typ: map[string]string{}, samples: map[string]float64{}}
	if !strings.HasSuffix(text, "\n") {
		t.Fatalf("exposition does not end in a newline")
	}
	for n, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		fail := func(format string, a ...any) {
			t.Fatalf("line %d %q: %s", n+1, line, fmt.Sprintf(format, a...))
		}
		if rest, ok := strings.CutPrefix(line, "# HELP "); ok {
			name, help, _ := strings.Cut(rest, " ")
			x.help[name] = help
			continue
		}
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(rest, " ")
			if x.help[name] == "" {
				fail("TYPE before HELP")
			}
			x.typ[name] = typ
			continue
		}
		s := series{labels: map[string]string{}}
		i := strings.IndexAny(line, "{ ")
		if i <= 0 {
			fail("no metric name")
		}
		s.name, line = line[:i], line[i:]
		if line[0] == '{' {
			line = line[1:]
			for line[0] != '}' {
				eq := strings.Index(line, `="`)
				if eq <= 0 {
					fail("bad label")
				}
				label := line[:eq]
				line = line[eq+2:]
				var v strings.Builder
				for {
					if line == "" {
						fail("unterminated label value")
					}
					c := line[0]
					line = line[1:]
					if c == '"' {
						break
					}
					if c == '\n' {
						fail("raw newline in label value")
					}
					if c == '\\' {
						switch line[0] {
						case '\\':
							v.WriteByte('\\')
						case '"':
							v.WriteByte('"')
						case 'n':
							v.WriteByte('\n')
						default:
							fail("bad escape \\%c", line[0])
						}
						line = line[1:]
						continue
					}
					v.WriteByte(c)
				}
				if _, dup := s.labels[label]; dup {
					fail("label %s twice", label)
				}
				s.labels[label] = v.String()
				line = strings.TrimPrefix(line, ",")
			}
			line = line[1:]
		}
		value, ok := strings.CutPrefix(line, " ")
		if !ok {
			fail("no space before the value")
		}
		var err error
		if s.value, err = strconv.ParseFloat(value, 64); err != nil {
			fail("value: %v", err)
		}
		family := s.name
		if x.typ[family] == "" {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(s.name, suffix); ok && x.typ[base] == "histogram" {
					family = base
				}
			}
		}
		if x.typ[family] == "" {
			fail("sample of a family without TYPE")
		}
		if _, dup := x.samples[s.key()]; dup {
			fail("series twice")
		}
		x.samples[s.key()] = s.value
		x.order = append(x.order, s)
	}
	return x
}

// checkHistograms checks every histogram's buckets: le ascending, counts
// cumulative, +Inf last and equal to _count.
func checkHistograms(t *testing.T, x exposition) {
	t.Helper()
	type hist struct {
		les    []float64
		counts []float64
	}
	hists := map[string]*hist{}
	for _, s := range x.order {
		base, ok := strings.CutSuffix(s.name, "_bucket")
		if !ok || x.typ[base] != "histogram" {
			continue
		}
		others := maps.Clone(s.labels)
		delete(others, "le")
		k := seriesKey(base, others)
		if hists[k] == nil {
			hists[k] = &hist{}
		}
		le, err := strconv.ParseFloat(s.labels["le"], 64)
		if err != nil {
			t.Fatalf("%s: le %q", s.key(), s.labels["le"])
		}
		hists[k].les = append(hists[k].les, le)
		hists[k].counts = append(hists[k].counts, s.value)
	}
	for k, h := range hists {
		if !slices.IsSorted(h.les) || !slices.IsSorted(h.counts) || h.les[len(h.les)-1] != inf {
			t.Errorf("%s: buckets le %v, counts %v: not cumulative", k, h.les, h.counts)
		}
		name, labels, _ := strings.Cut(k, "{")
		if count := x.samples[name+"_count{"+labels]; count != h.counts[len(h.counts)-1] {
			t.Errorf("%s: +Inf bucket %v, _count %v", k, h.counts[len(h.counts)-1], count)
		}
	}
}

var inf, _ = strconv.ParseFloat("+Inf", 64)

func TestMetrics(t *testing.T) {
	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	weird := "we\"ird\nphase\\"
	evts := []Event{
		{Time: base, Kind: KindRestore, Outcome: OutcomeRestored, BytesRead: 1000,
			Phases: map[string]float64{"lookup": 0.0078125, "criu_restore": 3.5, "cuda_restore": 1}},
		{Time: base.Add(time.Minute), Kind: KindRestore, Outcome: OutcomeRestored, BytesRead: 500,
			Phases: map[string]float64{"lookup": 0.25, "criu_restore": 2.5}},
		{Time: base.Add(2 * time.Minute), Kind: KindRestore, Outcome: OutcomeColdStart,
			Reason: "lookup: store /s holds no checkpoint", ReasonCode: ReasonNoCheckpoint, Phases: map[string]float64{"lookup": 0.125}},
		{Time: base.Add(3 * time.Minute), Kind: KindRestore, Outcome: OutcomeColdStart,
			Reason: "whatever", ReasonCode: ReasonGPUMismatch, Phases: map[string]float64{"lookup": 0.5}},
		{Time: base.Add(4 * time.Minute), Kind: KindRestore, Outcome: OutcomeFailed,
			Reason: "restore from checkpoint x failed: criu_restore: killed", Phases: map[string]float64{"criu_restore": 200}},
		// No code recorded (never by Record): other, the words are not parsed.
		{Time: base.Add(5 * time.Minute), Kind: KindRestore, Outcome: OutcomeColdStart, Reason: "store /s holds no checkpoint"},
		// The oldest event.
		{Time: base.Add(-time.Hour), Kind: KindCheckpoint, Outcome: OutcomeCheckpointed, BytesWritten: 3000,
			Phases: map[string]float64{"cuda_checkpoint": 0.5, "criu_dump": 12, "copy_images": 0.0625, "rootfs_diff": 0.01}},
		{Time: base.Add(6 * time.Minute), Kind: KindCheckpoint, Outcome: OutcomeCheckpointFailed,
			Reason: "pausing for the checkpoint: x", Phases: map[string]float64{weird: 1}},
		// Registry transfers: bytes by direction, phases under kind transfer.
		{Time: base.Add(6 * time.Minute), Kind: KindTransfer, Outcome: OutcomePushed, BytesWritten: 500, Phases: map[string]float64{"push": 1.5}},
		{Time: base.Add(6 * time.Minute), Kind: KindTransfer, Outcome: OutcomePulled, BytesRead: 700, Phases: map[string]float64{"pull": 3}},
		{Time: base.Add(6 * time.Minute), Kind: KindTransfer, Outcome: OutcomePullFailed, Reason: "pull x: 401"},
		// A kind this build does not know counts nowhere.
		{Time: base.Add(7 * time.Minute), Kind: "migration", Outcome: "done", BytesRead: 7, Phases: map[string]float64{"x": 1}},
	}
	text := render(t, evts)
	x := parseExposition(t, text)
	checkHistograms(t, x)

	for name, typ := range map[string]string{
		"gpusnap_events_oldest_timestamp_seconds": "gauge",
		"gpusnap_restores_total":                  "counter",
		"gpusnap_checkpoints_total":               "counter",
		"gpusnap_cold_start_fallbacks_total":      "counter",
		"gpusnap_restore_bytes_read_total":        "counter",
		"gpusnap_checkpoint_bytes_written_total":  "counter",
		"gpusnap_registry_transfers_total":        "counter",
		"gpusnap_registry_bytes_total":            "counter",
		"gpusnap_phase_duration_seconds":          "histogram",
	} {
		if x.typ[name] != typ || x.help[name] == "" {
			t.Errorf("%s: TYPE %q, HELP %q; want TYPE %s and a HELP", name, x.typ[name], x.help[name], typ)
		}
	}

	type l = map[string]string
	bucket := func(kind, phase, le string) string {
		return seriesKey("gpusnap_phase_duration_seconds_bucket", l{"kind": kind, "phase": phase, "le": le})
	}
	hist := func(suffix, kind, phase string) string {
		return seriesKey("gpusnap_phase_duration_seconds_"+suffix, l{"kind": kind, "phase": phase})
	}
	want := map[string]float64{
		seriesKey("gpusnap_events_oldest_timestamp_seconds", nil): float64(base.Add(-time.Hour).Unix()),

		seriesKey("gpusnap_restores_total", l{"outcome": "restored"}):   2,
		seriesKey("gpusnap_restores_total", l{"outcome": "cold-start"}): 3,
		seriesKey("gpusnap_restores_total", l{"outcome": "failed"}):     1,

		seriesKey("gpusnap_checkpoints_total", l{"outcome": "checkpointed"}):      1,
		seriesKey("gpusnap_checkpoints_total", l{"outcome": "checkpoint-failed"}): 1,

		seriesKey("gpusnap_cold_start_fallbacks_total", l{"reason": "no-checkpoint"}):       1,
		seriesKey("gpusnap_cold_start_fallbacks_total", l{"reason": "gpu-mismatch"}):        1,
		seriesKey("gpusnap_cold_start_fallbacks_total", l{"reason": "other"}):               1,
		seriesKey("gpusnap_cold_start_fallbacks_total", l{"reason": "restore-failed"}):      0, // failed is not a fallback
		seriesKey("gpusnap_cold_start_fallbacks_total", l{"reason": "identity-mismatch"}):   0,
		seriesKey("gpusnap_cold_start_fallbacks_total", l{"reason": "verification-failed"}): 0,

		seriesKey("gpusnap_restore_bytes_read_total", nil):       1500,
		seriesKey("gpusnap_checkpoint_bytes_written_total", nil): 3000,

		seriesKey("gpusnap_registry_transfers_total", l{"outcome": "pushed"}):      1,
		seriesKey("gpusnap_registry_transfers_total", l{"outcome": "pulled"}):      1,
		seriesKey("gpusnap_registry_transfers_total", l{"outcome": "pull-failed"}): 1,
		seriesKey("gpusnap_registry_transfers_total", l{"outcome": "push-failed"}): 0,
		seriesKey("gpusnap_registry_bytes_total", l{"direction": "push"}):          500,
		seriesKey("gpusnap_registry_bytes_total", l{"direction": "pull"}):          700,
		hist("sum", "transfer", "pull"):                                            3,

		// restore/criu_restore: 3.5, 2.5 and 200 (above every bound).
		bucket("restore", "criu_restore", "1"):    0,
		bucket("restore", "criu_restore", "2.5"):  1,
		bucket("restore", "criu_restore", "5"):    2,
		bucket("restore", "criu_restore", "120"):  2,
		bucket("restore", "criu_restore", "+Inf"): 3,
		hist("sum", "restore", "criu_restore"):    206,
		hist("count", "restore", "criu_restore"):  3,
		// restore/lookup: 0.0078125, 0.25, 0.125, 0.5.
		bucket("restore", "lookup", "0.01"): 1,
		bucket("restore", "lookup", "0.05"): 1,
		bucket("restore", "lookup", "0.1"):  1,
		bucket("restore", "lookup", "0.25"): 3,
		bucket("restore", "lookup", "0.5"):  4,
		bucket("restore", "lookup", "+Inf"): 4,
		hist("sum", "restore", "lookup"):    0.8828125,
		hist("count", "restore", "lookup"):  4,
		// A value equal to a bound is in that bucket.
		bucket("checkpoint", "rootfs_diff", "0.01"): 1,
		bucket("restore", "cuda_restore", "0.5"):    0,
		bucket("restore", "cuda_restore", "1"):      1,
		bucket("checkpoint", "criu_dump", "10"):     0,
		bucket("checkpoint", "criu_dump", "30"):     1,
		hist("sum", "checkpoint", "copy_images"):    0.0625,
		// The phase with a quote, a newline and a backslash in its name.
		bucket("checkpoint", weird, "1"):   1,
		hist("count", "checkpoint", weird): 1,
	}
	for k, v := range want {
		got, ok := x.samples[k]
		if !ok {
			t.Errorf("no series %s", k)
		} else if got != v {
			t.Errorf("%s = %v, want %v", k, got, v)
		}
	}
	if n := len(x.samples); n != 1+3+2+len(ReasonCodes)+2+4+2+10*15 {
		t.Errorf("%d series, want %d (10 histograms):\n%s", n, 1+3+2+len(ReasonCodes)+2+4+2+10*15, text)
	}

	// The escaped label, exactly as written.
	for _, line := range []string{
		`gpusnap_phase_duration_seconds_count{kind="checkpoint",phase="we\"ird\nphase\\"} 1`,
		`gpusnap_phase_duration_seconds_bucket{kind="restore",phase="lookup",le="0.01"} 1`,
		`gpusnap_restores_total{outcome="cold-start"} 3`,
		"# TYPE gpusnap_phase_duration_seconds histogram",
	} {
		if !strings.Contains(text, "\n"+line+"\n") {
			t.Errorf("no line %s in\n%s", line, text)
		}
	}
	if strings.Contains(text, "migration") {
		t.Errorf("an event of an unknown kind is in the metrics:\n%s", text)
	}
}

// render is WriteMetrics' output.
func render(t *testing.T, evts []Event) string {
	t.Helper()
	var b bytes.Buffer
	if err := WriteMetrics(&b, evts); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestMetricsEmpty(t *testing.T) {
	text := render(t, nil)
	x := parseExposition(t, text)
	if _, ok := x.samples[seriesKey("gpusnap_events_oldest_timestamp_seconds", nil)]; ok {
		t.Error("an oldest event timestamp without events")
	}
	// Every known outcome and reason is there, at zero.
	if n := len(x.samples); n != 3+2+len(ReasonCodes)+2+4+2 {
		t.Errorf("%d series:\n%s", n, text)
	}
	for k, v := range x.samples {
		if v != 0 {
			t.Errorf("%s = %v without events", k, v)
		}
	}
}

// Label values from the files that are not UTF-8 are made valid before
// counting, so two that become the same are one series, not a failed scrape.
func TestMetricsInvalidUTF8(t *testing.T) {
	evts := []Event{
		{Kind: KindRestore, Outcome: "odd\xff", Phases: map[string]float64{"a\xff": 1}},
		{Kind: KindRestore, Outcome: "odd\xfe", Phases: map[string]float64{"a\xfe": 2}},
	}
	x := parseExposition(t, render(t, evts))
	if got := x.samples[seriesKey("gpusnap_restores_total", map[string]string{"outcome": "odd\uFFFD"})]; got != 2 {
		t.Errorf("outcome odd\\uFFFD = %v, want 2", got)
	}
	if got := x.samples[seriesKey("gpusnap_phase_duration_seconds_count", map[string]string{"kind": "restore", "phase": "a\uFFFD"})]; got != 2 {
		t.Errorf("phase a\\uFFFD count = %v, want 2", got)
	}
}

// A collector whose files cannot be read fails the gather instead of
// reporting zeros (which Prometheus would take for a counter reset).
func TestCollectorReadError(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(func() ([]Event, error) { return nil, errors.New("disk on fire") }))
	if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("Gather: %v, want the read error", err)
	}
	// And a working one is consistent with its descriptions.
	reg = prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(func() ([]Event, error) {
		return []Event{{Kind: KindRestore, Outcome: OutcomeRestored, Time: time.Now()}}, nil
	}))
	if _, err := reg.Gather(); err != nil {
		t.Errorf("Gather: %v", err)
	}
}
