package registry

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// fileHashes hashes the files of a pull while their chunks land. Chunks
// arrive in any order; each file's SHA-256 runs over its bytes in order,
// reading back (from the page cache) every chunk once the ones before it
// are in. The store then accepts the copy with these sums instead of
// reading it all again after the last chunk: the hashing overlaps the
// download rather than following it.
type fileHashes struct {
	files map[string]*orderedHash
}

// orderedHash is one file's hash and the chunks written past its end so far.
type orderedHash struct {
	mu      sync.Mutex
	f       *os.File
	h       hash.Hash
	size    int64
	next    int64           // bytes hashed so far
	pending map[int64]int64 // offset to length of chunks written, not yet hashed
	busy    bool            // a caller is hashing; others only add to pending
	err     error
}

func newFileHashes(dir string, files []storage.File) (*fileHashes, error) {
	fh := &fileHashes{files: make(map[string]*orderedHash, len(files))}
	for _, f := range files {
		file, err := os.Open(filepath.Join(dir, filepath.FromSlash(f.Path)))
		if err != nil {
			fh.close()
			return nil, err
		}
		fh.files[f.Path] = &orderedHash{f: file, h: sha256.New(), size: f.Size, pending: map[int64]int64{}}
	}
	return fh, nil
}

// landed records chunk c as written in full and hashes what now follows
// the file's hashed prefix without a gap. While another caller hashes the
// same file, it only records c: that caller picks it up.
func (fh *fileHashes) landed(c chunk) error {
	o := fh.files[c.file]
	o.mu.Lock()
	defer o.mu.Unlock()
	o.pending[c.offset] = c.desc.Size
	if o.busy {
		return o.err
	}
	o.busy = true
	for o.err == nil {
		n, ok := o.pending[o.next]
		if !ok {
			break
		}
		delete(o.pending, o.next)
		from := o.next
		o.mu.Unlock()
		_, err := io.Copy(o.h, io.NewSectionReader(o.f, from, n))
		o.mu.Lock()
		o.next, o.err = from+n, err
	}
	o.busy = false
	return o.err
}

// sums returns every file's hex SHA-256 once all chunks landed.
func (fh *fileHashes) sums() (map[string]string, error) {
	out := make(map[string]string, len(fh.files))
	for path, o := range fh.files {
		if o.err != nil {
			return nil, fmt.Errorf("%s: hashing: %w", path, o.err)
		}
		if o.next != o.size {
			return nil, fmt.Errorf("%s: hashed %d of %d bytes", path, o.next, o.size)
		}
		out[path] = hex.EncodeToString(o.h.Sum(nil))
	}
	return out, nil
}

func (fh *fileHashes) close() {
	for _, o := range fh.files {
		o.f.Close()
	}
}
