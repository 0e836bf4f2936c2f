package testbed

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// Census counts what the bed holds on the node, for soak tests: after any
// number of container lifecycles it must be what it was before them.
type Census struct {
	Mounts, ShimProcesses, Cgroups, NetworkNamespaces int
	ControlDirs, ContainerdFDs                        int
	DiskBytes                                         int64 // containerd's root and state (not its log)
}

// Count takes the census now.
func (b *Bed) Count() Census {
	c := Census{
		Mounts:        len(b.mounts()),
		ShimProcesses: len(b.processes()),
		Cgroups:       len(b.cgroups()),
		ControlDirs:   len(newEntries(controlRoot, b.controlBefore)),
		DiskBytes:     diskBytes(filepath.Join(b.Dir, "root")) + diskBytes(filepath.Join(b.Dir, "state")),
	}
	for ns := range netnsNames() {
		if b.ownsNetns(ns) {
			c.NetworkNamespaces++
		}
	}
	if fds, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(b.PID()), "fd")); err == nil {
		c.ContainerdFDs = len(fds)
	}
	return c
}

func (c Census) String() string {
	return fmt.Sprintf("mounts=%d shims=%d cgroups=%d netns=%d control-dirs=%d containerd-fds=%d disk=%d",
		c.Mounts, c.ShimProcesses, c.Cgroups, c.NetworkNamespaces, c.ControlDirs, c.ContainerdFDs, c.DiskBytes)
}

// diskBytes is the space the files under dir take (allocated blocks, so
// that sparse files count what they use).
func diskBytes(dir string) int64 {
	var total int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil && info.Mode().IsRegular() {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			} else {
				total += info.Size()
			}
		}
		return nil
	})
	return total
}
