package testbed

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/internal/cgroupfs"
)

// Stop removes every pod, task and container, stops containerd, and returns
// what survived that orderly teardown (each entry says what and where) before
// force-cleaning it so the next run starts clean.
func (b *Bed) Stop() ([]string, error) {
	var errs []string
	if out, err := b.Crictl("rmp", "--all", "--force"); err != nil {
		errs = append(errs, fmt.Sprintf("crictl rmp: %v: %s", err, out))
	}
	for _, ns := range b.namespaces() {
		if err := b.removeAll(ns); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if err := b.stopDaemon(); err != nil {
		errs = append(errs, err.Error())
	}
	left := b.Leftovers()
	b.forceClean()
	var err error
	if len(errs) > 0 {
		err = fmt.Errorf("teardown: %s", strings.Join(errs, "; "))
	}
	return left, err
}

func (b *Bed) namespaces() []string {
	out, err := b.Ctr("namespaces", "list", "-q")
	if err != nil {
		return []string{b.Namespace, "k8s.io"}
	}
	return strings.Fields(out)
}

// removeAll kills and deletes every task and container of a namespace.
func (b *Bed) removeAll(ns string) error {
	out, _ := b.CtrNS(ns, "tasks", "list", "-q")
	for _, id := range strings.Fields(out) {
		b.CtrNS(ns, "tasks", "kill", "--all", "--signal", "SIGKILL", id)
		b.waitStopped(ns, id)
		b.CtrNS(ns, "tasks", "delete", "--force", id)
	}
	out, _ = b.CtrNS(ns, "containers", "list", "-q")
	for _, id := range strings.Fields(out) {
		if o, err := b.CtrNS(ns, "containers", "delete", id); err != nil {
			return fmt.Errorf("deleting container %s/%s: %v: %s", ns, id, err, o)
		}
	}
	return nil
}

func (b *Bed) waitStopped(ns, id string) {
	for i := 0; i < 50; i++ {
		out, _ := b.CtrNS(ns, "tasks", "list")
		if !strings.Contains(out, id+" ") || strings.Contains(out, "STOPPED") {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Leftovers lists what the bed's containers left on the node: mounts under
// the bed, new network namespaces, shim processes, container cgroups, shim
// control directories, runc state directories and shim sockets.
func (b *Bed) Leftovers() []string {
	var left []string
	for _, m := range b.mounts() {
		left = append(left, "mount "+m)
	}
	for ns := range netnsNames() {
		if b.ownsNetns(ns) {
			left = append(left, "network namespace /run/netns/"+ns)
		}
	}
	for _, p := range b.processes() {
		left = append(left, "process "+p)
	}
	for _, cg := range b.cgroups() {
		left = append(left, "cgroup "+cg)
	}
	for _, d := range newEntries(controlRoot, b.controlBefore) {
		left = append(left, "control directory "+d)
	}
	for _, d := range b.runcStates() {
		left = append(left, "runc state "+d)
	}
	sockets, _ := filepath.Glob(filepath.Join(b.Dir, "state", "*", "*", "*", "*.sock"))
	for _, s := range sockets {
		left = append(left, "socket "+s)
	}
	return left
}

// mounts lists mount points inside the bed's directory.
func (b *Bed) mounts() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], b.Dir+"/") {
			out = append(out, fields[4])
		}
	}
	return out
}

// processes lists live processes started for this bed: containerd shims
// carry the bed's socket in their command line.
func (b *Bed) processes() []string {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []string
	for _, d := range dirs {
		cmdline, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), b.Socket) {
			continue
		}
		out = append(out, filepath.Base(d)+" "+strings.ReplaceAll(strings.TrimSpace(string(cmdline)), "\x00", " "))
	}
	return out
}

// runcRoot is where runc keeps its containers' state, one directory per
// containerd namespace (the runc shim's default root).
const runcRoot = "/run/containerd/runc"

// runcStates lists the state directories runc still has for containers of
// the bed's namespace. A runc killed mid-restore leaves its container's
// directory, with the rootfs still mounted on its criu-root, and runc then
// refuses a new container of that name on this machine ("container with
// given ID already exists"). CRI's k8s.io is left out: beds share it.
func (b *Bed) runcStates() []string {
	dirs, _ := filepath.Glob(filepath.Join(runcRoot, b.Namespace, "*"))
	return dirs
}

// removeRuncState unmounts whatever is mounted in a runc state directory
// and removes it.
func removeRuncState(dir string) {
	mounts, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, m := range mounts {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	os.RemoveAll(dir)
}

// cgroups lists container cgroups left under the bed's namespaces, in every
// mounted hierarchy (v1 controllers or the unified one).
func (b *Bed) cgroups() []string {
	var out []string
	for _, ns := range []string{b.Namespace, "k8s.io"} {
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", ns, "*"))
		more, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", ns, "*"))
		for _, d := range append(dirs, more...) {
			if st, err := os.Stat(d); err == nil && st.IsDir() {
				out = append(out, d)
			}
		}
	}
	return out
}

// forceClean removes whatever the orderly teardown left, so that one failed
// run cannot poison the next.
func (b *Bed) forceClean() {
	for _, p := range b.processes() {
		var pid int
		fmt.Sscanf(p, "%d", &pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	time.Sleep(200 * time.Millisecond)
	mounts := b.mounts()
	for i := len(mounts) - 1; i >= 0; i-- {
		syscall.Unmount(mounts[i], syscall.MNT_DETACH)
	}
	for ns := range netnsNames() {
		if b.ownsNetns(ns) {
			syscall.Unmount(filepath.Join("/run/netns", ns), syscall.MNT_DETACH)
			os.Remove(filepath.Join("/run/netns", ns))
		}
	}
	b.killOwnCgroups()
	for _, ns := range []string{b.Namespace, "k8s.io"} {
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", ns))
		for _, d := range dirs {
			subs, _ := filepath.Glob(filepath.Join(d, "*"))
			for _, s := range subs {
				if st, err := os.Stat(s); err == nil && st.IsDir() {
					os.Remove(s)
				}
			}
			os.Remove(d)
		}
	}
	for _, d := range newEntries(controlRoot, b.controlBefore) {
		os.RemoveAll(d)
	}
	for _, d := range b.runcStates() {
		removeRuncState(d)
	}
	exec.Command("ip", "link", "delete", b.Bridge).Run()
	os.RemoveAll(b.Dir)
}

// killOwnCgroups kills what is left in the container cgroups of the bed's
// own namespace and removes them, through the shim's cgroup code: the
// helpers of a CRIU killed mid-restore, for one, are no shim's and carry
// no bed socket. CRI's k8s.io is left alone: beds share it.
func (b *Bed) killOwnCgroups() {
	done := map[string]bool{} // each container shows once per hierarchy
	for _, cg := range b.cgroups() {
		name := filepath.Base(cg)
		if filepath.Base(filepath.Dir(cg)) != b.Namespace || done[name] {
			continue
		}
		done[name] = true
		if c, err := cgroupfs.Open("/" + b.Namespace + "/" + name); err == nil {
			c.KillAndRemove(5 * time.Second)
		}
	}
}

// stopDaemon stops containerd with SIGTERM, then SIGKILL after 20 s.
func (b *Bed) stopDaemon() error {
	b.mu.Lock()
	daemon, exited := b.daemon, b.exited
	b.mu.Unlock()
	daemon.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return nil
	case <-time.After(20 * time.Second):
		daemon.Process.Kill()
		<-exited
		return fmt.Errorf("containerd did not stop on SIGTERM within 20s")
	}
}

// controlRoot is where the shim keeps per-container control directories.
const controlRoot = "/run/containerd-shim-snapshot"

// newEntries lists entries of dir that were not there before.
func newEntries(dir string, before map[string]bool) []string {
	var out []string
	for name := range DirNames(dir) {
		if !before[name] {
			out = append(out, filepath.Join(dir, name))
		}
	}
	return out
}

// DirNames is the set of entry names of dir (empty if it cannot be read),
// for before/after comparisons of directories a test run may litter.
func DirNames(dir string) map[string]bool {
	names := map[string]bool{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		names[e.Name()] = true
	}
	return names
}

func netnsNames() map[string]bool {
	names := map[string]bool{}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		names[e.Name()] = true
	}
	return names
}

// ReportLeftovers prints, prefixed with who stopped what, an error from a
// teardown and what it found left behind, and returns the exit code they
// call for: 1 if either, else code.
func ReportLeftovers(prefix string, left []string, err error, code int) int {
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", prefix, err)
		code = 1
	}
	if len(left) > 0 {
		fmt.Fprintf(os.Stderr, "%s left behind:\n  %s\n", prefix, strings.Join(left, "\n  "))
		code = 1
	}
	return code
}

// Status is the shim's snapshot-status of a container (its last restore or
// checkpoint decision), read from the host side of its control directory.
func Status(id string) (map[string]any, error) {
	data, err := os.ReadFile(filepath.Join(controlRoot, id, "snapshot-status"))
	if err != nil {
		return nil, err
	}
	var st map[string]any
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("snapshot-status of %s: %w", id, err)
	}
	return st, nil
}
