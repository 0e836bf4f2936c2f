package cudackpt

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/cudackpt/fakecuda"
)

// start launches one stand-in CUDA process per token.
func start(f *fakecuda.Fake, tokens ...string) []int {
	var pids []int
	for _, tok := range tokens {
		pids = append(pids, f.Process(tok).Pid)
	}
	return pids
}

func wantStates(t *testing.T, f *fakecuda.Fake, state string, tokens ...string) {
	t.Helper()
	for _, tok := range tokens {
		if r := f.Record(tok); r.State != state {
			t.Errorf("%s: state %s, want %s", tok, r.State, state)
		}
	}
}

func TestFindCUDAProcesses(t *testing.T) {
	f, d := newFake(t)
	cuda := start(f, "a", "b")
	plain := exec.Command("sleep", "60")
	if err := plain.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = plain.Process.Kill(); _ = plain.Wait() })
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}

	got, err := FindCUDAProcesses(d, []int{cuda[0], plain.Process.Pid, gone.Process.Pid, cuda[1]})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != cuda[0] || got[1] != cuda[1] {
		t.Fatalf("got %v, want %v", got, cuda)
	}
}

func TestCheckpointAllLocksAllFirst(t *testing.T) {
	f, d := newFake(t)
	tokens := []string{"a", "b", "c"}
	pids := start(f, tokens...)

	rollback, err := CheckpointAll(context.Background(), d, pids, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wantStates(t, f, "CHECKPOINTED", tokens...)
	calls := f.Calls()
	if len(calls) != 6 {
		t.Fatalf("calls: %v", calls)
	}
	for i, c := range calls {
		if want := map[bool]string{true: "lock", false: "checkpoint"}[i < 3]; c.Op != want || c.Result != 0 {
			t.Fatalf("call %d is %v, want a successful %s: all locks come before any checkpoint", i, c, want)
		}
	}

	if err := rollback(); err != nil {
		t.Fatal(err)
	}
	if err := rollback(); err != nil { // only the first call acts
		t.Fatal(err)
	}
	wantStates(t, f, "RUNNING", tokens...)
	if r := f.Record("b"); r.Restore != 1 || r.Unlock != 1 || r.GPU != gpuA {
		t.Fatalf("b after rollback: %+v", r)
	}
}

func TestCheckpointAllRollsBackOnOOM(t *testing.T) {
	f, d := newFake(t)
	tokens := []string{"a", "b", "c"}
	pids := start(f, tokens...)
	f.Fail("b", "checkpoint", CodeOutOfMemory)

	rollback, err := CheckpointAll(context.Background(), d, pids, time.Second)
	if err == nil || rollback != nil {
		t.Fatal("CheckpointAll succeeded despite an out-of-memory checkpoint")
	}
	want := "cuCheckpointProcessCheckpoint pid " + strconv.Itoa(pids[1]) + ": CUDA_ERROR_OUT_OF_MEMORY (2)"
	if err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
	wantStates(t, f, "RUNNING", tokens...)
	for _, tok := range []string{"a", "c"} {
		if r := f.Record(tok); r.Restore != 1 || r.Unlock != 1 {
			t.Errorf("%s was not restored and unlocked: %+v", tok, r)
		}
	}
	if r := f.Record("b"); r.Checkpoint != 1 || r.Restore != 0 || r.Unlock != 1 {
		t.Errorf("b should have failed one checkpoint and been unlocked only: %+v", r)
	}
}

func TestCheckpointAllLockTimeout(t *testing.T) {
	f, d := newFake(t)
	pids := start(f, "a", "b")
	f.Fail("b", "lock", CodeTimeout)

	_, err := CheckpointAll(context.Background(), d, pids, 100*time.Millisecond)
	if !IsTimeout(err) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(pids[1])) {
		t.Fatalf("got %v, want a lock timeout naming pid %d", err, pids[1])
	}
	wantStates(t, f, "RUNNING", "a", "b")
	for _, c := range f.Calls() {
		if c.Op == "checkpoint" {
			t.Fatalf("checkpointed after a failed lock: %v", c)
		}
	}
}

func TestRestoreAllRemaps(t *testing.T) {
	f, d := newFake(t)
	tokens := []string{"a", "b"}
	pids := start(f, tokens...)
	if _, err := CheckpointAll(context.Background(), d, pids, time.Second); err != nil {
		t.Fatal(err)
	}
	pairs, err := MapGPUs([]UUID{mustUUID(t, gpuA)}, []UUID{mustUUID(t, gpuB)})
	if err != nil {
		t.Fatal(err)
	}
	if err := RestoreAll(context.Background(), d, pids, pairs); err != nil {
		t.Fatal(err)
	}
	wantStates(t, f, "RUNNING", tokens...)
	for _, tok := range tokens {
		if r := f.Record(tok); r.GPU != gpuB {
			t.Errorf("%s is on %s, want %s", tok, r.GPU, gpuB)
		}
	}
}

func TestRestoreAllMissingGPU(t *testing.T) {
	f, d := newFake(t)
	pids := start(f, "a", "b")
	if _, err := CheckpointAll(context.Background(), d, pids, time.Second); err != nil {
		t.Fatal(err)
	}
	pairs := []GPUPair{{mustUUID(t, gpuA), mustUUID(t, gpuC)}}
	err := RestoreAll(context.Background(), d, pids, pairs)
	if codeOf(err) != CodeInvalidValue || !strings.Contains(err.Error(), "cuCheckpointProcessRestore pid "+strconv.Itoa(pids[0])) {
		t.Fatalf("got %v, want CUDA_ERROR_INVALID_VALUE naming pid %d", err, pids[0])
	}
	wantStates(t, f, "CHECKPOINTED", "a", "b")
	for _, c := range f.Calls() {
		if c.Op == "unlock" {
			t.Fatalf("unlocked after a failed restore: %v", c)
		}
	}
}

// stubAPI fails one step for one pid with a plain error, as a non-driver
// implementation of API would.
type stubAPI struct {
	failStep string
	failPID  int
	mu       sync.Mutex
	calls    []string
}

func (s *stubAPI) do(step string, pid int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, step+" "+strconv.Itoa(pid))
	if step == s.failStep && pid == s.failPID {
		return errors.New("boom")
	}
	return nil
}
func (s *stubAPI) State(pid int) (ProcessState, error) { return StateRunning, s.do("state", pid) }
func (s *stubAPI) Lock(pid int, _ time.Duration) error { return s.do("lock", pid) }
func (s *stubAPI) Checkpoint(pid int) error            { return s.do("checkpoint", pid) }
func (s *stubAPI) Restore(pid int, _ []GPUPair) error  { return s.do("restore", pid) }
func (s *stubAPI) Unlock(pid int) error                { return s.do("unlock", pid) }

func TestErrorsNameStepAndPID(t *testing.T) {
	api := &stubAPI{failStep: "lock", failPID: 7}
	_, err := CheckpointAll(context.Background(), api, []int{7}, time.Second)
	if err == nil || err.Error() != "cuda lock pid 7: boom" {
		t.Fatalf("got %v", err)
	}
	self := os.Getpid() // alive, so an unknown error must not be skipped
	api = &stubAPI{failStep: "state", failPID: self}
	if _, err := FindCUDAProcesses(api, []int{self}); err == nil || err.Error() != "cuda get state of pid "+strconv.Itoa(self)+": boom" {
		t.Fatalf("got %v", err)
	}
}

func TestCancelledContextTouchesNothing(t *testing.T) {
	api := &stubAPI{}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := CheckpointAll(ctx, api, []int{1, 2}, time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("CheckpointAll: %v", err)
	}
	if err := RestoreAll(ctx, api, []int{1, 2}, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("RestoreAll: %v", err)
	}
	if len(api.calls) != 0 {
		t.Fatalf("calls made: %v", api.calls)
	}
}
