package integration

import (
	"encoding/json"
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

// fakeCalls lists, in order, the fake's calls for token ("lock", ...) and
// the CRIU runs ("criu", logged by the bed's criu wrapper) since the last
// resetCalls; repeated CRIU runs (runc's version probe, then the dump) count
// once.
func fakeCalls(token string) string {
	data, _ := os.ReadFile(filepath.Join(fakeCUDAState, "calls.log"))
	var ops []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || (f[1] != token && f[0] != "criu") {
			continue
		}
		if len(ops) > 0 && f[0] == "criu" && ops[len(ops)-1] == "criu" {
			continue
		}
		ops = append(ops, f[0])
	}
	return strings.Join(ops, " ")
}

// resetCalls forgets the calls logged so far (the tests run one at a time).
func resetCalls(t *testing.T) {
	if err := os.Truncate(filepath.Join(fakeCUDAState, "calls.log"), 0); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
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
// state before CRIU dumps (a real driver's process cannot be dumped while it
// holds the GPU), then restores and unlocks it in place.
func TestGPUCheckpointLeaveRunning(t *testing.T) {
	opts, store := handlerOptions(t, "")
	const id, token = "gpu-leave-running", "tok-leave-running"
	runStateful(t, id, opts, "FAKE_CUDA_TOKEN="+token)
	before := waitWarm(t, id, 5)
	resetCalls(t)
	if out, err := bed.Ctr("tasks", "checkpoint", id); err != nil {
		t.Fatalf("checkpoint: %v: %s", err, out)
	}
	if got, want := fakeCalls(token), "lock checkpoint criu restore unlock"; got != want {
		t.Fatalf("driver and CRIU calls %q, want %q", got, want)
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
	opts, store := handlerOptions(t, "")
	const token = "tok-restore"
	runStateful(t, "gpu-source", opts, "FAKE_CUDA_TOKEN="+token)
	before := waitWarm(t, "gpu-source", 20)
	resetCalls(t)
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
	// CRIU dumps after the checkpoint and restores before the driver does.
	if got, want := fakeCalls(token), "lock checkpoint criu restore unlock"; got != want {
		t.Fatalf("driver and CRIU calls %q, want %q", got, want)
	}
	st := statusOf(t, "gpu-restored")
	if phases, _ := st["phases_seconds"].(map[string]any); st["decision"] != "restored" || phases["cuda_restore"] == nil {
		t.Fatalf("status %v", st)
	}
	// CRIU's own measurements reach the records: the dump's in the
	// manifest, the restore's in the status file.
	if cs, _ := st["criu_stats"].(map[string]any); cs["restore_s"] == nil || cs["restore_s"].(float64) <= 0 {
		t.Errorf("status has no CRIU restore statistics: %v", st["criu_stats"])
	}
	for _, ck := range checkpoints(t, store) {
		if cs := ck.Manifest.CRIUStats; cs["pages_written"] <= 0 || cs["frozen_s"] <= 0 {
			t.Errorf("checkpoint %s has no CRIU dump statistics: %v", ck.Name, cs)
		}
	}

	t.Run("a checkpoint taken on a GPU this node lacks cold-starts", func(t *testing.T) {
		claimGPU(t, store)
		resetCalls(t)
		runStateful(t, "gpu-mismatch", opts, "FAKE_CUDA_TOKEN="+token)
		got := waitWarm(t, "gpu-mismatch", 0)
		st := statusOf(t, "gpu-mismatch")
		reason, _ := st["reason"].(string)
		if st["decision"] != "cold-start" || !strings.Contains(reason, "gpu_count: checkpoint has 1, node has 0") {
			t.Fatalf("status %v", st)
		}
		if got.Count >= before.Count {
			t.Fatalf("cold-started workload counts from %d, as if restored", got.Count)
		}
		if calls := fakeCalls(token); calls != "" {
			t.Fatalf("a refused checkpoint reached CRIU or the driver: %q", calls)
		}
	})
}

// claimGPU rewrites the manifest of the store's only checkpoint as if it
// had been taken on one H100 (this node has no NVML, hence no GPUs).
func claimGPU(t *testing.T, store string) {
	t.Helper()
	cks := checkpoints(t, store)
	if len(cks) != 1 {
		t.Fatalf("want one checkpoint, have %d", len(cks))
	}
	path := filepath.Join(cks[0].Dir, "manifest.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	m["gpus"] = []map[string]any{{"uuid": "GPU-6d2f3c1a-0b4e-4f59-9a7c-2e8d1f0a3b5c", "product": "NVIDIA H100 80GB HBM3", "memory_bytes": 85520809984}}
	m["driver_version"] = "580.159.04"
	if data, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
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
	resetCalls(t)
	_, err := bed.Ctr("tasks", "checkpoint", id)
	if err == nil || !strings.Contains(err.Error(), "CUDA_ERROR_OUT_OF_MEMORY") {
		t.Fatalf("want the driver's error named, got %v", err)
	}
	expectRecord(t, token, map[string]string{"state": "RUNNING", "lock": "1", "unlock": "1"})
	if got, want := fakeCalls(token), "lock checkpoint unlock"; got != want {
		t.Fatalf("driver and CRIU calls %q, want %q (no CRIU dump)", got, want)
	}
	if n := len(checkpoints(t, store)); n != 0 {
		t.Fatalf("%d checkpoints published after a failed GPU checkpoint", n)
	}
	if got := waitWarm(t, id, before.Count+1); got.Child != "alive" {
		t.Fatalf("workload not serving: %+v", got)
	}
}
