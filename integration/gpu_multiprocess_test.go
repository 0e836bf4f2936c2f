package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// The bed has no NVIDIA devices; /dev/fuse stands in for one (its major is
// named to the shims through SNAPSHOT_GPU_DEVICE_MAJORS), as the fake
// driver stands in for libcuda. Like NVIDIA's device files, and unlike
// most, it cannot seek (lseek gives ESPIPE): a restore that set the file
// position of a reopened device failed on the H100 for exactly that.
const (
	standInDevice      = "/dev/fuse"
	standInDeviceMajor = "10"
)

// driverOps lists, in order, the fake driver's calls for the given tokens
// and the CRIU runs since the last resetCalls, as "op:token" ("criu" alone).
func driverOps(tokens ...string) []string {
	data, _ := os.ReadFile(filepath.Join(fakeCUDAState, "calls.log"))
	var ops []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "criu":
			if len(ops) == 0 || ops[len(ops)-1] != "criu" {
				ops = append(ops, "criu")
			}
		case len(f) >= 2 && slices.Contains(tokens, f[1]):
			ops = append(ops, f[0]+":"+f[1])
		}
	}
	return ops
}

// expectPhases checks that ops runs through the named steps in order: each
// step has one op per token ("criu" one in all), all of them after every op
// of the step before.
func expectPhases(t *testing.T, ops []string, tokens []string, steps ...string) {
	t.Helper()
	last := -1
	for _, step := range steps {
		var at []int
		for i, op := range ops {
			if op == step || strings.HasPrefix(op, step+":") {
				at = append(at, i)
			}
		}
		want := len(tokens)
		if step == "criu" {
			want = 1
		}
		if len(at) != want || at[0] < last {
			t.Fatalf("driver and CRIU calls %v: want %d %q, after every call of the steps before it (%v)", ops, want, step, steps)
		}
		last = at[len(at)-1]
	}
}

// TestGPUSeveralCUDAProcesses: a container with two CUDA processes (the
// main one and a child with its own CUDA context) and a child without
// CUDA. Checkpoint locks both before it checkpoints either, and CRIU dumps
// only after both are checkpointed; a restore brings both back before it
// unlocks either. A driver failure in one process part-way rolls both back
// and the workload keeps serving; a failed GPU restore of one falls back to
// a clean cold start.
func TestGPUSeveralCUDAProcesses(t *testing.T) {
	opts, store := handlerOptions(t, "")
	const id, main, child = "gpu-two-procs", "tok-two-main", "tok-two-child"
	tokens := []string{main, child}
	env := []string{"FAKE_CUDA_TOKEN=" + main, "CUDA_CHILD_TOKEN=" + child}
	runStateful(t, id, opts, env...)
	before := waitWarm(t, id, 5)

	t.Run("a driver failure in one process rolls both back", func(t *testing.T) {
		fail := filepath.Join(fakeCUDAState, child+".fail-checkpoint")
		os.WriteFile(fail, []byte("2"), 0o644)
		defer os.Remove(fail)
		resetCalls(t)
		if _, err := bed.Ctr("tasks", "checkpoint", id); err == nil || !strings.Contains(err.Error(), "CUDA_ERROR_OUT_OF_MEMORY") {
			t.Fatalf("want the driver's error named, got %v", err)
		}
		expectRecord(t, main, map[string]string{"state": "RUNNING", "restore": "1", "unlock": "1"})
		expectRecord(t, child, map[string]string{"state": "RUNNING", "restore": "0", "unlock": "1"})
		if ops := driverOps(tokens...); slices.Contains(ops, "criu") {
			t.Fatalf("CRIU ran after a failed GPU checkpoint: %v", ops)
		}
		if n := len(checkpoints(t, store)); n != 0 {
			t.Fatalf("%d checkpoints published after a failed GPU checkpoint", n)
		}
		if got := waitWarm(t, id, before.Count+1); got.Child != "alive" {
			t.Fatalf("workload not serving: %+v", got)
		}
	})

	resetCalls(t)
	if out, err := bed.Ctr("tasks", "checkpoint", "--exit", id); err != nil {
		t.Fatalf("checkpoint --exit: %v: %s", err, out)
	}
	expectPhases(t, driverOps(tokens...), tokens, "lock", "checkpoint", "criu")
	expectRecord(t, main, map[string]string{"state": "CHECKPOINTED"})
	expectRecord(t, child, map[string]string{"state": "CHECKPOINTED"})

	t.Run("a failed GPU restore of one process cold-starts cleanly", func(t *testing.T) {
		fail := filepath.Join(fakeCUDAState, child+".fail-restore")
		os.WriteFile(fail, []byte("2"), 0o644)
		resetCalls(t)
		runStateful(t, "gpu-two-procs-fails", opts, env...)
		got := waitWarm(t, "gpu-two-procs-fails", 0)
		os.Remove(fail)
		st := statusOf(t, "gpu-two-procs-fails")
		reason, _ := st["reason"].(string)
		if st["decision"] != "cold-start" || !regexp.MustCompile(`cuCheckpointProcessRestore pid \d+: CUDA_ERROR_OUT_OF_MEMORY`).MatchString(reason) {
			t.Fatalf("status %v", st)
		}
		if got.Count >= before.Count {
			t.Fatalf("the fallback counts from %d, as if restored", got.Count)
		}
		if ops := driverOps(tokens...); !slices.Contains(ops, "restore:"+main) || slices.Contains(ops, "unlock:"+main) {
			t.Fatalf("a restore that failed in one process unlocked another: %v", ops)
		}
		// Back to CHECKPOINTED for the next restore, as a fresh node would
		// find the checkpoint.
		for _, tok := range tokens {
			setFakeState(t, tok, "CHECKPOINTED")
		}
	})

	resetCalls(t)
	runStateful(t, "gpu-two-procs-restored", opts, env...)
	got := waitWarm(t, "gpu-two-procs-restored", 0)
	if got.Count < before.Count {
		t.Fatalf("restored %+v does not continue from %+v", got, before)
	}
	expectPhases(t, driverOps(tokens...), tokens, "criu", "restore", "unlock")
	expectRecord(t, main, map[string]string{"state": "RUNNING"})
	expectRecord(t, child, map[string]string{"state": "RUNNING"})
}

// setFakeState rewrites the state line of a token's record in the fake.
func setFakeState(t *testing.T, token, state string) {
	t.Helper()
	path := filepath.Join(fakeCUDAState, token)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := regexp.MustCompile(`(?m)^state=\w+$`).ReplaceAll(data, []byte("state="+state))
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestGPUDeviceHeldWithoutCUDA: a process of the container holds a GPU
// device file it opened itself (as a live NVML handle does) but has no CUDA
// state: CRIU could not dump it, so the checkpoint is refused before
// anything is locked, naming the process and the file, and the workload
// keeps serving. (Processes that inherited their device files from a CUDA
// process are left to CRIU's --inherited-devices instead: the GPU end to
// end covers them, and the unit tests of cudackpt and shim the decision.)
func TestGPUDeviceHeldWithoutCUDA(t *testing.T) {
	if _, err := os.Stat(standInDevice); err != nil {
		t.Skipf("no %s to stand in for a GPU device: %v", standInDevice, err)
	}
	opts, store := handlerOptions(t, "")
	const id, token = "gpu-device-held", "tok-device-held"
	runStatefulWith(t, id, opts, []string{"--device", standInDevice}, "FAKE_CUDA_TOKEN="+token, "DEVICE_CHILD="+standInDevice)
	before := waitWarm(t, id, 5)
	resetCalls(t)
	_, err := bed.Ctr("tasks", "checkpoint", id)
	want := regexp.MustCompile(`checkpoint refused: process \d+ \(stateful\) holds ` + standInDevice + ` \(fd \d+\) but has no CUDA state`)
	if err == nil || !want.MatchString(err.Error()) {
		t.Fatalf("want the holder named, got %v", err)
	}
	if ops := driverOps(token); len(ops) != 0 {
		t.Fatalf("a refused checkpoint reached the driver or CRIU: %v", ops)
	}
	expectRecord(t, token, map[string]string{"state": "RUNNING", "lock": "0"})
	if n := len(checkpoints(t, store)); n != 0 {
		t.Fatalf("%d checkpoints published", n)
	}
	if got := waitWarm(t, id, before.Count+1); got.Child != "alive" {
		t.Fatalf("workload not serving: %+v", got)
	}
}

// TestGPUInheritedDeviceFiles: the CUDA process holds a GPU device file (as
// the driver's files are held; the fake driver makes it let go at
// checkpoint and take it back at restore) and its child, without CUDA,
// inherited the open file, as torch.compile's compile workers inherit the
// driver's files from the pool process. The shim names the child to CRIU
// (patch 0003), so the container checkpoints, leaving it running, and
// restores into a new container whose child holds the device again, at the
// same fd, reopened by path.
func TestGPUInheritedDeviceFiles(t *testing.T) {
	if _, err := os.Stat(standInDevice); err != nil {
		t.Skipf("no %s to stand in for a GPU device: %v", standInDevice, err)
	}
	opts, store := handlerOptions(t, "")
	const id, token = "gpu-inherited", "tok-inherited"
	env := []string{"FAKE_CUDA_TOKEN=" + token, "FAKE_CUDA_DEVICE=" + standInDevice}
	flags := []string{"--device", standInDevice}
	runStatefulWith(t, id, opts, flags, env...)
	before := waitWarm(t, id, 5)
	if out, err := bed.Ctr("tasks", "checkpoint", id); err != nil {
		t.Fatalf("checkpoint: %v: %s", err, out)
	}
	if n := len(checkpoints(t, store)); n != 1 {
		t.Fatalf("%d checkpoints published, want 1", n)
	}
	expectRecord(t, token, map[string]string{"state": "RUNNING", "checkpoint": "1", "restore": "1"})
	waitWarm(t, id, before.Count+1)
	// ctr names a checkpoint image after the container and the time to the
	// second; a second checkpoint within the same second is refused as
	// "already exists".
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	if _, err := bed.Ctr("tasks", "checkpoint", "--exit", id); err != nil {
		t.Fatalf("checkpoint --exit: %v", err)
	}

	runStatefulWith(t, "gpu-inherited-restored", opts, flags, env...)
	got := waitWarm(t, "gpu-inherited-restored", 0)
	if got.Count < before.Count || got.Child != "alive" {
		t.Fatalf("restored %+v does not continue from %+v", got, before)
	}
	expectRecord(t, token, map[string]string{"state": "RUNNING"})
	// Every process of the restored container holds the device again: the
	// child's file reopened by CRIU, the main process's taken back at the
	// fake driver's restore.
	out, err := bed.Ctr("tasks", "exec", "--exec-id", "fds", "gpu-inherited-restored", "sh", "-c",
		"for p in $(pgrep stateful); do ls -l /proc/$p/fd | grep -c "+standInDevice+"; done")
	if err != nil || strings.Fields(out) == nil || strings.Contains(out, "0") {
		t.Fatalf("device files in the restored processes (one count each): %q, %v", out, err)
	}
	// The child's file is now CRIU's reopen, no longer the CUDA process's
	// open file: the checkpoint it was restored from still names it a
	// leftover, so the restored container checkpoints too.
	if out, err := bed.Ctr("tasks", "checkpoint", "gpu-inherited-restored"); err != nil {
		t.Fatalf("checkpoint of the restored container: %v: %s", err, out)
	}
	for _, ck := range checkpoints(t, store) {
		if len(ck.Manifest.GPULeftovers) != 1 {
			t.Errorf("checkpoint %s names leftovers %v: want the child", ck.Name, ck.Manifest.GPULeftovers)
		}
	}
}
