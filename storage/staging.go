package storage

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Staging is a checkpoint being written. Its directory stays hidden from
// List and Get until Publish renames it into place, so a writer that fails or
// is killed leaves only a staging directory, which Prune removes. A Staging
// is not safe for concurrent use.
type Staging struct {
	store *Store
	dir   string   // "" once published or aborted
	lock  *os.File // flock held while the writer lives; nil where flock is unsupported
	key   *SigningKey
}

// Dir is where the writer puts the checkpoint's files (CRIU images under
// checkpoint/, rootfs-diff.tar, ...), everything except manifest.json and
// manifest.sig.
func (st *Staging) Dir() string { return st.dir }

// Stage creates a new staging directory under the store's root.
func (s *Store) Stage() (*Staging, error) {
	var err error
	for range 3 { // a Prune with StaleStaging 0 can take a dir before it is locked
		var st *Staging
		if st, err = s.stageOnce(); err == nil {
			return st, nil
		}
	}
	return nil, err
}

func (s *Store) stageOnce() (*Staging, error) {
	dir, err := os.MkdirTemp(s.Root, stagingPrefix)
	if err != nil {
		return nil, fmt.Errorf("stage checkpoint in %s: %w", s.Root, err)
	}
	lock, err := lockDir(dir)
	if errors.Is(err, syscall.EWOULDBLOCK) || errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("stage checkpoint: %s was removed by a concurrent prune", dir)
	}
	// Other lock errors mean no flock here (NFSv4 refuses exclusive locks on
	// directories); Prune then goes by StaleStaging age alone.
	return &Staging{store: s, dir: dir, lock: lock}, nil
}

// lockDir takes a non-blocking exclusive flock on dir. A writer holds it on
// its staging dir for its whole life and the kernel drops it when the writer
// dies, which is how Prune tells a live writer from a killed one.
func lockDir(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err == nil { // dir may have been removed between Open and Flock
		a, err1 := f.Stat()
		b, err2 := os.Stat(dir)
		if err1 != nil || err2 != nil || !os.SameFile(a, b) {
			err = fs.ErrNotExist
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return f, nil
}

// Publish seals the staging directory into the next generation of m.Key. It
// fills m.Schema, m.Name, m.Files (size and digests of every file) and, if
// zero, m.Created; writes manifest.json; fsyncs files, manifest and
// directories; renames the directory into place; and fsyncs the root.
//
// Publish consumes the Staging: on any error the staging directory is
// removed. If another writer publishes the same generation first, the rename
// fails and Publish returns an error wrapping ErrExists; Latest(m.Key) then
// returns the winner. The loser does not retry under a later generation: both
// captured the same identity, so one copy is enough.
func (st *Staging) Publish(m *Manifest) (*Checkpoint, error) {
	return st.publishAt(m, 0)
}

// PublishSigned is Publish that also signs the manifest with key (see
// signature.go); manifest.sig is written and flushed before the rename, so
// the checkpoint appears signed or not at all. A nil key publishes unsigned.
func (st *Staging) PublishSigned(m *Manifest, key *SigningKey) (*Checkpoint, error) {
	st.key = key
	return st.publishAt(m, 0)
}

// publishAt is Publish with a fixed generation (0: the key's next one), so
// tests can make writers race for the same name.
func (st *Staging) publishAt(m *Manifest, gen int) (_ *Checkpoint, err error) {
	if st.dir == "" {
		return nil, errors.New("publish: staging already published or aborted")
	}
	defer func() {
		if err != nil {
			st.Abort()
		}
	}()
	root := st.store.Root
	if err := validKey(m.Key); err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	dirs, files, err := seal(st.dir)
	if err != nil {
		return nil, fmt.Errorf("publish: staging %s: %w", st.dir, err)
	}
	if gen == 0 {
		if gen, err = st.store.nextGeneration(m.Key); err != nil {
			return nil, fmt.Errorf("publish: %w", err)
		}
	}
	m.Schema, m.Name, m.Files = SchemaVersion, checkpointName(m.Key, gen), files
	if m.Created.IsZero() {
		m.Created = time.Now().UTC()
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("publish %s: %w", m.Name, err)
	}
	raw, err := writeManifest(st.dir, m)
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", m.Name, err)
	}
	if err := writeSignature(st.dir, st.key, raw); err != nil {
		return nil, fmt.Errorf("publish %s: %s: %w", m.Name, signatureName, err)
	}
	for _, d := range slices.Backward(dirs) {
		if err := syncDir(d); err != nil {
			return nil, fmt.Errorf("publish %s: %w", m.Name, err)
		}
	}
	target := filepath.Join(root, m.Name)
	if err := os.Rename(st.dir, target); err != nil {
		if errors.Is(err, fs.ErrExist) { // EEXIST or ENOTEMPTY: another writer won
			return nil, fmt.Errorf("publish %s in %s: %w", m.Name, root, ErrExists)
		}
		return nil, fmt.Errorf("publish %s: %w", m.Name, err)
	}
	st.dir = ""
	st.unlock()
	if err := syncDir(root); err != nil {
		return nil, fmt.Errorf("published %s, but it may not survive a crash: %w", m.Name, err)
	}
	return &Checkpoint{Name: m.Name, Dir: target, Generation: gen, Manifest: m, raw: raw}, nil
}

// nextGeneration is one past the highest generation under key's name
// prefix, counting broken checkpoints too, so a new one never collides.
func (s *Store) nextGeneration(key string) (int, error) {
	refs, err := s.scan()
	gen := 0
	for _, r := range refs {
		if r.prefix == key[:keyPrefixLen] {
			gen = max(gen, r.gen)
		}
	}
	return gen + 1, err
}

// seal prepares a staging tree for publishing: it refuses anything but
// regular files and directories (Verify would reject them later), applies the
// store's modes, flushes every file and records its size and digest.
func seal(root string) (dirs []string, files []File, err error) {
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			dirs = append(dirs, p)
			return os.Chmod(p, dirMode)
		case rel == manifestName || rel == signatureName:
			return nil // Publish writes its own
		case !d.Type().IsRegular():
			return fmt.Errorf("%s is a %s; a checkpoint holds only regular files", rel, describe(d.Type()))
		}
		f, err := digestFile(p, UsesBlocks, true, nil)
		if err != nil {
			return err
		}
		f.Path = rel
		files = append(files, f)
		return nil
	})
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return dirs, files, err
}

// writeManifest replaces any manifest.json the writer left (without
// following a symlink there), flushes the new one and returns its bytes,
// which the signature covers.
func writeManifest(dir string, m *Manifest) ([]byte, error) {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	data = append(data, '\n')
	p := filepath.Join(dir, manifestName)
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return nil, err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	return data, errors.Join(err, f.Close())
}

// syncDir flushes a directory's entries: a create or rename survives a
// crash only once its parent directory is on stable storage.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	err = f.Sync()
	// Some network and FUSE filesystems can't fsync a directory; their
	// server orders metadata itself, so that is not an error here.
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, errors.ErrUnsupported) {
		return nil
	}
	return err
}

// Abort discards the staging directory. After Publish it does nothing, so
// writers can simply defer it.
func (st *Staging) Abort() error {
	defer st.unlock()
	dir := st.dir
	if dir == "" {
		return nil
	}
	st.dir = ""
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("abort staging %s: %w", dir, err)
	}
	return nil
}

func (st *Staging) unlock() {
	if st.lock != nil {
		st.lock.Close()
		st.lock = nil
	}
}
