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
// download rather than following it. The hashing runs in goroutines of
// its own, not in the fetch that landed a chunk: a fetch that caught a
// file's hash up would otherwise hold one of the pull's transfer slots
// for as long as that took.
type fileHashes struct {
	files   map[string]*orderedHash
	running sync.WaitGroup // the files being hashed now
}

// orderedHash is one file's hash and the chunks written past its end so far.
type orderedHash struct {
	mu      sync.Mutex
	f       *os.File
	h       hash.Hash
	size    int64
	next    int64           // bytes hashed so far
	pending map[int64]int64 // offset to length of chunks written, not yet hashed
	busy    bool            // a goroutine is hashing; landed only adds to pending
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

// landed records chunk c as written in full. If it continues the file's
// hashed prefix and no goroutine hashes that file now, it starts one,
// which hashes what follows the prefix without a gap. It returns the
// file's hashing error so far, so that a pull stops early on one.
func (fh *fileHashes) landed(c chunk) error {
	o := fh.files[c.file]
	o.mu.Lock()
	defer o.mu.Unlock()
	o.pending[c.offset] = c.desc.Size
	if _, next := o.pending[o.next]; next && !o.busy && o.err == nil {
		o.busy = true
		fh.running.Go(o.hashPending)
	}
	return o.err
}

// hashPending hashes the file's pending chunks that follow its hashed
// prefix, in order, until it reaches a gap.
func (o *orderedHash) hashPending() {
	o.mu.Lock()
	defer o.mu.Unlock()
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
}

// sums waits for the hashing under way and returns every file's hex
// SHA-256; a file whose chunks have not all landed is an error.
func (fh *fileHashes) sums() (map[string]string, error) {
	fh.running.Wait()
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

// close waits for the hashing under way and closes the files.
func (fh *fileHashes) close() {
	fh.running.Wait()
	for _, o := range fh.files {
		o.f.Close()
	}
}
