package criu

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// cgroupRoot is where the cgroup hierarchy is mounted on every supported
// distribution; its filesystem type tells v1 from v2.
const cgroupRoot = "/sys/fs/cgroup"

// NodeFingerprint describes this node as a checkpoint manifest records it,
// using the CRIU at criuBin. A checkpoint is only restored where its
// fingerprint is compatible (see storage.Fingerprint.Compatible).
func NodeFingerprint(criuBin string) (storage.Fingerprint, error) {
	v, err := Version(criuBin)
	if err != nil {
		return storage.Fingerprint{}, err
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return storage.Fingerprint{}, fmt.Errorf("uname: %w", err)
	}
	cg, err := cgroupVersion(cgroupRoot)
	if err != nil {
		return storage.Fingerprint{}, err
	}
	return storage.Fingerprint{
		Arch:          runtime.GOARCH,
		Kernel:        unix.ByteSliceToString(uts.Release[:]),
		CRIUVersion:   v,
		CgroupVersion: cg,
	}, nil
}

// cgroupVersion is 2 when root is a cgroup2 mount (the unified hierarchy)
// and 1 otherwise: a v1 or hybrid host mounts a tmpfs there, even if it also
// has an unused cgroup2 mount below it.
func cgroupVersion(root string) (int, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return 0, fmt.Errorf("cgroup version: statfs %s: %w", root, err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return 2, nil
	}
	return 1, nil
}
