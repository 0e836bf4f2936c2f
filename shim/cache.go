package shim

import (
	"context"

	"github.com/containerd/log"

	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// cachedCopy returns the copy of ck in the handler's node-local cache_dir
// (filled by `gpusnap prefetch`) when the cache holds one with the same
// manifest, and ck otherwise: the restore then reads local disk or tmpfs
// instead of a shared store. The copy is verified like any checkpoint
// (hashed once per node, then by its file stamps). A cache that cannot be
// opened or trusted is skipped with a warning: the store still serves.
func cachedCopy(ctx context.Context, ck *storage.Checkpoint, cacheDir string) *storage.Checkpoint {
	if cacheDir == "" {
		return ck
	}
	cache, err := storage.Open(cacheDir)
	if err != nil {
		log.G(ctx).WithError(err).Warn("snapshot: cache_dir not used")
		return ck
	}
	copy, err := cache.Get(ck.Name)
	if err != nil || !copy.SameManifest(ck) {
		return ck
	}
	return copy
}
