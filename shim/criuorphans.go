package shim

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/log"

	"github.com/gpusnap/containerd-shim-snapshot-v2/internal/cgroupfs"
)

// criuRestoreTitle starts the command line CRIU gives the processes it
// forks while restoring (its helpers and the tasks not yet restored).
const criuRestoreTitle = "criu: restore"

// criuOrphanPoll is how often a restore looks for CRIU's orphans.
const criuOrphanPoll = 200 * time.Millisecond

// watchCRIUOrphans guards a restore against a CRIU that dies half-way
// (SIGKILL, a crash, the OOM killer). The processes CRIU had forked keep
// CRIU's end of runc's socket open, so runc would wait for an answer that
// never comes until restore_timeout kills it, minutes later. CRIU's death
// shows as its helpers, in the container's cgroup, being reparented to
// this shim, the subreaper: then every process of that cgroup still
// running CRIU's code is killed, runc reads the socket close and fails,
// and the fallback runs at once. Processes CRIU restored in full carry
// their own command lines and are never touched. stop ends the watch and
// returns what it killed (nothing unless CRIU died), so the restore's error
// can say why runc failed.
func watchCRIUOrphans(ctx context.Context, c *container) (stop func() (killed []int)) {
	done, finished := make(chan struct{}), make(chan struct{})
	var killed []int
	go func() {
		defer close(finished)
		tick := time.NewTicker(criuOrphanPoll)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			orphans := criuOrphans("/proc", os.Getpid())
			if len(orphans) > 0 {
				orphans = ownOrphans(c, orphans)
			}
			if len(orphans) == 0 {
				continue
			}
			killed = killCRIUProcesses(c, orphans)
			log.G(ctx).WithField("id", c.id).WithField("pids", killed).
				Warn("snapshot: CRIU died mid-restore; killing the processes it left so that runc returns")
			return
		}
	}()
	return func() []int {
		close(done)
		<-finished
		return killed
	}
}

// criuOrphans lists the children of process pid (under procRoot, /proc)
// whose command line says they are CRIU restore processes. Children are
// read from the process's own task/*/children files (a reparented orphan
// is the child of one of the subreaper's threads), which CRIU itself needs
// the kernel to provide, so each poll reads a few small files, not every
// process on the node.
func criuOrphans(procRoot string, pid int) []int {
	files, _ := filepath.Glob(filepath.Join(procRoot, strconv.Itoa(pid), "task", "*", "children"))
	var out []int
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, field := range strings.Fields(string(data)) {
			child, err := strconv.Atoi(field)
			if err == nil && isCRIURestore(filepath.Join(procRoot, field)) && !slices.Contains(out, child) {
				out = append(out, child)
			}
		}
	}
	return out
}

// isCRIURestore says whether a process runs CRIU's restore code.
func isCRIURestore(procDir string) bool {
	cmdline, err := os.ReadFile(filepath.Join(procDir, "cmdline"))
	return err == nil && bytes.HasPrefix(cmdline, []byte(criuRestoreTitle))
}

// ownOrphans keeps the orphans in the container's cgroup, where CRIU puts
// its restore processes: another container of the pod restoring beside
// this one, whose CRIU died, is no reason to stop this restore. Without a
// cgroup path every orphan counts.
func ownOrphans(c *container, orphans []int) []int {
	pids, ok := cgroupPids(c)
	if !ok {
		return orphans
	}
	return slices.DeleteFunc(orphans, func(pid int) bool { return !slices.Contains(pids, pid) })
}

// cgroupPids lists the processes in the container's cgroup; ok is false
// when the container has no cgroup the shim can read.
func cgroupPids(c *container) (pids []int, ok bool) {
	if c.spec == nil || c.spec.Linux == nil || c.spec.Linux.CgroupsPath == "" {
		return nil, false
	}
	cg, err := cgroupfs.Open(c.spec.Linux.CgroupsPath)
	if err != nil {
		return nil, false
	}
	return cg.Pids(), true
}

// killCRIUProcesses kills the orphans and every CRIU restore process in the
// container's cgroup (the task CRIU was restoring is runc's child, not an
// orphan), and returns what it killed.
func killCRIUProcesses(c *container, orphans []int) []int {
	victims := append([]int(nil), orphans...)
	pids, _ := cgroupPids(c)
	for _, pid := range pids {
		if !slices.Contains(victims, pid) && isCRIURestore(filepath.Join("/proc", strconv.Itoa(pid))) {
			victims = append(victims, pid)
		}
	}
	for _, pid := range victims {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	return victims
}
