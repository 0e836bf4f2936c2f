package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// prepareLog is what a stateful workload logged of the prepare exchange in
// its control directory (PREPARE_ON_CHECKPOINT=1).
func prepareLog(id string) string {
	data, _ := os.ReadFile(filepath.Join("/run/containerd-shim-snapshot", id, "prepare-log"))
	return strings.TrimSpace(string(data))
}

// waitPrepareLog waits until the workload's prepare log reads want.
func waitPrepareLog(t *testing.T, id, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if prepareLog(id) == want {
			return
		}
	}
	t.Fatalf("%s's prepare log %q, want %q", id, prepareLog(id), want)
}

// TestPrepareExchange: a workload that asked to prepare before checkpoints
// is asked before the checkpoint and answers; the checkpoint's phases show
// the exchange; the source is told it may grow back when the checkpoint
// ends, and a restored copy by restore-complete. A workload that asks but
// never answers is checkpointed anyway once prepare_timeout runs out.
func TestPrepareExchange(t *testing.T) {
	opts, store := handlerOptions(t, "prepare_timeout = \"1s\"\n")
	const id = "prepare-src"
	runStateful(t, id, opts, "PREPARE_ON_CHECKPOINT=1")
	before := waitWarm(t, id, 20)
	if out, err := bed.Ctr("tasks", "checkpoint", id); err != nil {
		t.Fatalf("checkpoint: %v: %s", err, out)
	}
	waitPrepareLog(t, id, "prepared\nresumed by checkpoint-done")
	cks := checkpoints(t, store)
	if len(cks) != 1 {
		t.Fatalf("%d checkpoints, want 1", len(cks))
	}
	if p, ok := cks[0].Manifest.Phases["prepare"]; !ok || p >= 1 {
		t.Fatalf("checkpoint phases %v: want a prepare phase shorter than prepare_timeout", cks[0].Manifest.Phases)
	}
	waitWarm(t, id, before.Count+1)

	runStateful(t, "prepare-restored", opts, "PREPARE_ON_CHECKPOINT=1")
	if got := waitWarm(t, "prepare-restored", 0); got.Count < before.Count {
		t.Fatalf("not restored: %+v", got)
	}
	waitPrepareLog(t, "prepare-restored", "resumed by restore-complete")

	t.Run("a workload that never answers is checkpointed after prepare_timeout", func(t *testing.T) {
		opts, store := handlerOptions(t, "prepare_timeout = \"1s\"\n")
		runStateful(t, "prepare-mute", opts, "PREPARE_ON_CHECKPOINT=mute")
		waitWarm(t, "prepare-mute", 20)
		if out, err := bed.Ctr("tasks", "checkpoint", "prepare-mute"); err != nil {
			t.Fatalf("checkpoint: %v: %s", err, out)
		}
		cks := checkpoints(t, store)
		if len(cks) != 1 {
			t.Fatalf("%d checkpoints, want 1", len(cks))
		}
		if p := cks[0].Manifest.Phases["prepare"]; p < 1 {
			t.Fatalf("checkpoint phases %v: want a prepare phase of prepare_timeout (1 s)", cks[0].Manifest.Phases)
		}
	})
}
