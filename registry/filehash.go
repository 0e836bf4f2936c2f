package registry

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// fileHashes checks the files of a pull against the checkpoint manifest
// while their chunks land, so the store accepts the copy (AcceptHashed)
// without reading it all again after the last chunk: the hashing overlaps
// the download rather than following it. A file the manifest records by
// blocks (storage.BlockSize) has each block hashed, on any core, as soon
// as the chunks covering it are in; a file recorded by one SHA-256 is
// hashed in order, each chunk once the ones before it are in. Either way
// the bytes are read back from the page cache, in goroutines of their own,
// not in the fetch that landed a chunk: a fetch that did the hashing would
// hold one of the pull's transfer slots for as long as that took.
type fileHashes struct {
	files map[string]fileCheck
	hashers
}

// hashers runs the hashing goroutines, at most one per CPU at a time: a
// resumed pull lands every chunk its journal lists at once.
type hashers struct {
	running sync.WaitGroup // the hashing under way
	slots   chan struct{}
}

// start runs hash in a goroutine once a slot is free.
func (h *hashers) start(hash func()) {
	h.running.Go(func() {
		h.slots <- struct{}{}
		defer func() { <-h.slots }()
		hash()
	})
}

// fileCheck is one file's hashing.
type fileCheck interface {
	// landed records chunk c as written in full and starts hashing what
	// it completes; it returns the file's hashing error so far, so that a
	// pull stops early on one.
	landed(c chunk, h *hashers) error
	// record is the file as found, once all its chunks were hashed.
	record() (storage.File, error)
	close()
}

func newFileHashes(dir string, files []storage.File) (*fileHashes, error) {
	fh := &fileHashes{files: make(map[string]fileCheck, len(files)), hashers: hashers{slots: make(chan struct{}, runtime.GOMAXPROCS(0))}}
	for _, f := range files {
		file, err := os.Open(filepath.Join(dir, filepath.FromSlash(f.Path)))
		if err != nil {
			fh.close()
			return nil, err
		}
		if f.Blocks != nil {
			fh.files[f.Path] = newBlockHash(file, f)
		} else {
			fh.files[f.Path] = &orderedHash{f: file, path: f.Path, h: sha256.New(), size: f.Size, pending: map[int64]int64{}}
		}
	}
	return fh, nil
}

func (fh *fileHashes) landed(c chunk) error {
	return fh.files[c.file].landed(c, &fh.hashers)
}

// records waits for the hashing under way and returns every file as found,
// by path; a file whose chunks have not all landed is an error.
func (fh *fileHashes) records() (map[string]storage.File, error) {
	fh.running.Wait()
	out := make(map[string]storage.File, len(fh.files))
	for path, o := range fh.files {
		rec, err := o.record()
		if err != nil {
			return nil, err
		}
		out[path] = rec
	}
	return out, nil
}

// close waits for the hashing under way and closes the files.
func (fh *fileHashes) close() {
	fh.running.Wait()
	for _, o := range fh.files {
		o.close()
	}
}

// orderedHash is one file's SHA-256 and the chunks written past its
// hashed prefix so far.
type orderedHash struct {
	mu      sync.Mutex
	f       *os.File
	path    string
	h       hash.Hash
	size    int64
	next    int64           // bytes hashed so far
	pending map[int64]int64 // offset to length of chunks written, not yet hashed
	busy    bool            // a goroutine is hashing; landed only adds to pending
	err     error
}

// landed starts a goroutine when c continues the hashed prefix and none
// hashes the file now.
func (o *orderedHash) landed(c chunk, h *hashers) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.pending[c.offset] = c.desc.Size
	if _, next := o.pending[o.next]; next && !o.busy && o.err == nil {
		o.busy = true
		h.start(o.hashPending)
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

func (o *orderedHash) record() (storage.File, error) {
	switch {
	case o.err != nil:
		return storage.File{}, fmt.Errorf("%s: hashing: %w", o.path, o.err)
	case o.next != o.size:
		return storage.File{}, fmt.Errorf("%s: hashed %d of %d bytes", o.path, o.next, o.size)
	}
	return storage.File{Size: o.size, SHA256: hex.EncodeToString(o.h.Sum(nil))}, nil
}

func (o *orderedHash) close() { o.f.Close() }

// blockHash is one file's block digests and the bytes landed in each block.
type blockHash struct {
	mu          sync.Mutex
	f           *os.File
	file        storage.File // the manifest's record
	landedBytes []int64      // bytes written per block
	sums        []string     // block digests, as each block is hashed
	err         error
}

func newBlockHash(f *os.File, rec storage.File) *blockHash {
	n := storage.BlockCount(rec.Size)
	return &blockHash{f: f, file: rec, landedBytes: make([]int64, n), sums: make([]string, n)}
}

// landed adds c's bytes to the blocks it covers and starts hashing each
// block it completes.
func (b *blockHash) landed(c chunk, h *hashers) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for off, end := c.offset, c.offset+c.desc.Size; off < end; {
		i := int(off / storage.BlockSize)
		start, stop := int64(i)*storage.BlockSize, min(int64(i+1)*storage.BlockSize, b.file.Size)
		n := min(end, stop) - off
		b.landedBytes[i] += n
		if b.landedBytes[i] == stop-start {
			h.start(func() { b.hashBlock(i) })
		}
		off += n
	}
	return b.err
}

// hashBlock hashes block i and compares it with the manifest at once: a
// block that differs fails the pull now, not after the last chunk.
func (b *blockHash) hashBlock(i int) {
	sum, err := storage.HashBlock(b.f, b.file.Size, i)
	if err == nil && sum != b.file.Blocks[i] {
		err = fmt.Errorf("%s: %w: block %d: sha256 expected %s, got %s (every chunk matched its digest: the pushed file differs from its manifest)",
			b.file.Path, storage.ErrCorrupt, i, b.file.Blocks[i], sum)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sums[i] = sum
	if b.err == nil {
		b.err = err
	}
}

func (b *blockHash) record() (storage.File, error) {
	if b.err != nil {
		return storage.File{}, b.err // names the file
	}
	for i, sum := range b.sums {
		if sum == "" {
			return storage.File{}, fmt.Errorf("%s: block %d: %d of its bytes landed", b.file.Path, i, b.landedBytes[i])
		}
	}
	return storage.File{Size: b.file.Size, Blocks: b.sums}, nil
}

func (b *blockHash) close() { b.f.Close() }
