package criu

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// TestNodeFingerprint runs against this machine's CRIU and checks the
// cgroup version against /proc/mounts (the development machine: amd64,
// cgroup v1, CRIU 4.2.1).
func TestNodeFingerprint(t *testing.T) {
	bin, err := exec.LookPath("criu")
	if err != nil {
		t.Skip("criu is not installed")
	}
	fp, err := NodeFingerprint(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fingerprint: %+v", fp)
	if fp.Arch != runtime.GOARCH || fp.Kernel == "" || fp.CRIUVersion == "" {
		t.Errorf("NodeFingerprint = %+v; want arch %s and non-empty kernel and CRIU version", fp, runtime.GOARCH)
	}
	if want := mountedCgroupVersion(t); fp.CgroupVersion != want {
		t.Errorf("cgroup version %d; /proc/mounts says %d", fp.CgroupVersion, want)
	}
}

// mountedCgroupVersion reads from /proc/mounts what statfs should find.
func mountedCgroupVersion(t *testing.T) int {
	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Skip(err)
	}
	for line := range strings.Lines(string(mounts)) {
		if f := strings.Fields(line); len(f) > 2 && f[1] == cgroupRoot && f[2] == "cgroup2" {
			return 2
		}
	}
	return 1
}

// TestRealCRIU vets the installed CRIU the way the shim does at start.
func TestRealCRIU(t *testing.T) {
	bin, err := Find("")
	if err != nil {
		t.Skip(err)
	}
	v, err := Version(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s is CRIU %s", bin, v)
	if os.Geteuid() != 0 {
		t.Skip("criu check needs root")
	}
	if err := Check(bin); err != nil {
		t.Error(err)
	}
}

func TestCgroupVersion(t *testing.T) {
	got, err := cgroupVersion(t.TempDir()) // an ordinary filesystem, never cgroup2
	if err != nil || got != 1 {
		t.Errorf("cgroupVersion(tempdir) = %d, %v; want 1", got, err)
	}
	if _, err := cgroupVersion("/does/not/exist"); err == nil {
		t.Error("cgroupVersion of a missing path succeeded")
	}
}
