// Package rootfs carries a container's writable layer across a checkpoint:
// captured from the overlay upper directory at checkpoint time, applied to
// the new container's root at restore time. The diff comes from a store that
// may be shared between nodes, so applying it treats it as hostile.
package rootfs

// Files of a rootfs diff, top-level in a checkpoint directory. The first two
// are the Kubernetes checkpoint archive layout that checkpointctl, CRI-O and
// Podman read.
const (
	// DiffFile is a tar of everything the container added or changed
	// in its writable layer, with names relative to the container's root.
	DiffFile = "rootfs-diff.tar"
	// DeletedFilesFile is a JSON array of the absolute paths (in the
	// container) that the container deleted from its image.
	DeletedFilesFile = "deleted.files"
	// OpaqueDirsFile is a JSON array of the absolute paths of directories
	// that the container replaced as a whole (overlay opaque directories:
	// deleted, then made again). Applying one empties the directory before
	// the tar puts the new content back. It is a file of its own, written
	// only when there is such a directory, because Podman applies
	// deleted.files after the tar and would delete the new content too;
	// tools that do not know the file merely show the image's old entries.
	OpaqueDirsFile = "opaque.dirs"
)
