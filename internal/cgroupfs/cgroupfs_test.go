package cgroupfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/systemd"
)

// TestOpen checks where Open looks for each form of cgroupsPath: under
// every hierarchy of this machine, as runc places it.
func TestOpen(t *testing.T) {
	if _, err := Open(""); err == nil {
		t.Error(`Open("") succeeded`)
	}
	for _, tc := range []struct {
		in, want string
		relative bool
	}{
		{"/snapshot-test/ctr1", "/snapshot-test/ctr1", false},
		{"/a/../../etc", "/etc", false}, // cleaned: never outside the hierarchy
		// Under the shim's own cgroup in each hierarchy, as runc does.
		{"k8s.io/abc", "/k8s.io/abc", true},
	} {
		c, err := Open(tc.in)
		if err != nil {
			t.Errorf("Open(%q): %v", tc.in, err)
			continue
		}
		paths := c.Paths()
		if len(paths) == 0 {
			t.Errorf("Open(%q): no paths", tc.in)
		}
		for ctrl, p := range paths {
			want := tc.want
			if tc.relative {
				own, err := cgroups.GetOwnCgroupPath(ctrl)
				if err != nil {
					t.Fatalf("own cgroup of %s: %v", ctrl, err)
				}
				want = own + tc.want
			}
			if !strings.HasSuffix(p, want) || !strings.HasPrefix(p, "/sys/fs/cgroup/") {
				t.Errorf("Open(%q): %s at %s, want .../%s", tc.in, ctrl, p, want)
			}
		}
	}
	if !systemd.IsRunningSystemd() {
		// runc without its systemd driver takes the form as a plain path.
		c, err := Open("system.slice:cri-containerd:abc")
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range c.Paths() {
			if !strings.HasSuffix(p, "/system.slice:cri-containerd:abc") {
				t.Errorf("systemd form without systemd at %s", p)
			}
		}
	}
}

// TestKillAndRemove puts a process into a fresh cgroup of this machine's
// real hierarchies (a child of the container's, as a killed CRIU can leave
// its restored tasks), and empties and removes it.
func TestKillAndRemove(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	// Unique on this machine: the test's temporary directory's name.
	rel := "/cgroupfs-" + filepath.Base(filepath.Dir(t.TempDir()))
	c, err := Open(rel)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.m.Apply(-1); err != nil {
		t.Skipf("cannot create a cgroup here: %v", err)
	}
	child, err := Open(rel + "/child")
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{}
	for ctrl, p := range c.Paths() {
		paths[ctrl] = p
	}
	t.Cleanup(func() {
		for _, p := range paths {
			os.Remove(filepath.Join(p, "child"))
			os.Remove(p)
		}
	})
	sleeper := exec.Command("sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer sleeper.Process.Kill()
	if err := child.m.Apply(sleeper.Process.Pid); err != nil {
		t.Fatalf("moving the sleeper into %s/child: %v", rel, err)
	}
	// Frozen, as a paused container is: it must die all the same.
	if err := c.m.Freeze(cgroups.Frozen); err != nil {
		t.Logf("no freezer here: %v", err)
	}
	if pids := c.Pids(); len(pids) != 1 || pids[0] != sleeper.Process.Pid {
		t.Fatalf("Pids = %v, want [%d]", pids, sleeper.Process.Pid)
	}
	if err := c.KillAndRemove(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	err = sleeper.Wait()
	if ws, ok := sleeper.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("sleeper ended with %v, want SIGKILL", err)
	}
	for ctrl, p := range paths {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("cgroup %s (%s) still exists: %v", p, ctrl, err)
		}
	}
	absent, err := Open("/cgroupfs-test-absent")
	if err != nil {
		t.Fatal(err)
	}
	if err := absent.KillAndRemove(time.Second); err != nil {
		t.Fatalf("an absent cgroup: %v", err)
	}
}
