package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCRIUInheritedDevices: the project's CRIU patch 0003. A process tree
// whose child inherited its parent's open device file (as torch.compile's
// workers inherit the GPU driver's files from a parent that initialised
// CUDA) cannot be dumped by CRIU on its own ("Can't dump file ... chr");
// with --inherited-devices naming both tasks it dumps, and the restored
// tasks hold the same device, reopened by path, at the same fd.
func TestCRIUInheritedDevices(t *testing.T) {
	if _, err := os.Stat(standInDevice); err != nil {
		t.Skipf("no %s: %v", standInDevice, err)
	}
	parent, child := startDeviceTree(t)
	dir := t.TempDir()
	dump := func(extra ...string) ([]byte, error) {
		args := append([]string{"dump", "-t", strconv.Itoa(parent), "-D", dir, "-o", "dump.log", "-v4"}, extra...)
		return exec.Command("criu", args...).CombinedOutput()
	}
	if out, err := dump("--leave-running"); err == nil {
		t.Fatalf("CRIU dumped a device file without --inherited-devices: %s", out)
	}
	if log, _ := os.ReadFile(filepath.Join(dir, "dump.log")); !strings.Contains(string(log), "chr "+standInDeviceMajor+":") {
		t.Fatalf("dump failed for another reason than the device file:\n%s", tail(string(log), 10))
	}
	if out, err := dump("--inherited-devices", strconv.Itoa(parent)+","+strconv.Itoa(child)); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "dump.log"))
		t.Fatalf("dump with --inherited-devices: %v: %s\n%s", err, out, tail(string(log), 15))
	}
	waitGone(t, parent)
	waitGone(t, child)
	if out, err := exec.Command("criu", "restore", "-D", dir, "-o", "restore.log", "-d").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "restore.log"))
		t.Fatalf("restore: %v: %s\n%s", err, out, tail(string(log), 15))
	}
	t.Cleanup(func() { syscall.Kill(child, syscall.SIGKILL); syscall.Kill(parent, syscall.SIGKILL) })
	for _, pid := range []int{parent, child} {
		if target, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/3"); err != nil || target != standInDevice {
			t.Errorf("restored pid %d fd 3 = %q, %v; want %s", pid, target, err, standInDevice)
		}
	}
}

// startDeviceTree starts sleep under a new session with standInDevice open
// as fd 3, and a child sleep that inherited it; it returns both pids.
func startDeviceTree(t *testing.T) (parent, child int) {
	t.Helper()
	cmd := exec.Command("setsid", "sh", "-c", "exec 3<"+standInDevice+"; sleep 300 </dev/null & exec sleep 300")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	parent = cmd.Process.Pid
	go cmd.Wait() // reaps it once CRIU's dump has killed it
	t.Cleanup(func() { syscall.Kill(parent, syscall.SIGKILL) })
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		out, _ := exec.Command("pgrep", "-P", strconv.Itoa(parent)).Output()
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(parent) + "/comm")
		if f := strings.Fields(string(out)); len(f) == 1 && strings.TrimSpace(string(comm)) == "sleep" {
			child, _ = strconv.Atoi(f[0])
			t.Cleanup(func() { syscall.Kill(child, syscall.SIGKILL) })
			return parent, child
		}
	}
	t.Fatal("the device tree did not start")
	return 0, 0
}

// waitGone waits until pid (killed by CRIU's dump) has been reaped.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
			return
		}
	}
	t.Fatalf("pid %d still exists after the dump", pid)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
