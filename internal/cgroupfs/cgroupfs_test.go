package cgroupfs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

func TestResolve(t *testing.T) {
	for in, want := range map[string]string{
		"/snapshot-test/ctr1":             "/snapshot-test/ctr1",
		"k8s.io/abc":                      "/k8s.io/abc",
		"system.slice:cri-containerd:abc": "/system.slice/cri-containerd-abc.scope",
		"kubepods-besteffort-pod12.slice:cri-containerd:abc": "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope",
		":runc:abc":                "/system.slice/runc-abc.scope",
		"machine.slice::abc.slice": "/machine.slice/abc.slice",
	} {
		if got, err := Resolve(in); err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "/a/../../etc", "bad:cri:abc", "a--b.slice:p:n", "x.slice:p:"} {
		if got, err := Resolve(bad); err == nil {
			t.Errorf("Resolve(%q) = %q, want an error", bad, got)
		}
	}
}

// TestKillAndRemove puts a process into a fresh cgroup of this machine's
// real hierarchy, as a killed CRIU leaves its restored tasks, and empties
// and removes it.
func TestKillAndRemove(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	rel := fmt.Sprintf("/cgroupfs-test-%d", os.Getpid())
	top := filepath.Join(Root, "pids")
	if _, err := os.Stat(filepath.Join(Root, "cgroup.controllers")); err == nil {
		top = Root // unified hierarchy
	}
	dir := filepath.Join(top, rel)
	if err := os.MkdirAll(filepath.Join(dir, "child"), 0o755); err != nil {
		t.Skipf("cannot create a cgroup here: %v", err)
	}
	t.Cleanup(func() { os.Remove(filepath.Join(dir, "child")); os.Remove(dir) })
	sleeper := exec.Command("sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer sleeper.Process.Kill()
	if err := os.WriteFile(filepath.Join(dir, "child", "cgroup.procs"), []byte(strconv.Itoa(sleeper.Process.Pid)), 0o644); err != nil {
		t.Fatalf("moving the sleeper into %s: %v", dir, err)
	}
	if pids := Pids(rel); len(pids) != 1 || pids[0] != sleeper.Process.Pid {
		t.Fatalf("Pids = %v, want [%d]", pids, sleeper.Process.Pid)
	}
	if err := KillAndRemove(rel, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	err := sleeper.Wait()
	if ws, ok := sleeper.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("sleeper ended with %v, want SIGKILL", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("cgroup %s still exists: %v", dir, err)
	}
	if err := KillAndRemove("/cgroupfs-test-absent", time.Second); err != nil {
		t.Fatalf("an absent cgroup: %v", err)
	}
}
