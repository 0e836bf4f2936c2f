package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
)

// ErrUntrusted marks a store path that someone other than root could
// change. Restoring a checkpoint runs its memory image as the workload, so
// whoever can write a store can run code on every node that restores from
// it: like ssh with its keys, the store refuses such paths outright.
var ErrUntrusted = errors.New("untrusted store path")

// UntrustedPathError is a store path, or a checkpoint's file, that someone
// other than root could change, or that could not be checked. It wraps
// ErrUntrusted and, where stat failed, the stat error.
type UntrustedPathError struct {
	// Path is the path refused: absolute for a store root and the
	// directories above it, relative to the store for a checkpoint's file.
	Path string
	// UID and Mode (permission, setuid, setgid and sticky bits) are the
	// path's owner and mode; refused for UID != 0, else for Mode.
	UID  uint32
	Mode uint32
	// Err is why the path could not be checked; UID and Mode are then zero.
	Err error
}

func (e *UntrustedPathError) Error() string {
	switch {
	case e.Err != nil:
		return fmt.Sprintf("%v: %s: %v", ErrUntrusted, e.Path, e.Err)
	case e.UID != 0:
		return fmt.Sprintf("%v: %s is owned by uid %d, not root (an NFS export needs no_root_squash)", ErrUntrusted, e.Path, e.UID)
	}
	return fmt.Sprintf("%v: %s is writable by group or others (mode %04o): only root may change a checkpoint store", ErrUntrusted, e.Path, e.Mode)
}

func (e *UntrustedPathError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrUntrusted, e.Err}
	}
	return []error{ErrUntrusted}
}

// CheckRootOnly refuses a node-local directory that someone other than
// root could change, or any directory above it that is not root's: the rule
// Open applies to a store root. The shim decrypts checkpoints only under
// such a directory, and gpusnap doctor checks stores with it. A refusal is
// an *UntrustedPathError naming the first path refused, dir itself first.
func CheckRootOnly(dir string) error { return checkStoreRoot(dir) }

// checkStoreRoot accepts a store root owned by root and writable by no one
// else, below directories that are root-owned and either not writable by
// group and others or sticky (as /tmp: others may not rename or remove
// root's entries there).
func checkStoreRoot(root string) error {
	root, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	if err := checkPath(root, false); err != nil {
		return err
	}
	for dir := filepath.Dir(root); ; dir = filepath.Dir(dir) {
		if err := checkPath(dir, true); err != nil {
			return err
		}
		if dir == filepath.Dir(dir) {
			return nil
		}
	}
}

func checkPath(p string, stickyOK bool) error {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		return &UntrustedPathError{Path: p, Err: err}
	}
	return checkOwnerMode(p, &st, stickyOK)
}

// checkOwnerMode is the rule for one path: owned by root, not writable by
// group or others (unless stickyOK and it is a sticky directory).
func checkOwnerMode(p string, st *syscall.Stat_t, stickyOK bool) error {
	writable := st.Mode&0o022 != 0
	sticky := st.Mode&syscall.S_ISVTX != 0 && st.Mode&syscall.S_IFMT == syscall.S_IFDIR
	if st.Uid != 0 || writable && !(stickyOK && sticky) {
		return &UntrustedPathError{Path: p, UID: st.Uid, Mode: st.Mode & 0o7777}
	}
	return nil
}

// untrusted reports every entry of the checkpoint, its directory included,
// that is not root's alone. It only stats, so the cached verification runs it
// on every restore.
func (c *Checkpoint) untrusted() (problems []error) {
	filepath.WalkDir(c.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // reported by checkTree or checkFiles
		}
		var st syscall.Stat_t
		if syscall.Lstat(p, &st) != nil {
			return nil
		}
		rel, _ := filepath.Rel(filepath.Dir(c.Dir), p)
		if err := checkOwnerMode(filepath.ToSlash(rel), &st, false); err != nil {
			problems = append(problems, err)
		}
		return nil
	})
	return problems
}
