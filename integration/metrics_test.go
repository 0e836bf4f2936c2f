package integration

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// eventsDir is where the bed's shims record restores and checkpoints
// (SNAPSHOT_EVENTS_DIR); cliPath is the gpusnap the bed built.
var eventsDir, cliPath string

// serveMetrics starts `gpusnap metrics --listen` on the bed's events and
// returns a function that scrapes it.
func serveMetrics(t *testing.T) func() string {
	t.Helper()
	cmd := exec.Command(cliPath, "metrics", "--events-dir", eventsDir, "--listen", "127.0.0.1:0")
	out, err := cmd.StderrPipe() // it says where it listens on stderr
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := readLineWithin(out, 30*time.Second)
	if err != nil {
		t.Fatalf("gpusnap metrics printed no address: %v", err)
	}
	addr := regexp.MustCompile(`127\.0\.0\.1:\d+`).FindString(line)
	if addr == "" {
		t.Fatalf("no address in %q", line)
	}
	return func() string {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
}

// sample is the value of one exposition line, e.g.
// gpusnap_restores_total{outcome="restored"}; 0 when absent.
func sample(metrics, series string) float64 {
	for _, line := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// TestMetricsAfterRestoreAndFallback scrapes the node's metrics endpoint
// before and after a checkpoint, a restore and a cold-start fallback (other
// env: no checkpoint of that identity).
func TestMetricsAfterRestoreAndFallback(t *testing.T) {
	scrape := serveMetrics(t)
	before := scrape()
	opts, store := handlerOptions(t, "")
	checkpointWarm(t, "metrics-source", opts, store)
	runStateful(t, "metrics-restored", opts)
	waitWarm(t, "metrics-restored", 0)
	runStateful(t, "metrics-fallback", opts, "READY_AT=27")
	waitWarm(t, "metrics-fallback", 0)
	after := scrape()

	for series, want := range map[string]float64{
		`gpusnap_restores_total{outcome="restored"}`: 1,
		// The source's own first start found no checkpoint either.
		`gpusnap_restores_total{outcome="cold-start"}`:               2,
		`gpusnap_cold_start_fallbacks_total{reason="no-checkpoint"}`: 2,
		`gpusnap_checkpoints_total{outcome="checkpointed"}`:          1,
	} {
		if got := sample(after, series) - sample(before, series); got != want {
			t.Errorf("%s grew by %v, want %v", series, got, want)
		}
	}
	for _, phase := range []string{
		`gpusnap_phase_duration_seconds_count{kind="restore",phase="criu_restore"}`,
		`gpusnap_phase_duration_seconds_count{kind="checkpoint",phase="publish"}`,
	} {
		if sample(after, phase) <= sample(before, phase) {
			t.Errorf("%s did not grow", phase)
		}
	}
	if t.Failed() {
		fmt.Println(after)
	}
}

// readLineWithin reads one line, giving up after d so that a silent command
// fails the test instead of hanging it.
func readLineWithin(r io.Reader, d time.Duration) (string, error) {
	done := make(chan struct{})
	var line string
	var err error
	go func() {
		line, err = bufio.NewReader(r).ReadString('\n')
		close(done)
	}()
	select {
	case <-done:
		return line, err
	case <-time.After(d):
		return "", fmt.Errorf("nothing within %s", d)
	}
}
