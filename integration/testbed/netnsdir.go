package testbed

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// NetnsDir is where containerd's CRI and iproute2 both keep named network
// namespaces, each a bind mount of an nsfs file.
const NetnsDir = "/run/netns"

// ShareNetnsDir makes NetnsDir a shared mount point of its own before the
// bed's containerd starts, as iproute2's `ip netns add` does the first time
// it finds it a plain directory.
//
// Why: on a fresh machine /run/netns is a plain directory. containerd's CRI
// bind-mounts a pod's namespace onto /run/netns/cni-...; the bed's Netns
// (ip netns add, for ctr containers) then bind-mounts /run/netns onto
// itself, and the new mount shows the same files without the nsfs mounts
// made before it, which now sit underneath. At StopPodSandbox containerd's
// unmount of /run/netns/cni-... finds no mount there and its unlink fails
// with EBUSY, leaving the namespace mounted (`make demo` exited 2 at
// teardown; the second run passed, since /run/netns was a mount point by
// then). Neither the shim nor CRIU is involved; the order of the bed's own
// setup was.
func ShareNetnsDir() error {
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err = unix.Mount(NetnsDir, NetnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err == nil {
			err = unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		}
	}
	if err != nil {
		return fmt.Errorf("making %s a shared mount point: %w", NetnsDir, err)
	}
	return nil
}

// UnmountEmptyNetnsDir puts a machine whose /run/netns is an empty mount
// point back into the state of a fresh one (a plain directory), so that a
// suite exercises ShareNetnsDir from there. It leaves a directory that
// holds any namespace alone.
func UnmountEmptyNetnsDir() error {
	entries, err := os.ReadDir(NetnsDir)
	if err != nil || len(entries) > 0 {
		return nil
	}
	if err := unix.Unmount(NetnsDir, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmounting %s: %w", NetnsDir, err)
	}
	return nil
}
