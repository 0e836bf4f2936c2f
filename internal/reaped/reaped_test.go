package reaped

import (
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
)

// checkCommands runs commands that succeed, fail and print, the way the
// shim's callers use them.
func checkCommands(t *testing.T) {
	t.Helper()
	out, err := Output(exec.Command("sh", "-c", "echo out; echo err >&2"))
	if err != nil || string(out) != "out\n" {
		t.Fatalf("Output = %q, %v; want \"out\\n\", nil", out, err)
	}
	_, err = Output(exec.Command("sh", "-c", "echo broken >&2; exit 3"))
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("a failing command's error = %v; want its exit status and stderr", err)
	}
	out, err = CombinedOutput(exec.Command("sh", "-c", "echo a; echo b >&2"))
	if err != nil || !strings.Contains(string(out), "a") || !strings.Contains(string(out), "b") {
		t.Fatalf("CombinedOutput = %q, %v", out, err)
	}
	if err := Run(exec.Command("false")); err == nil {
		t.Fatal("Run(false) succeeded")
	}
}

// TestOutsideAndInsideAShim runs the same commands without a reaper and then
// in a process that reaps every child on SIGCHLD, as a shim does. Without
// UseReaper the second half fails with "waitid: no child processes" for
// most of the commands (tried).
func TestOutsideAndInsideAShim(t *testing.T) {
	checkCommands(t)

	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, syscall.SIGCHLD)
	defer signal.Stop(sigs)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-sigs:
				reaper.Reap()
			case <-done:
				return
			}
		}
	}()
	UseReaper()
	for range 50 {
		checkCommands(t)
	}
}
