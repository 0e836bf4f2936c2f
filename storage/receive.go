package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrBusy means another live writer is receiving the same checkpoint into
// the store; the caller waits for its result (Get) rather than pull twice.
var ErrBusy = errors.New("another transfer of this checkpoint is in progress")

// receivePrefix names the staging directories of Receive: a fixed name per
// transfer, so an interrupted one is found again and resumed. It starts
// with stagingPrefix, so List never shows it and Prune removes it once no
// writer holds it and it is older than the staleness bound.
const receivePrefix = stagingPrefix + "recv-"

// Receive opens the staging directory for a copy of a checkpoint arriving
// from elsewhere (a registry pull), named after id (the source's digest, hex),
// creating it or reopening the one an interrupted transfer of the same id
// left, whose complete files the caller may keep. The writer writes the
// checkpoint's files, manifest.json and manifest.sig into Dir and calls
// Accept. While it lives, a second Receive of the same id fails with
// ErrBusy.
func (s *Store) Receive(id string) (*Staging, error) {
	if id == "" || strings.Trim(id, hexDigits) != "" {
		return nil, fmt.Errorf("receive %q: transfer id must be lowercase hex", id)
	}
	dir := filepath.Join(s.Root, receivePrefix+id)
	if err := os.Mkdir(dir, dirMode); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("receive into %s: %w", s.Root, err)
	}
	lock, err := lockDir(dir)
	switch {
	case errors.Is(err, syscall.EWOULDBLOCK):
		return nil, fmt.Errorf("receive into %s: %w", dir, ErrBusy)
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("receive into %s: removed by a concurrent prune, try again", dir)
	}
	return &Staging{store: s, dir: dir, lock: lock}, nil
}

// Suspend lets go of a received copy without removing it, so that the
// next Receive of the same id resumes it (a transfer cut short by a dead
// registry or a deadline). Prune removes it once it is older than its
// staleness bound.
func (st *Staging) Suspend() {
	st.dir = ""
	st.unlock()
}

// Accept publishes a copied checkpoint under its own name: manifest.json
// (and manifest.sig, if signed) must be in Dir byte for byte as the source
// holds them, so the signature still verifies. Every file is hashed
// against the manifest before the rename, so only an intact copy becomes
// visible; on any error the staging directory is removed. If the store
// already holds the name with the same manifest (a concurrent copy won),
// that checkpoint is returned; with another manifest, the error wraps
// ErrExists.
func (st *Staging) Accept(ctx context.Context, name string, progress func(done, total int64)) (*Checkpoint, error) {
	return st.accept(ctx, name, progress, nil)
}

// AcceptHashed is Accept for a receiver that hashed every file as it wrote
// it (a registry pull hashes each file while its chunks land, so the copy
// is not read a second time): known holds, by manifest path, each file's
// record as the receiver found it (size, and SHA-256 or block digests as
// the manifest records that file), which stands in for hashing the file
// again. Everything else is checked as Accept checks it, and a file known
// lacks is hashed.
func (st *Staging) AcceptHashed(ctx context.Context, name string, known map[string]File) (*Checkpoint, error) {
	return st.accept(ctx, name, nil, known)
}

func (st *Staging) accept(ctx context.Context, name string, progress func(done, total int64), known map[string]File) (_ *Checkpoint, err error) {
	if st.dir == "" {
		return nil, errors.New("accept: staging already published or aborted")
	}
	defer func() {
		if err != nil {
			st.Abort()
		}
	}()
	if _, _, ok := parseName(name); !ok {
		return nil, invalidName("accept", name)
	}
	m, raw, err := readManifest(filepath.Join(st.dir, manifestName))
	if err != nil {
		return nil, fmt.Errorf("accept %s: %w", name, err)
	}
	if m.Name != name {
		return nil, fmt.Errorf("accept %s: %w: the manifest names %q", name, ErrManifest, m.Name)
	}
	staged := &Checkpoint{Name: name, Dir: st.dir, Manifest: m, raw: raw}
	if err := staged.verify(ctx, progress, known); err != nil {
		return nil, fmt.Errorf("accept %s: the copy does not match its manifest: %w", name, err)
	}
	if err := syncTree(st.dir); err != nil {
		return nil, fmt.Errorf("accept %s: %w", name, err)
	}
	root := st.store.Root
	if err := os.Rename(st.dir, filepath.Join(root, name)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return st.store.sameOrExists(name, raw)
		}
		return nil, fmt.Errorf("accept %s: %w", name, err)
	}
	st.dir = ""
	st.unlock()
	if err := syncDir(root); err != nil {
		return nil, fmt.Errorf("accepted %s, but it may not survive a crash: %w", name, err)
	}
	return st.store.Get(name)
}

// sameOrExists returns the store's checkpoint name if its manifest is raw,
// else an error wrapping ErrExists.
func (s *Store) sameOrExists(name string, raw []byte) (*Checkpoint, error) {
	have, err := s.Get(name)
	if err != nil {
		return nil, err
	}
	if !have.SameManifest(&Checkpoint{raw: raw}) {
		return nil, fmt.Errorf("%s in %s: a different checkpoint of that name is there: %w", name, s.Root, ErrExists)
	}
	return have, nil
}

// syncTree flushes every file and directory under dir, deepest first, so a
// renamed copy survives a crash.
func syncTree(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		return errors.Join(f.Sync(), f.Close())
	})
	for i := len(dirs) - 1; err == nil && i >= 0; i-- {
		err = syncDir(dirs[i])
	}
	return err
}

// ManifestFile and SignatureFile are the names of a checkpoint's manifest
// and signature inside its directory; a copier moves both byte for byte.
const (
	ManifestFile  = manifestName
	SignatureFile = signatureName
)

// RawManifest is manifest.json exactly as Manifest was decoded from it: what
// a copy must carry for the signature to verify.
func (c *Checkpoint) RawManifest() []byte { return c.raw }

// DecodeManifest decodes and validates manifest.json bytes received from
// elsewhere, as the store does for its own: strict fields, this schema,
// clean relative file paths.
func DecodeManifest(raw []byte) (*Manifest, error) {
	m, err := decodeManifest(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	return m, nil
}
