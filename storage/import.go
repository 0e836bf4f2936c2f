package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// Import copies src, a checkpoint of another store, into s under the same
// name and byte for byte, manifest and signature included, so that its
// signature still verifies and a restore cannot tell the copy from the
// original. A handler's cache_dir, a node-local store beside a shared one,
// is filled this way (`gpusnap prefetch`), so that restores read local disk
// or tmpfs instead of the network.
//
// The copy is hashed against src's manifest before it is renamed into place:
// only an intact copy ever becomes visible, and a torn or tampered source
// fails the import. If s already holds the name with the same manifest, that
// copy is returned; with another manifest, the error wraps ErrExists.
func (s *Store) Import(ctx context.Context, src *Checkpoint, progress func(done, total int64)) (*Checkpoint, error) {
	if src.Manifest == nil || src.raw == nil {
		return nil, fmt.Errorf("import %s: no readable manifest: %v", src.Name, src.Err)
	}
	if _, err := s.Get(src.Name); err == nil {
		c, err := s.sameOrExists(src.Name, src.raw)
		if err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
		return c, nil
	}
	st, err := s.Stage()
	if err != nil {
		return nil, err
	}
	defer st.Abort()
	if err := copyCheckpoint(ctx, src, st.dir); err != nil {
		return nil, fmt.Errorf("import %s: %w", src.Name, err)
	}
	c, err := st.Accept(ctx, src.Name, progress)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	return c, nil
}

// copyCheckpoint copies the manifest, the signature if any, and every file
// the manifest lists from src into dir, with the store's modes (Accept
// flushes them).
func copyCheckpoint(ctx context.Context, src *Checkpoint, dir string) error {
	names := []string{manifestName}
	if _, err := os.Lstat(filepath.Join(src.Dir, signatureName)); err == nil {
		names = append(names, signatureName)
	}
	for _, f := range src.Manifest.Files {
		names = append(names, filepath.FromSlash(f.Path))
	}
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := copyFile(filepath.Join(src.Dir, name), filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// copyFile copies one regular file (never following a link) into a new
// file, creating its parent directories.
func copyFile(from, to string) error {
	if err := os.MkdirAll(filepath.Dir(to), dirMode); err != nil {
		return err
	}
	in, err := os.OpenFile(from, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	if fi, err := in.Stat(); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", from)
	}
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}

// SameManifest reports whether c and o carry byte-identical manifests, hence
// the same files (every file's SHA-256 is in it) and the same signature
// subject.
func (c *Checkpoint) SameManifest(o *Checkpoint) bool {
	return c.raw != nil && bytes.Equal(c.raw, o.raw)
}
