// Package fakecuda builds and drives a fake libcuda.so.1 for tests on
// machines without a GPU. The fake (testdata/fakecuda.c, whose header
// comment is its full contract) enforces the driver's checkpoint state
// machine per process and records every call, so tests of the shim's
// checkpoint and restore flows can run in CI and assert what the driver saw.
//
// A "CUDA process" is any process started with FAKE_CUDA_TOKEN=<token> in
// its environment; its state lives in <StateDir>/<token>, so it survives a
// CRIU restore under a new pid. Point the code under test at Lib, e.g. with
// SNAPSHOT_LIBCUDA (see Env); it needs no other configuration.
package fakecuda

import (
	"bufio"
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

//go:embed testdata/fakecuda.c
var source []byte

// ErrNoCompiler means gcc is not installed, so the fake cannot be built.
var ErrNoCompiler = errors.New("gcc not found")

// Build compiles the fake driver into dir/libcuda.so.1 and returns its path.
// Its state directory is dir/state unless FAKE_CUDA_STATE_DIR is set.
func Build(dir string) (string, error) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		return "", fmt.Errorf("build fake libcuda: %w", ErrNoCompiler)
	}
	src := filepath.Join(dir, "fakecuda.c")
	if err := os.WriteFile(src, source, 0o644); err != nil {
		return "", err
	}
	lib := filepath.Join(dir, "libcuda.so.1")
	out, err := exec.Command(gcc, "-shared", "-fPIC", "-O1", "-o", lib, src).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build fake libcuda: %v: %s", err, out)
	}
	return lib, nil
}

// Fake is a built fake driver and its state, for one test.
type Fake struct {
	Lib      string // path of the fake libcuda.so.1
	StateDir string // where it keeps per-token state and calls.log
	t        testing.TB
}

// New builds a fake driver in a temporary directory of t. It skips t when
// gcc is missing, since such a machine cannot run these tests at all.
func New(t testing.TB) *Fake {
	t.Helper()
	dir := t.TempDir()
	lib, err := Build(dir)
	if errors.Is(err, ErrNoCompiler) {
		t.Skip("skipping: gcc is needed to build the fake libcuda.so.1 and is not installed")
	}
	if err != nil {
		t.Fatal(err)
	}
	state := os.Getenv("FAKE_CUDA_STATE_DIR")
	if state == "" {
		state = filepath.Join(dir, "state")
	}
	if err := os.MkdirAll(state, 0o755); err != nil {
		t.Fatal(err)
	}
	return &Fake{Lib: lib, StateDir: state, t: t}
}

// Env is the environment that makes the shim (or any process using
// cudackpt.Load("")) open this fake driver.
func (f *Fake) Env() []string { return []string{"SNAPSHOT_LIBCUDA=" + f.Lib} }

// SetGPUs sets the GPUs present on the fake node; restoring onto any other
// GPU fails with CUDA_ERROR_INVALID_VALUE (as driver 580 answers). A new process starts on the first.
func (f *Fake) SetGPUs(uuids ...string) { f.write("gpus", strings.Join(uuids, ",")) }

// SetDriverVersion sets what cuDriverGetVersion reports (default 13000).
func (f *Fake) SetDriverVersion(v int) { f.write("driver_version", strconv.Itoa(v)) }

// Fail makes every later op ("lock", "checkpoint", "restore", "unlock" or
// "state") of token's process return code without changing its state.
// A lock failing with 909 (CUDA_ERROR_TIMEOUT) first waits out its timeout.
// Code 0 removes the fault.
func (f *Fake) Fail(token, op string, code int) {
	name := token + ".fail-" + op
	if code == 0 {
		if err := os.Remove(filepath.Join(f.StateDir, name)); err != nil && !os.IsNotExist(err) {
			f.t.Fatal(err)
		}
		return
	}
	f.write(name, strconv.Itoa(code))
}

// Process starts a stand-in CUDA process (sleep) whose identity is token,
// killed when the test ends.
func (f *Fake) Process(token string) *os.Process {
	f.t.Helper()
	cmd := exec.Command("sleep", "3600")
	cmd.Env = append(os.Environ(), "FAKE_CUDA_TOKEN="+token)
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// Start returns as soon as exec begins, before the kernel has set up the
	// new environment block: wait until the fake can see the token.
	environ := fmt.Sprintf("/proc/%d/environ", cmd.Process.Pid)
	want := []byte("\x00FAKE_CUDA_TOKEN=" + token + "\x00")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if b, err := os.ReadFile(environ); err == nil && bytes.Contains(append([]byte{0}, b...), want) {
			return cmd.Process
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("process %d never showed FAKE_CUDA_TOKEN in %s", cmd.Process.Pid, environ)
		}
	}
}

// Record is what the fake knows of one token's process.
type Record struct {
	State      string // RUNNING, LOCKED, CHECKPOINTED or FAILED
	GPU        string // current GPU UUID, "GPU-..."
	PID        int    // the pid it was last called with
	Lock       int    // calls of each entry point, failed ones included
	Checkpoint int
	Restore    int
	Unlock     int
	StateCalls int
}

// Record reads token's record; a token never seen is RUNNING with no calls.
func (f *Fake) Record(token string) Record {
	f.t.Helper()
	r := Record{State: "RUNNING"}
	data, err := os.ReadFile(filepath.Join(f.StateDir, token))
	if os.IsNotExist(err) {
		return r
	}
	if err != nil {
		f.t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		key, value, _ := strings.Cut(line, "=")
		n, _ := strconv.Atoi(value)
		switch key {
		case "state":
			r.State = value
		case "gpu":
			r.GPU = value
		case "pid":
			r.PID = n
		case "lock":
			r.Lock = n
		case "checkpoint":
			r.Checkpoint = n
		case "restore":
			r.Restore = n
		case "unlock":
			r.Unlock = n
		case "state_calls":
			r.StateCalls = n
		}
	}
	return r
}

// Call is one lock, checkpoint, restore or unlock, in the order the fake
// received them.
type Call struct {
	Op     string
	Token  string
	PID    int
	Result int // CUresult
}

func (c Call) String() string {
	return fmt.Sprintf("%s %s (pid %d) = %d", c.Op, c.Token, c.PID, c.Result)
}

// Calls returns the call log.
func (f *Fake) Calls() []Call {
	f.t.Helper()
	file, err := os.Open(filepath.Join(f.StateDir, "calls.log"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	defer file.Close()
	var calls []Call
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		var c Call
		if _, err := fmt.Sscan(sc.Text(), &c.Op, &c.Token, &c.PID, &c.Result); err != nil {
			f.t.Fatalf("calls.log: %q: %v", sc.Text(), err)
		}
		calls = append(calls, c)
	}
	return calls
}

func (f *Fake) write(name, value string) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(f.StateDir, name), []byte(value+"\n"), 0o644); err != nil {
		f.t.Fatal(err)
	}
}
