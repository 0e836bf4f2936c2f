// Package storage is the on-disk checkpoint store. Each checkpoint is one
// directory, written under a hidden staging name and published by a single
// rename(2), so a reader (a restoring shim on this node, or on another node of
// a shared mount) sees either a complete checkpoint or none at all.
package storage

import (
	"cmp"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Sentinel errors, so callers can choose between cold start and failure
// with errors.Is instead of parsing messages.
var (
	// ErrNotFound means no checkpoint has that name or key.
	ErrNotFound = errors.New("checkpoint not found")
	// ErrExists means another writer published the same name first.
	ErrExists = errors.New("checkpoint already exists")
	// ErrManifest means manifest.json is missing, malformed or of a schema
	// this build does not read.
	ErrManifest = errors.New("invalid manifest")
	// ErrCorrupt means the files on disk differ from the manifest.
	ErrCorrupt = errors.New("checkpoint corrupt")
)

const (
	manifestName  = "manifest.json"
	stagingPrefix = ".staging-"
	trashPrefix   = ".trash-"
	keyPrefixLen  = 16
	hexDigits     = "0123456789abcdef"
	dirMode       = 0o700 // checkpoints hold process memory: root only
	fileMode      = 0o600
)

// Store is a checkpoint store rooted at one directory, which may be local
// disk, an NVMe cache or a shared mount. It holds no state besides the path,
// so any number of processes may use the same root at once.
type Store struct{ Root string }

// Open returns the store at root, creating the directory if it is missing.
func Open(root string) (*Store, error) {
	if root == "" {
		return nil, errors.New("open store: empty root path")
	}
	if err := os.MkdirAll(root, dirMode); err != nil {
		return nil, fmt.Errorf("open store %s: %w", root, err)
	}
	if err := checkStoreRoot(root); err != nil {
		return nil, fmt.Errorf("open store %s: %w", root, err)
	}
	return &Store{Root: filepath.Clean(root)}, nil
}

// Checkpoint is one published checkpoint directory. When its manifest can't
// be read, Err is set instead of Manifest, so List still shows the directory
// to an operator who wants to inspect or remove it.
type Checkpoint struct {
	Name       string
	Dir        string
	Generation int
	Manifest   *Manifest
	Err        error
	// raw is manifest.json exactly as Manifest was decoded from it: the
	// bytes a signature must cover and the verify cache is keyed by.
	raw []byte
}

// ImagesDir is the directory of the checkpoint's CRIU images: checkpoint/,
// the name the Kubernetes checkpoint archive gives it (docs/checkpoint-restore.md).
func (c *Checkpoint) ImagesDir() string { return filepath.Join(c.Dir, "checkpoint") }

// ref is a checkpoint directory found by name, before its manifest is read.
type ref struct {
	name, prefix string
	gen          int
}

// checkpointName is the directory name of generation gen of key. The short
// key prefix keeps names readable; the full key lives in the manifest.
func checkpointName(key string, gen int) string {
	return fmt.Sprintf("%s-g%06d", key[:keyPrefixLen], gen)
}

// parseName accepts only names checkpointName produces. That keeps hidden
// staging and trash directories, stray directories such as lost+found, and
// paths such as "../x" out of List, Get and Remove.
func parseName(name string) (prefix string, gen int, ok bool) {
	prefix, digits, found := strings.Cut(name, "-g")
	if !found || len(prefix) != keyPrefixLen || strings.Trim(prefix, hexDigits) != "" ||
		digits == "" || strings.Trim(digits, "0123456789") != "" {
		return "", 0, false
	}
	gen, err := strconv.Atoi(digits)
	if err != nil || gen < 1 || checkpointName(prefix, gen) != name {
		return "", 0, false
	}
	return prefix, gen, true
}

func invalidName(op, name string) error {
	return fmt.Errorf("%s %q: invalid checkpoint name, want <16 hex digits>-g<6-digit generation>", op, name)
}

// validKey checks that key is what the identity code produces, a hex sha256:
// names are built from its prefix, so anything else could escape the root.
func validKey(key string) error {
	if len(key) != 64 || strings.Trim(key, hexDigits) != "" {
		return fmt.Errorf("key %q is not a lowercase hex sha256", key)
	}
	return nil
}

// scan lists checkpoint directories, sorted by key prefix, then generation.
func (s *Store) scan() ([]ref, error) {
	entries, err := os.ReadDir(s.Root)
	if err != nil {
		return nil, fmt.Errorf("read store %s: %w", s.Root, err)
	}
	var refs []ref
	for _, e := range entries {
		if prefix, gen, ok := parseName(e.Name()); ok && e.IsDir() {
			refs = append(refs, ref{e.Name(), prefix, gen})
		}
	}
	slices.SortFunc(refs, func(a, b ref) int {
		return cmp.Or(strings.Compare(a.prefix, b.prefix), cmp.Compare(a.gen, b.gen))
	})
	return refs, nil
}

// load reads a checkpoint's manifest, recording any failure in Err.
func (s *Store) load(r ref) *Checkpoint {
	c := &Checkpoint{Name: r.name, Dir: filepath.Join(s.Root, r.name), Generation: r.gen}
	if _, err := os.Stat(c.Dir); errors.Is(err, fs.ErrNotExist) {
		c.Err = fmt.Errorf("checkpoint %s in %s: %w", r.name, s.Root, ErrNotFound)
		return c
	}
	c.Manifest, c.raw, c.Err = readManifest(filepath.Join(c.Dir, manifestName))
	if c.Err == nil && c.Manifest.Name != r.name {
		c.Err = fmt.Errorf("%w: %s: names %q, but the directory is %q",
			ErrManifest, filepath.Join(c.Dir, manifestName), c.Manifest.Name, r.name)
		c.Manifest, c.raw = nil, nil
	}
	return c
}

// List returns every checkpoint in the store, including broken ones (with
// Err set), but no staging or trash directories.
func (s *Store) List() ([]*Checkpoint, error) {
	refs, err := s.scan()
	if err != nil {
		return nil, err
	}
	out := make([]*Checkpoint, 0, len(refs))
	for _, r := range refs {
		out = append(out, s.load(r))
	}
	return out, nil
}

// Get returns the checkpoint with the given name, for a pinned checkpoint
// or an operator's inspect; its manifest must be readable.
func (s *Store) Get(name string) (*Checkpoint, error) {
	prefix, gen, ok := parseName(name)
	if !ok {
		return nil, invalidName("get checkpoint", name)
	}
	c := s.load(ref{name, prefix, gen})
	if c.Err != nil {
		return nil, c.Err
	}
	return c, nil
}

// Latest returns the highest generation for key whose manifest is readable
// and names that key, skipping broken newer ones so that a damaged
// checkpoint falls back to the previous good one.
func (s *Store) Latest(key string) (*Checkpoint, error) {
	if err := validKey(key); err != nil {
		return nil, fmt.Errorf("latest checkpoint: %w", err)
	}
	refs, err := s.scan()
	if err != nil {
		return nil, err
	}
	for _, r := range slices.Backward(refs) {
		if r.prefix != key[:keyPrefixLen] {
			continue
		}
		if c := s.load(r); c.Err == nil && c.Manifest.Key == key {
			return c, nil
		}
	}
	return nil, fmt.Errorf("latest checkpoint for key %s in %s: %w", key, s.Root, ErrNotFound)
}

// Remove deletes a checkpoint. It first renames the directory to a hidden
// trash name in one atomic step, so nobody ever sees a half-deleted
// checkpoint; if this process dies during the delete, Prune finishes it.
func (s *Store) Remove(name string) error {
	if _, _, ok := parseName(name); !ok {
		return invalidName("remove checkpoint", name)
	}
	trash := filepath.Join(s.Root, trashPrefix+name+"-"+rand.Text())
	if err := os.Rename(filepath.Join(s.Root, name), trash); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove checkpoint %s in %s: %w", name, s.Root, ErrNotFound)
		}
		return fmt.Errorf("remove checkpoint %s: %w", name, err)
	}
	if err := syncDir(s.Root); err != nil {
		return fmt.Errorf("remove checkpoint %s: %w", name, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("remove checkpoint %s: delete %s: %w", name, trash, err)
	}
	return nil
}
