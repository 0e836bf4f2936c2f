// Package cgroupfs empties and removes a container's cgroup, for the one case
// runc cannot: processes that a CRIU killed mid-restore had already restored
// into the container's cgroup. runc has no state for them (its restore
// failed), yet its next create in that cgroup fails with "container's cgroup
// is not empty".
//
// Finding the cgroup, listing its processes, thawing and removing it are
// runc's own cgroup code (github.com/opencontainers/cgroups), so this acts
// on exactly the directories runc made: a systemd "slice:prefix:name" is
// expanded as runc's systemd driver does, a relative path lies under the
// shim's own cgroup (the runc it starts inherits it), and every v1
// hierarchy, the hybrid unified one, or the v2 tree is covered. What stays
// here is what that library has no call for: sending the processes SIGKILL
// (runc does that in libcontainer, unexported) and waiting until the cgroup
// is empty before removing it.
package cgroupfs

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/cgroups"
	cgroupsfs "github.com/opencontainers/cgroups/fs"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/cgroups/systemd"
)

// Cgroup is a container's cgroup, as runc placed it.
type Cgroup struct {
	path string // the spec's cgroupsPath, for messages
	m    cgroups.Manager
}

// Open finds the cgroup that runc made for an OCI spec's linux.cgroupsPath.
// A "slice:prefix:name" path is a systemd unit when systemd runs this node
// (runc's systemd driver would have refused it otherwise; without systemd,
// runc takes it as a plain path, and so does Open).
func Open(cgroupsPath string) (*Cgroup, error) {
	if cgroupsPath == "" {
		return nil, errors.New("no cgroupsPath: not a usable cgroup path")
	}
	cg := &cgroups.Cgroup{Resources: &cgroups.Resources{}}
	if parts := strings.Split(cgroupsPath, ":"); len(parts) == 3 && systemd.IsRunningSystemd() {
		cg.Systemd = true
		cg.Parent, cg.ScopePrefix, cg.Name = parts[0], parts[1], parts[2]
	} else {
		cg.Path = cgroupsPath
	}
	m, err := manager.New(cg)
	if err != nil {
		return nil, fmt.Errorf("cgroupsPath %q: %w", cgroupsPath, err)
	}
	return &Cgroup{path: cgroupsPath, m: m}, nil
}

// Paths are the cgroup's directories, by controller ("" for the unified
// hierarchy).
func (c *Cgroup) Paths() map[string]string { return c.m.GetPaths() }

// Pids lists the processes in the cgroup and its descendants, in every
// hierarchy (a process CRIU restored into only some of them counts too).
func (c *Cgroup) Pids() []int {
	var pids []int
	for _, dir := range c.m.GetPaths() {
		found, _ := cgroups.GetAllPids(dir) // an absent cgroup holds none
		for _, pid := range found {
			if !slices.Contains(pids, pid) {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// KillAndRemove kills every process in the cgroup with SIGKILL, waits until
// the cgroup is empty, and removes its directories in every hierarchy. A
// cgroup that does not exist is no error.
func (c *Cgroup) KillAndRemove(within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		pids := c.Pids()
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s still holds processes %v after %s", c.path, pids, within)
		}
		c.thaw() // a process frozen by the v1 freezer cannot die
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := c.m.Destroy(); err != nil {
		return fmt.Errorf("removing cgroup %s: %w", c.path, err)
	}
	return nil
}

// thaw lifts a freeze of the cgroup and, under the v1 freezer, of each
// descendant frozen on its own. (A v2 freeze needs no thaw: a fatal signal
// kills a frozen process.)
func (c *Cgroup) thaw() {
	c.m.Freeze(cgroups.Thawed)
	top := c.m.Path("freezer")
	if top == "" {
		return
	}
	thawed := &cgroups.Resources{Freezer: cgroups.Thawed}
	filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && p != top {
			(&cgroupsfs.FreezerGroup{}).Set(p, thawed)
		}
		return nil
	})
}
