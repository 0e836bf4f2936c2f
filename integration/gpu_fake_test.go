package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpusnap/containerd-shim-snapshot-v2/cudackpt/fakecuda"
)

// fakeCUDAState is the fake driver's state directory; the shims of the bed
// load the fake through SNAPSHOT_LIBCUDA.
var fakeCUDAState string

func buildFakeCUDA(dir string) (string, error) {
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o755); err != nil {
		return "", err
	}
	fakeCUDAState = filepath.Join(dir, "state")
	return fakecuda.Build(dir)
}

// fakeRecord reads the fake driver's record of one token ("state=...",
// counters of each entry point).
func fakeRecord(t *testing.T, token string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fakeCUDAState, token))
	if err != nil {
		t.Fatalf("fake driver never saw %s: %v", token, err)
	}
	rec := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		rec[k] = v
	}
	return rec
}

// fakeCalls lists the fake's calls for token, in order ("lock", ...).
func fakeCalls(token string) []string {
	data, _ := os.ReadFile(filepath.Join(fakeCUDAState, "calls.log"))
	var ops []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[1] == token {
			ops = append(ops, f[0])
		}
	}
	return ops
}

func expectRecord(t *testing.T, token string, want map[string]string) {
	t.Helper()
	rec := fakeRecord(t, token)
	for k, v := range want {
		if rec[k] != v {
			t.Fatalf("fake driver record of %s: %s = %q, want %q (record %v)", token, k, rec[k], v, rec)
		}
	}
}

// TestGPUCheckpointLeaveRunning: the shim locks and checkpoints the CUDA
// state before CRIU dumps, then restores and unlocks it in place.
func TestGPUCheckpointLeaveRunning(t *testing.T) {
	opts, store := handlerOptions(t, "")
	const id, token = "gpu-leave-running", "tok-leave-running"
	runStateful(t, id, opts, "FAKE_CUDA_TOKEN="+token)
	before := waitWarm(t, id, 5)
	if out, err := bed.Ctr("tasks", "checkpoint", id); err != nil {
		t.Fatalf("checkpoint: %v: %s", err, out)
	}
	if got := strings.Join(fakeCalls(token), " "); got != "lock checkpoint restore unlock" {
		t.Fatalf("driver calls %q, want lock checkpoint restore unlock", got)
	}
	expectRecord(t, token, map[string]string{"state": "RUNNING"})
	if len(checkpoints(t, store)) != 1 {
		t.Fatalf("no checkpoint published")
	}
	waitWarm(t, id, before.Count+1)
}

// TestGPURestoreFromStore: a container stopped by its checkpoint is restored
// into a new container, and the shim brings its GPU state back after CRIU.
func TestGPURestoreFromStore(t *testing.T) {
	opts, _ := handlerOptions(t, "")
	const token = "tok-restore"
	runStateful(t, "gpu-source", opts, "FAKE_CUDA_TOKEN="+token)
	before := waitWarm(t, "gpu-source", 20)
	if out, err := bed.Ctr("tasks", "checkpoint", "--exit", "gpu-source"); err != nil {
		t.Fatalf("checkpoint --exit: %v: %s", err, out)
	}
	expectRecord(t, token, map[string]string{"state": "CHECKPOINTED", "lock": "1", "checkpoint": "1", "restore": "0"})

	runStateful(t, "gpu-restored", opts, "FAKE_CUDA_TOKEN="+token)
	got := waitWarm(t, "gpu-restored", 0)
	if got.Count < before.Count {
		t.Fatalf("restored %+v does not continue from %+v", got, before)
	}
	expectRecord(t, token, map[string]string{"state": "RUNNING", "restore": "1", "unlock": "1"})
	st := statusOf(t, "gpu-restored")
	if phases, _ := st["phases_seconds"].(map[string]any); st["decision"] != "restored" || phases["cuda_restore"] == nil {
		t.Fatalf("status %v", st)
	}
}

// TestGPUCheckpointFailureRollsBack: the driver runs out of memory while
// checkpointing; the shim unlocks the process, publishes nothing, and the
// workload keeps serving.
func TestGPUCheckpointFailureRollsBack(t *testing.T) {
	opts, store := handlerOptions(t, "")
	const id, token = "gpu-oom", "tok-oom"
	os.WriteFile(filepath.Join(fakeCUDAState, token+".fail-checkpoint"), []byte("2"), 0o644)
	runStateful(t, id, opts, "FAKE_CUDA_TOKEN="+token)
	before := waitWarm(t, id, 5)
	_, err := bed.Ctr("tasks", "checkpoint", id)
	if err == nil || !strings.Contains(err.Error(), "CUDA_ERROR_OUT_OF_MEMORY") {
		t.Fatalf("want the driver's error named, got %v", err)
	}
	expectRecord(t, token, map[string]string{"state": "RUNNING", "lock": "1", "unlock": "1"})
	if n := len(checkpoints(t, store)); n != 0 {
		t.Fatalf("%d checkpoints published after a failed GPU checkpoint", n)
	}
	if got := waitWarm(t, id, before.Count+1); got.Child != "alive" {
		t.Fatalf("workload not serving: %+v", got)
	}
}
