package main

import (
	"bufio"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// samples parses a text exposition with Prometheus' own parser into
// `name{label="value",...}` (labels sorted, le as written) -> value.
func samples(t *testing.T, text string) map[string]float64 {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("not the text format: %v\n%s", err, text)
	}
	out := map[string]float64{}
	add := func(name string, labels []string, v float64) {
		slices.Sort(labels)
		out[name+"{"+strings.Join(labels, ",")+"}"] = v
	}
	for name, mf := range families {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			switch {
			case m.Counter != nil:
				add(name, labels, m.GetCounter().GetValue())
			case m.Gauge != nil:
				add(name, labels, m.GetGauge().GetValue())
			case m.Histogram != nil:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					add(name+"_bucket", append(slices.Clone(labels), fmt.Sprintf("le=%q", fmt.Sprint(b.GetUpperBound()))), float64(b.GetCumulativeCount()))
				}
				add(name+"_count", labels, float64(h.GetSampleCount()))
				add(name+"_sum", labels, h.GetSampleSum())
			}
		}
	}
	return out
}

// hasSamples fails unless every want series has its value.
func hasSamples(t *testing.T, what, text string, want map[string]float64) {
	t.Helper()
	got := samples(t, text)
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s: %s = %v (present %v), want %v", what, k, g, ok, v)
		}
	}
}

func TestMetricsCommand(t *testing.T) {
	dir := newEventsDir(t)
	out, _ := mustRun(t, exitOK, "metrics", "--events-dir", dir)
	contains(t, "metrics", out, "# TYPE gpusnap_restores_total counter\n")
	hasSamples(t, "metrics", out, map[string]float64{
		`gpusnap_restores_total{outcome="restored"}`:                                        1,
		`gpusnap_restores_total{outcome="cold-start"}`:                                      1,
		`gpusnap_restores_total{outcome="failed"}`:                                          1,
		`gpusnap_checkpoints_total{outcome="checkpointed"}`:                                 1,
		`gpusnap_cold_start_fallbacks_total{reason="node-mismatch"}`:                        1,
		`gpusnap_restore_bytes_read_total{}`:                                                3221225472,
		`gpusnap_checkpoint_bytes_written_total{}`:                                          3221225472,
		`gpusnap_events_oldest_timestamp_seconds{}`:                                         float64(eventsNow.Add(-48 * time.Hour).Unix()),
		`gpusnap_phase_duration_seconds_bucket{kind="restore",le="1",phase="criu_restore"}`: 1,
		`gpusnap_phase_duration_seconds_bucket{kind="restore",le="5",phase="criu_restore"}`: 2,
		`gpusnap_phase_duration_seconds_count{kind="checkpoint",phase="criu_dump"}`:         1,
	})

	// A node where the shim recorded nothing yet: zeros, and a note.
	missing := filepath.Join(dir, "none")
	out, errOut := mustRun(t, exitOK, "metrics", "--events-dir", missing)
	hasSamples(t, "metrics", out, map[string]float64{`gpusnap_restores_total{outcome="restored"}`: 0})
	contains(t, "stderr", errOut, missing+" does not exist")

	mustRun(t, exitUsage, "metrics", "--events-dir", dir, "--json")
	mustRun(t, exitUsage, "metrics", "--events-dir", dir, "extra")
	_, errOut = mustRun(t, exitFail, "metrics", "--events-dir", dir, "--listen", "256.0.0.1:bad")
	contains(t, "stderr", errOut, "gpusnap metrics: ")
}

// helperEnv makes the test binary run gpusnap's main with the arguments
// after "--", so TestMetricsListen can signal a real process.
const helperEnv = "GPUSNAP_TEST_MAIN"

func TestHelperMain(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("helper process")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(run(args, os.Stdout, os.Stderr))
}

// TestMetricsListen serves on 127.0.0.1:0 in a child process, scrapes
// /metrics and /healthz once, and stops the server with SIGTERM.
func TestMetricsListen(t *testing.T) {
	dir := newEventsDir(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestHelperMain$", "-test.count=1", "--",
		"metrics", "--events-dir", dir, "--listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	// The child names the address it bound on its first line.
	lines := bufio.NewReader(stderr)
	first := make(chan string, 1)
	go func() {
		line, _ := lines.ReadString('\n')
		first <- line
	}()
	var line string
	select {
	case line = <-first:
	case <-time.After(30 * time.Second):
		t.Fatal("metrics --listen printed no address")
	}
	m := regexp.MustCompile(`serving the events of .* on (http://127\.0\.0\.1:\d+)/metrics`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("first line %q names no address", line)
	}

	resp, err := http.Get(m[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	media, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || media != "text/plain" || params["version"] != "0.0.4" {
		t.Errorf("GET /metrics: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	hasSamples(t, "/metrics", string(body), map[string]float64{
		`gpusnap_restores_total{outcome="restored"}`:                 1,
		`gpusnap_cold_start_fallbacks_total{reason="node-mismatch"}`: 1,
	})

	resp, err = http.Get(m[1] + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Errorf("GET /healthz: %s %q", resp.Status, body)
	}

	// SIGTERM stops it cleanly.
	go io.Copy(io.Discard, lines)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("metrics --listen after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("metrics --listen did not stop on SIGTERM")
	}
}
