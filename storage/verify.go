package storage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Verify proves the directory matches its manifest before a restore trusts
// it: every listed file present with the recorded size and sha256, nothing
// unlisted besides the manifest and its signature (checked by
// VerifySignature and VerifyCached), and nothing but regular files and
// directories (a symlink or device could point a restore at host files).
// Every problem is reported, each naming the file; the error wraps
// ErrCorrupt. progress, if not nil, gets the bytes checked so far and the
// total. Cancelling ctx stops the hashing (a restore's deadline covers its
// first, full verification) and returns ctx's error, not ErrCorrupt.
func (c *Checkpoint) Verify(ctx context.Context, progress func(done, total int64)) error {
	return c.verify(ctx, progress, nil)
}

// verify is Verify with the digests of files already hashed (by manifest
// path), which are compared instead of read.
func (c *Checkpoint) verify(ctx context.Context, progress func(done, total int64), known map[string]File) error {
	if c.Manifest == nil {
		return fmt.Errorf("verify %s: %w", c.Name, cmp.Or(c.Err, ErrManifest))
	}
	problems := append(c.untrusted(), c.checkTree()...)
	files, err := c.checkFiles(ctx, progress, known)
	if err != nil {
		return fmt.Errorf("verify %s: %w", c.Name, err)
	}
	problems = append(problems, files...)
	if len(problems) > 0 {
		return fmt.Errorf("verify %s: %w: %w", c.Name, ErrCorrupt, errors.Join(problems...))
	}
	return nil
}

// Size is the checkpoint's payload in bytes as its manifest records it (0
// without a manifest); Prune's byte budget counts this.
func (c *Checkpoint) Size() int64 {
	var n int64
	if c.Manifest != nil {
		for _, f := range c.Manifest.Files {
			n += f.Size
		}
	}
	return n
}

// checkTree reports what is on disk but not in the manifest. Listed paths
// are left to checkFile, so no problem is reported twice.
func (c *Checkpoint) checkTree() (problems []error) {
	listed := make(map[string]bool, len(c.Manifest.Files))
	for _, f := range c.Manifest.Files {
		listed[f.Path] = true
	}
	err := filepath.WalkDir(c.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(c.Dir, p)
		rel = filepath.ToSlash(rel)
		switch {
		case err != nil || d.IsDir() || listed[rel]:
		case !d.Type().IsRegular():
			problems = append(problems, fmt.Errorf("%s: unexpected %s", rel, describe(d.Type())))
		case rel != manifestName && rel != signatureName:
			problems = append(problems, fmt.Errorf("%s: not in manifest", rel))
		}
		return err
	})
	if err != nil {
		problems = append(problems, err)
	}
	return problems
}

// checkFiles hashes every listed file that known lacks; err is set only when
// ctx ended.
func (c *Checkpoint) checkFiles(ctx context.Context, progress func(done, total int64), known map[string]File) (problems []error, err error) {
	var done int64
	total := c.Size()
	add := func(n int64) error {
		done += n
		if progress != nil {
			progress(done, total)
		}
		return ctx.Err()
	}
	for _, f := range c.Manifest.Files {
		if err := checkFile(filepath.Join(c.Dir, filepath.FromSlash(f.Path)), f, known[f.Path], add); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			problems = append(problems, fmt.Errorf("%s: %w", f.Path, err))
		}
	}
	return problems, nil
}

// checkFile compares one file with its manifest entry. It hashes only when
// the size matches and the file's digests are not known already (known
// is zero); skipped bytes still count as done for progress.
func checkFile(p string, f File, known File, add func(int64) error) error {
	fi, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		err = errors.New("missing")
	case err != nil:
	case !fi.Mode().IsRegular():
		err = fmt.Errorf("is a %s, expected a regular file", describe(fi.Mode()))
	case fi.Size() != f.Size:
		err = fmt.Errorf("size: expected %d, got %d", f.Size, fi.Size())
	case known.SHA256 != "" || known.Blocks != nil:
		err = sameContent(f, known)
	default:
		got, err := digestFile(p, func(int64) bool { return f.Blocks != nil }, false, add)
		if err != nil {
			return err
		}
		return sameContent(f, got)
	}
	if addErr := add(f.Size); addErr != nil {
		return addErr
	}
	return err
}

// countWriter turns written bytes into progress reports; an error from the
// report stops the copy.
type countWriter func(int64) error

func (c countWriter) Write(b []byte) (int, error) {
	if err := c(int64(len(b))); err != nil {
		return 0, err
	}
	return len(b), nil
}

// describe names a non-regular file type for error messages.
func describe(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeDevice != 0:
		return "device"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m.IsDir():
		return "directory"
	}
	return "special file"
}
