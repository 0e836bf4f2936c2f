package events

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// benchEvents is a node's worth of retained events: restores and
// checkpoints with their phases, a few cold starts.
func benchEvents(n int) []Event {
	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	evts := make([]Event, 0, n)
	for i := range n {
		e := Event{Time: base.Add(time.Duration(i) * time.Second), Kind: KindRestore, Outcome: OutcomeRestored,
			BytesRead: int64(i), Phases: map[string]float64{"lookup": 0.01 * float64(i%7), "verify": 0.3,
				"criu_restore": float64(i % 13), "cuda_restore": 1.5, "rootfs_diff": 0.2}}
		switch i % 10 {
		case 3:
			e.Outcome, e.ReasonCode = OutcomeColdStart, ReasonGPUMismatch
		case 7:
			e.Kind, e.Outcome, e.BytesWritten = KindCheckpoint, OutcomeCheckpointed, int64(i)
			e.Phases = map[string]float64{"cuda_checkpoint": 2, "criu_dump": 4, fmt.Sprint("p", i%3): 1}
		}
		evts = append(evts, e)
	}
	return evts
}

func BenchmarkMetrics(b *testing.B) {
	evts := benchEvents(10000)
	b.ReportAllocs()
	for b.Loop() {
		WriteMetrics(io.Discard, evts)
	}
}

func BenchmarkMetricsFew(b *testing.B) {
	evts := benchEvents(20)
	b.ReportAllocs()
	for b.Loop() {
		WriteMetrics(io.Discard, evts)
	}
}

// BenchmarkScrape is what one scrape of gpusnap metrics --listen costs:
// reading the event files, then rendering.
func BenchmarkScrape(b *testing.B) {
	dir := b.TempDir()
	var lines []byte
	for _, e := range benchEvents(10000) {
		line, err := json.Marshal(e)
		if err != nil {
			b.Fatal(err)
		}
		lines = append(append(lines, line...), '\n')
	}
	if err := os.WriteFile(filepath.Join(dir, FileName(time.Now())), lines, 0o644); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		evts, err := Read(dir, time.Time{})
		if err != nil || len(evts) != 10000 {
			b.Fatal(len(evts), err)
		}
		WriteMetrics(io.Discard, evts)
	}
}
