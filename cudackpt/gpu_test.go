package cudackpt

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The real-driver test runs only on a GPU node, with SNAPSHOT_GPU_TESTS=1.
// It needs gcc to build testdata/cudaworkload, or SNAPSHOT_CUDA_WORKLOAD
// naming a prebuilt copy (the GPU machine has no compiler).

type workload struct {
	cmd   *exec.Cmd
	lines chan string
}

func startWorkload(t *testing.T) *workload {
	t.Helper()
	bin := os.Getenv("SNAPSHOT_CUDA_WORKLOAD")
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "cudaworkload")
		out, err := exec.Command("gcc", "-O2", "-o", bin, "testdata/cudaworkload/cudaworkload.c").CombinedOutput()
		if err != nil {
			t.Skipf("cannot build the CUDA workload (set SNAPSHOT_CUDA_WORKLOAD): %v %s", err, out)
		}
	}
	w := &workload{cmd: exec.Command(bin, "256"), lines: make(chan string, 1000)}
	out, err := w.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.cmd.Process.Kill(); _ = w.cmd.Wait() })
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			w.lines <- sc.Text()
		}
		close(w.lines)
	}()
	w.expect(t, "ready", 60*time.Second)
	return w
}

// expect waits for a line starting with prefix, failing on any error line.
func (w *workload) expect(t *testing.T, prefix string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-w.lines:
			if !ok {
				t.Fatalf("workload exited while waiting for %q", prefix)
			}
			if strings.HasPrefix(line, "error") || strings.HasPrefix(line, "bad") {
				t.Fatalf("workload: %s", line)
			}
			if strings.HasPrefix(line, prefix) {
				return
			}
		case <-deadline:
			t.Fatalf("no %q from the workload in %s", prefix, timeout)
		}
	}
}

// drain forgets output printed so far, so expect sees only what comes next.
func (w *workload) drain() {
	for {
		select {
		case <-w.lines:
		default:
			return
		}
	}
}

func TestRealDriver(t *testing.T) {
	if os.Getenv("SNAPSHOT_GPU_TESTS") != "1" {
		t.Skip("set SNAPSHOT_GPU_TESTS=1 on a GPU node to run against the real CUDA driver")
	}
	d, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	v, err := d.Version()
	if err != nil {
		t.Fatal(err)
	}
	gpus, info, err := Inventory()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("driver %s (CUDA %s via cuDriverGetVersion, %s via NVML), %d GPU(s), GPU 0 %s %s",
		info.Version, v, info.CUDA, len(gpus), gpus[0].UUID, gpus[0].Name)
	w := startWorkload(t)
	pid := w.cmd.Process.Pid

	// What the driver answers for pids without CUDA state.
	plain := exec.Command("sleep", "60")
	if err := plain.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = plain.Process.Kill(); _ = plain.Wait() }()
	_, err = d.State(plain.Process.Pid)
	t.Logf("state of a process without CUDA: %v", err)
	if !IsNotCUDAProcess(err) {
		t.Errorf("IsNotCUDAProcess(%v) = false", err)
	}
	gone := exec.Command("true")
	_ = gone.Run()
	_, err = d.State(gone.Process.Pid)
	t.Logf("state of an exited pid: %v", err)
	if codeOf(err) != CodeOperatingSystem {
		t.Errorf("state of an exited pid: %v, want CUDA_ERROR_OPERATING_SYSTEM as driver 580 answers", err)
	}
	if found, err := FindCUDAProcesses(d, []int{plain.Process.Pid, pid, gone.Process.Pid}); err != nil || len(found) != 1 || found[0] != pid {
		t.Fatalf("FindCUDAProcesses: %v, %v", found, err)
	}
	if tid, err := d.RestoreThreadID(pid); err != nil || tid <= 0 {
		t.Errorf("restore thread of the workload: %d, %v", tid, err)
	}

	// Wrong-state calls.
	if err := d.Checkpoint(pid); !IsIllegalState(err) {
		t.Errorf("checkpoint while running: %v, want CUDA_ERROR_ILLEGAL_STATE", err)
	}
	if err := d.Unlock(pid); !IsIllegalState(err) {
		t.Errorf("unlock while running: %v, want CUDA_ERROR_ILLEGAL_STATE", err)
	}

	// The shim's flow: checkpoint all, then restore onto the same GPU by UUID.
	start := time.Now()
	rollback, err := CheckpointAll(context.Background(), d, []int{pid}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lock+checkpoint: %s", time.Since(start))
	if st, err := d.State(pid); err != nil || st != StateCheckpointed {
		t.Fatalf("after CheckpointAll: %v, %v", st, err)
	}
	if err := d.Unlock(pid); !IsIllegalState(err) {
		t.Errorf("unlock while checkpointed: %v, want CUDA_ERROR_ILLEGAL_STATE", err)
	}
	w.drain()
	pairs, err := MapGPUs([]UUID{gpus[0].UUID}, []UUID{gpus[0].UUID})
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := RestoreAll(context.Background(), d, []int{pid}, pairs); err != nil {
		t.Fatal(err)
	}
	t.Logf("restore+unlock: %s", time.Since(start))
	_ = rollback // the restore above already undid the checkpoint
	w.expect(t, "ok", 10*time.Second)

	// Lock twice, and a restore onto a GPU that does not exist.
	if err := d.Lock(pid, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := d.Lock(pid, time.Second); !IsIllegalState(err) {
		t.Errorf("lock while locked: %v, want CUDA_ERROR_ILLEGAL_STATE", err)
	}
	if err := d.Checkpoint(pid); err != nil {
		t.Fatal(err)
	}
	missing := gpus[0].UUID
	missing[15] ^= 0xff
	// The fake answers these as driver 580 does: keep them in step.
	if err := d.Restore(pid, []GPUPair{{Old: gpus[0].UUID, New: missing}}); codeOf(err) != CodeInvalidValue {
		t.Errorf("restore onto a missing GPU: %v, want CUDA_ERROR_INVALID_VALUE", err)
	}
	if err := d.Restore(pid, []GPUPair{{Old: missing, New: gpus[0].UUID}}); codeOf(err) != CodeInvalidValue {
		t.Errorf("restore with pairs that omit the process's GPU: %v, want CUDA_ERROR_INVALID_VALUE", err)
	}
	if st, err := d.State(pid); err != nil || st != StateCheckpointed {
		t.Errorf("state after failed restores: %v, %v, want checkpointed", st, err)
	}
	w.drain()
	if err := RestoreAll(context.Background(), d, []int{pid}, nil); err != nil {
		t.Fatalf("restore after failed restores: %v", err)
	}
	w.expect(t, "ok", 10*time.Second)

	// The returned rollback leaves the workload running.
	rollback, err = CheckpointAll(context.Background(), d, []int{pid}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	w.drain()
	if err := rollback(); err != nil {
		t.Fatal(err)
	}
	w.expect(t, "ok", 10*time.Second)
	if st, err := d.State(pid); err != nil || st != StateRunning {
		t.Fatalf("after rollback: %v, %v", st, err)
	}
}
