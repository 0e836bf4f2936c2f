// Package phases names the timed steps of a restore and of a checkpoint, in
// the order the shim runs them. The shim records each step's seconds under
// these names (status file, node events, manifests); gpusnap status, the
// metrics and the bench report read them back and list them in this order.
package phases

import (
	"maps"
	"slices"
)

// Planning a restore, at Create.
const (
	// Pull brings a checkpoint from the handler's registry into the store
	// when the store has none for the container (pull = on-demand).
	Pull = "pull"
	// Find picks the checkpoint for the container and checks it suits the
	// container and the node.
	Find = "find"
	// Cache swaps in the node-local copy from cache_dir, if it holds one.
	Cache = "cache"
	// Key checks the checkpoint's encryption key against the handler's.
	Key = "key"
	// Verify checks the signature and the files.
	Verify = "verify"
)

// Running a restore, at Start.
const (
	Decrypt     = "decrypt"
	RootfsDiff  = "rootfs_diff" // also a checkpoint phase: capturing the diff
	CRIURestore = "criu_restore"
	CUDARestore = "cuda_restore"
	CUDAUnlock  = "cuda_unlock"
)

// Taking a checkpoint.
const (
	Prepare        = "prepare"
	CUDACheckpoint = "cuda_checkpoint"
	CRIUDump       = "criu_dump"
	// CopyImages or Encrypt puts the files into the store.
	CopyImages = "copy_images"
	Encrypt    = "encrypt"
	// Publish hashes every file for the manifest, signs it, syncs and
	// renames the checkpoint into place. The manifest is written within
	// it, so only the checkpoint's event carries it, not the manifest.
	Publish = "publish"
)

// Push uploads a published checkpoint to the handler's registry, in the
// background (a transfer event's phase, not the checkpoint's).
const Push = "push"

// Lookup is Find, Cache and Key as one phase, as shims recorded it before
// those were timed apart. No shim records it now; it is kept so that older
// events, manifests and bench results still sort.
const Lookup = "lookup"

// Order is every phase in the order the shim runs it. A restore's phases and
// a checkpoint's each come out in their run order; RootfsDiff stands after
// CRIUDump (a checkpoint captures the diff after the dump) and before
// CRIURestore (a restore applies it before CRIU runs).
var Order = []string{
	Pull, Find, Cache, Key, Lookup, Verify, Decrypt,
	Prepare, CUDACheckpoint, CRIUDump,
	RootfsDiff,
	CopyImages, Encrypt, Publish, Push,
	CRIURestore, CUDARestore, CUDAUnlock,
}

// Sorted is the names of the phases in p, in Order, then any others by
// name.
func Sorted(p map[string]float64) []string {
	names := slices.Sorted(maps.Keys(p))
	slices.SortStableFunc(names, func(a, b string) int { return rank(a) - rank(b) })
	return names
}

func rank(name string) int {
	if i := slices.Index(Order, name); i >= 0 {
		return i
	}
	return len(Order)
}
