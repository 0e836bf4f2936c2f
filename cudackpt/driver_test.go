package cudackpt

import (
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/cudackpt/fakecuda"
)

const (
	gpuA = "GPU-aaaaaaaa-0000-0000-0000-000000000001"
	gpuB = "GPU-bbbbbbbb-0000-0000-0000-000000000002"
	gpuC = "GPU-cccccccc-0000-0000-0000-000000000003"
)

// newFake builds the fake driver with GPUs A and B and loads it.
func newFake(t *testing.T) (*fakecuda.Fake, *Driver) {
	t.Helper()
	f := fakecuda.New(t)
	f.SetGPUs(gpuA, gpuB)
	d, err := Load(f.Lib)
	if err != nil {
		t.Fatal(err)
	}
	return f, d
}

func mustUUID(t *testing.T, s string) UUID {
	t.Helper()
	u, err := ParseUUID(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestLoadMissingLibrary(t *testing.T) {
	_, err := Load("/nonexistent/libcuda.so.1")
	if !errors.Is(err, ErrNoDriver) {
		t.Fatalf("Load of a missing library: got %v, want ErrNoDriver", err)
	}
}

func TestLoadFromEnv(t *testing.T) {
	f := fakecuda.New(t)
	t.Setenv(EnvLibrary, f.Lib)
	d, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if d.Path() != f.Lib {
		t.Fatalf("loaded %s, want %s", d.Path(), f.Lib)
	}
}

func TestVersion(t *testing.T) {
	for _, tc := range []struct {
		raw          int
		want         string
		remap, unsup bool
	}{
		{13000, "13.0", true, false},
		{12080, "12.8", false, false},
		{12040, "12.4", false, true},
	} {
		f := fakecuda.New(t)
		f.SetDriverVersion(tc.raw)
		d, err := Load(f.Lib)
		if err != nil {
			t.Fatal(err)
		}
		v, err := d.Version()
		if v.String() != tc.want || int(v) != tc.raw {
			t.Errorf("%d: version %s (%d), want %s", tc.raw, v, int(v), tc.want)
		}
		if d.SupportsRemap() != tc.remap {
			t.Errorf("%d: SupportsRemap = %v", tc.raw, d.SupportsRemap())
		}
		if errors.Is(err, ErrUnsupported) != tc.unsup {
			t.Errorf("%d: Version error %v, want unsupported=%v", tc.raw, err, tc.unsup)
		}
		if tc.unsup && !strings.Contains(err.Error(), "need 12.8") {
			t.Errorf("%d: unclear message %q", tc.raw, err)
		}
	}
}

func TestStateMachine(t *testing.T) {
	f, d := newFake(t)
	pid := f.Process("app").Pid
	b := mustUUID(t, gpuB)

	steps := []struct {
		name  string
		call  func() error
		code  int // 0: success
		state ProcessState
	}{
		{"checkpoint while running", func() error { return d.Checkpoint(pid) }, CodeIllegalState, StateRunning},
		{"restore while running", func() error { return d.Restore(pid, nil) }, CodeIllegalState, StateRunning},
		{"unlock while running", func() error { return d.Unlock(pid) }, CodeIllegalState, StateRunning},
		{"lock", func() error { return d.Lock(pid, time.Second) }, 0, StateLocked},
		{"lock twice", func() error { return d.Lock(pid, 0) }, CodeIllegalState, StateLocked},
		{"restore while locked", func() error { return d.Restore(pid, nil) }, CodeIllegalState, StateLocked},
		{"checkpoint", func() error { return d.Checkpoint(pid) }, 0, StateCheckpointed},
		{"checkpoint twice", func() error { return d.Checkpoint(pid) }, CodeIllegalState, StateCheckpointed},
		{"unlock while checkpointed", func() error { return d.Unlock(pid) }, CodeIllegalState, StateCheckpointed},
		{"restore onto B", func() error { return d.Restore(pid, []GPUPair{{mustUUID(t, gpuA), b}}) }, 0, StateLocked},
		{"unlock", func() error { return d.Unlock(pid) }, 0, StateRunning},
	}
	for _, s := range steps {
		err := s.call()
		if s.code == 0 && err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if s.code != 0 {
			var cerr *Error
			if !errors.As(err, &cerr) || cerr.Code != s.code || cerr.PID != pid {
				t.Fatalf("%s: got %v, want code %d", s.name, err, s.code)
			}
		}
		if st, err := d.State(pid); err != nil || st != s.state {
			t.Fatalf("after %s: state %v (%v), want %v", s.name, st, err, s.state)
		}
	}
	if r := f.Record("app"); r.GPU != gpuB || r.Lock != 2 || r.Checkpoint != 3 || r.Restore != 3 || r.Unlock != 3 {
		t.Fatalf("record %+v", r)
	}
}

func TestErrorNames(t *testing.T) {
	f, d := newFake(t)
	pid := f.Process("app").Pid
	err := d.Unlock(pid)
	want := "cuCheckpointProcessUnlock pid " + strconv.Itoa(pid) + ": CUDA_ERROR_ILLEGAL_STATE (401)"
	if err == nil || err.Error() != want || !IsIllegalState(err) {
		t.Fatalf("got %v, want %q", err, want)
	}

	plain := exec.Command("sleep", "60")
	if err := plain.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = plain.Process.Kill(); _ = plain.Wait() })
	_, err = d.State(plain.Process.Pid)
	if !IsNotCUDAProcess(err) || !strings.Contains(err.Error(), "CUDA_ERROR_NOT_INITIALIZED (3)") {
		t.Fatalf("non-CUDA process: got %v", err)
	}
	if _, err := d.RestoreThreadID(plain.Process.Pid); !IsNotCUDAProcess(err) {
		t.Fatalf("restore tid of non-CUDA process: got %v", err)
	}
	if tid, err := d.RestoreThreadID(pid); err != nil || tid != pid {
		t.Fatalf("restore tid: %d, %v", tid, err)
	}
}

func TestLockTimeout(t *testing.T) {
	f, d := newFake(t)
	pid := f.Process("stuck").Pid
	f.Fail("stuck", "lock", CodeTimeout)
	start := time.Now()
	err := d.Lock(pid, 200*time.Millisecond)
	if !IsTimeout(err) || !strings.Contains(err.Error(), "CUDA_ERROR_TIMEOUT (909)") {
		t.Fatalf("got %v, want a timeout", err)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Fatalf("timed out after %s, before the 200ms timeout", took)
	}
	if st, _ := d.State(pid); st != StateRunning {
		t.Fatalf("state after a failed lock: %v", st)
	}
}

func TestRestoreOntoMissingGPU(t *testing.T) {
	f, d := newFake(t)
	pid := f.Process("app").Pid
	lockAndCheckpoint(t, d, pid)
	err := d.Restore(pid, []GPUPair{{mustUUID(t, gpuA), mustUUID(t, gpuC)}})
	var cerr *Error
	if !errors.As(err, &cerr) || cerr.Code != CodeInvalidValue || cerr.Name != "CUDA_ERROR_INVALID_VALUE" {
		t.Fatalf("got %v, want CUDA_ERROR_INVALID_VALUE, as driver 580 answers", err)
	}
	// Pairs that leave out the process's GPU are refused too.
	if err := d.Restore(pid, []GPUPair{{mustUUID(t, gpuB), mustUUID(t, gpuA)}}); codeOf(err) != CodeInvalidValue {
		t.Fatalf("pairs without the current GPU: got %v", err)
	}
	if st, _ := d.State(pid); st != StateCheckpointed {
		t.Fatalf("state after failed restores: %v", st)
	}
}

func TestRestoreWithoutRemapSupport(t *testing.T) {
	f := fakecuda.New(t)
	f.SetGPUs(gpuA, gpuB)
	f.SetDriverVersion(12080)
	d, err := Load(f.Lib)
	if err != nil {
		t.Fatal(err)
	}
	pid := f.Process("app").Pid
	lockAndCheckpoint(t, d, pid)
	a, b := mustUUID(t, gpuA), mustUUID(t, gpuB)
	if err := d.Restore(pid, []GPUPair{{a, b}}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("remap on 12.8: got %v, want ErrUnsupported", err)
	}
	if err := d.Restore(pid, []GPUPair{{a, a}}); err != nil {
		t.Fatalf("identity pairs on 12.8: %v", err)
	}
}

// The fake keys state by token, not pid: a process restored by CRIU under a
// new pid finds its state again, as with the real driver.
func TestStateSurvivesNewPID(t *testing.T) {
	f, d := newFake(t)
	first := f.Process("app")
	lockAndCheckpoint(t, d, first.Pid)
	_ = first.Kill()
	second := f.Process("app")
	if st, err := d.State(second.Pid); err != nil || st != StateCheckpointed {
		t.Fatalf("state under new pid: %v, %v", st, err)
	}
	if err := d.Restore(second.Pid, nil); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentCalls(t *testing.T) {
	f, d := newFake(t)
	var pids []int
	for _, tok := range []string{"a", "b", "c", "d"} {
		pids = append(pids, f.Process(tok).Pid)
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		for _, pid := range pids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := d.State(pid); err != nil {
					t.Error(err)
				}
			}()
		}
	}
	wg.Wait()
	if r := f.Record("a"); r.StateCalls != 8 {
		t.Fatalf("state calls of a: %d, want 8", r.StateCalls)
	}
}

func lockAndCheckpoint(t *testing.T, d *Driver, pid int) {
	t.Helper()
	if err := d.Lock(pid, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := d.Checkpoint(pid); err != nil {
		t.Fatal(err)
	}
}
