package storage

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sync/errgroup"
)

// BlockSize is the piece of a large file that the manifest hashes on its
// own: a file of more than BlockSize bytes is recorded by the SHA-256 of
// each BlockSize piece in order (File.Blocks; the last piece may be
// shorter), a smaller one by the SHA-256 of the whole file (File.SHA256).
// It is part of the format. Why: SHA-256 runs on one core at about
// 1.1 GB/s on the GPU machines (H100 and H200, 2026-12-06), so a single
// digest of a 40 GB page image would take about 40 s at checkpoint time,
// and it capped a registry pull of any size at that rate; blocks hash on
// all cores, and a pull checks each block as soon as its bytes are in.
const BlockSize = 64 << 20

// hashWorkers bounds the goroutines that hash one file's blocks.
var hashWorkers = min(runtime.NumCPU(), 16)

// UsesBlocks says whether the manifest records a file of size bytes by its
// blocks rather than by one digest.
func UsesBlocks(size int64) bool { return size > BlockSize }

// BlockCount is the number of blocks of a file of size bytes.
func BlockCount(size int64) int { return int((size + BlockSize - 1) / BlockSize) }

// HashBlock returns the hex SHA-256 of block i of r, a file of size bytes.
func HashBlock(r io.ReaderAt, size int64, i int) (string, error) {
	off := int64(i) * BlockSize
	want := min(BlockSize, size-off)
	h := sha256.New()
	n, err := io.CopyBuffer(h, io.NewSectionReader(r, off, want), make([]byte, 1<<20))
	if err == nil && n != want {
		err = io.ErrUnexpectedEOF
	}
	return hex.EncodeToString(h.Sum(nil)), err
}

// digestFile returns the record of file p as a manifest holds it: its size
// and, as byBlocks says for that size, its SHA-256 or its blocks' SHA-256
// hashed in parallel; add, called one at a time, counts the bytes read and
// stops the hashing by returning an error. With seal, as Publish needs, it
// also sets the store's file mode and flushes the file to stable storage.
func digestFile(p string, byBlocks func(size int64) bool, seal bool, add func(int64) error) (File, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return File{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return File{}, err
	}
	rec := File{Size: fi.Size()}
	if byBlocks(rec.Size) {
		rec.Blocks, err = hashBlocks(f, rec.Size, add)
	} else {
		rec.SHA256, err = hashAll(f, rec.Size, add)
	}
	if err == nil && seal {
		if err = f.Chmod(fileMode); err == nil {
			err = f.Sync()
		}
	}
	return rec, err
}

// hashAll is the hex SHA-256 of the size bytes of f; a file that is not
// size bytes long is an error.
func hashAll(f *os.File, size int64, add func(int64) error) (string, error) {
	h := sha256.New()
	var w io.Writer = h
	if add != nil {
		w = io.MultiWriter(h, countWriter(add))
	}
	n, err := io.CopyBuffer(w, f, make([]byte, 1<<20))
	if err == nil && n != size {
		err = fmt.Errorf("size changed while hashing: %d, then %d", size, n)
	}
	return hex.EncodeToString(h.Sum(nil)), err
}

// hashBlocks hashes the blocks of f, size bytes, hashWorkers at a time.
func hashBlocks(f *os.File, size int64, add func(int64) error) ([]string, error) {
	sums := make([]string, BlockCount(size))
	var mu sync.Mutex
	var g errgroup.Group
	g.SetLimit(hashWorkers)
	for i := range sums {
		g.Go(func() error {
			var err error
			if sums[i], err = HashBlock(f, size, i); err != nil || add == nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			return add(min(BlockSize, size-int64(i)*BlockSize))
		})
	}
	return sums, g.Wait()
}

// sameContent compares what was found of a file (got) with its manifest
// entry (f): an error names the first difference.
func sameContent(f, got File) error {
	switch {
	case got.Size != f.Size:
		return fmt.Errorf("size: expected %d, got %d", f.Size, got.Size)
	case got.SHA256 != f.SHA256:
		return fmt.Errorf("sha256: expected %s, got %s", f.SHA256, got.SHA256)
	case len(got.Blocks) != len(f.Blocks):
		return fmt.Errorf("blocks: expected %d, got %d", len(f.Blocks), len(got.Blocks))
	}
	for i := range f.Blocks {
		if got.Blocks[i] != f.Blocks[i] {
			return fmt.Errorf("block %d (bytes %d-%d): sha256 expected %s, got %s", i, int64(i)*BlockSize, min(int64(i+1)*BlockSize, f.Size)-1, f.Blocks[i], got.Blocks[i])
		}
	}
	return nil
}
