package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/log"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/gpusnap/containerd-shim-snapshot-v2/criu"
	"github.com/gpusnap/containerd-shim-snapshot-v2/internal/cgroupfs"
)

// removeCRIULeftovers undoes what a CRIU that died mid-restore (SIGKILL, a
// crash, the OOM killer) leaves behind and runc does not clean up, because
// runc's restore failed before it knew the container:
//   - the processes CRIU had already restored, still in the container's
//     cgroup: the cold start's `runc create` would refuse that non-empty
//     cgroup;
//   - CRIU's network lock (iptables rules dropping all traffic) in a network
//     namespace the container joins, as a pod's containers join the pod's:
//     the cold start would run cut off from its network;
//   - CRIU's cgroup yard, a tmpfs with the cgroup hierarchies mounted in it,
//     left in CRIU's working directory.
func removeCRIULeftovers(ctx context.Context, c *container) error {
	_, err := killCgroup(ctx, c)
	errs := []error{err}
	if netns := joinedNetns(c); netns != "" {
		errs = append(errs, criu.UnlockNetwork(netns))
	}
	for _, dir := range criuWorkDirs(c) {
		errs = append(errs, unmountCgroupYards(dir))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing what the failed restore left: %w", err)
	}
	return nil
}

// killCgroup kills every process in the container's cgroup, waits until
// they are gone and removes the cgroup; it returns the processes it found.
// It asks the cgroup rather than runc: after a failed restore the runc shim
// still reports the task as created, whatever CRIU restored and resumed.
func killCgroup(ctx context.Context, c *container) ([]int, error) {
	if c.spec == nil || c.spec.Linux == nil || c.spec.Linux.CgroupsPath == "" {
		return nil, nil
	}
	cg, err := cgroupfs.Open(c.spec.Linux.CgroupsPath)
	if err != nil {
		return nil, err
	}
	pids := cg.Pids()
	if len(pids) > 0 {
		log.G(ctx).WithField("id", c.id).WithField("pids", pids).Warn("snapshot: killing processes a failed restore left in the container's cgroup")
	}
	return pids, cg.KillAndRemove(10 * time.Second)
}

// joinedNetns is the path of the existing network namespace the container
// joins, if any; a namespace of its own died with its processes.
func joinedNetns(c *container) string {
	if c.spec == nil || c.spec.Linux == nil {
		return ""
	}
	for _, ns := range c.spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path
		}
	}
	return ""
}

// criuWorkDirs are the directories a restoring CRIU may work in: the task's
// work directory (the bundle's "work" link, where the runc shim's runc and
// CRIU run), the bundle and the shim's own working directory.
func criuWorkDirs(c *container) []string {
	dirs := []string{c.bundle}
	if work, err := filepath.EvalSymlinks(filepath.Join(c.bundle, criuWorkLink)); err == nil {
		dirs = append(dirs, work)
	}
	if wd, err := os.Getwd(); err == nil && wd != c.bundle {
		dirs = append(dirs, wd)
	}
	return dirs
}

// unmountCgroupYards detaches every cgroup yard CRIU mounted in dir
// (".criu.cgyard.*", with the hierarchies inside it) and removes its
// directory.
func unmountCgroupYards(dir string) error {
	prefix := filepath.Join(dir, ".criu.cgyard.")
	mounts, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		return !strings.HasPrefix(m.Mountpoint, prefix), false
	})
	if err != nil {
		return err
	}
	// Deepest first: the hierarchies before the yard that holds them.
	var errs []error
	yards := map[string]bool{}
	for i := len(mounts) - 1; i >= 0; i-- {
		p := mounts[i].Mountpoint
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", p, err))
		}
		yard, _, _ := strings.Cut(strings.TrimPrefix(p, prefix), "/")
		yards[prefix+yard] = true
	}
	for y := range yards {
		os.RemoveAll(y)
	}
	return errors.Join(errs...)
}
