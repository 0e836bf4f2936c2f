package crypt

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
)

// layout is where the chunks of an encrypted file are, from its size alone.
type layout struct {
	chunk  int   // plaintext bytes per full chunk
	sealed int   // bytes per full sealed chunk
	count  int64 // chunks
	size   int64 // plaintext bytes
	body   int64 // bytes after the header
}

func newLayout(chunk int, fileSize int64) (layout, error) {
	l := layout{chunk: chunk, sealed: chunk + tagSize, body: fileSize - headerSize}
	if l.body < tagSize {
		return l, fmt.Errorf("%w: %d bytes after the header, a chunk is at least %d", ErrAuth, l.body, tagSize)
	}
	l.count = (l.body + int64(l.sealed) - 1) / int64(l.sealed)
	last := l.body - (l.count-1)*int64(l.sealed)
	if last < tagSize { // a partial tag where the last chunk should be
		return l, fmt.Errorf("%w: the last chunk holds %d bytes, less than its tag", ErrAuth, last)
	}
	l.size = l.body - l.count*tagSize
	return l, nil
}

// tagSize is GCM's tag, added to every chunk.
const tagSize = 16

// span is chunk i's place in the encrypted file and in the plaintext.
func (l layout) span(i int64) (off, n, plainOff int64) {
	off = headerSize + i*int64(l.sealed)
	n = min(int64(l.sealed), headerSize+l.body-off)
	return off, n, i * int64(l.chunk)
}

// DecryptFile decrypts src into dst, which must not exist; dst is created
// 0600 and removed again on any error. name is the path the file was
// encrypted under. workers goroutines (0: GOMAXPROCS) each take the next
// chunk, read it with pread at its fixed offset, open it and write it with
// pwrite at its plaintext offset, so one large file (a pages image) uses
// every core. The first failure stops all workers; a chunk that does not
// authenticate is ErrAuth, naming the file and the chunk. Cancelling ctx
// stops the workers too.
func (k *Key) DecryptFile(ctx context.Context, src, dst, name string, workers int) (err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("decrypting %s: %w", name, err)
		}
	}()
	in, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	var h header
	if _, err := in.ReadAt(h[:], 0); err != nil {
		return fmt.Errorf("%w: %d bytes, shorter than the header", ErrFormat, fi.Size())
	}
	chunk, err := h.parse()
	if err != nil {
		return err
	}
	l, err := newLayout(chunk, fi.Size())
	if err != nil {
		return err
	}
	c, err := k.cipherFor(h, name)
	if err != nil {
		return err
	}
	out, err := createOutput(dst)
	if err != nil {
		return err
	}
	defer closeOutput(out, &err)
	if err := out.Truncate(l.size); err != nil {
		return err
	}
	return l.parallel(ctx, workers, func(i int64, sealed, plain []byte) error {
		off, n, plainOff := l.span(i)
		if _, err := in.ReadAt(sealed[:n], off); err != nil {
			return err
		}
		p, err := c.open(plain[:0], sealed[:n], i, i == l.count-1)
		if err != nil {
			return fmt.Errorf("chunk %d of %d: %w", i, l.count, ErrAuth)
		}
		_, err = out.WriteAt(p, plainOff)
		return err
	})
}

// parallel runs f over every chunk index on workers goroutines, each with
// its own buffers, and returns the first error.
func (l layout) parallel(ctx context.Context, workers int, f func(i int64, sealed, plain []byte) error) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = int(min(int64(workers), l.count))
	var (
		next     atomic.Int64
		failed   atomic.Bool
		firstErr error
		once     sync.Once
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		once.Do(func() { firstErr = err })
		failed.Store(true)
	}
	for range workers {
		wg.Go(func() {
			sealed := make([]byte, l.sealed)
			plain := make([]byte, l.chunk)
			for !failed.Load() {
				i := next.Add(1) - 1
				if i >= l.count {
					return
				}
				if err := ctx.Err(); err != nil {
					fail(err)
					return
				}
				if err := f(i, sealed, plain); err != nil {
					fail(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

// DecryptTree decrypts the files names (slash-separated paths inside
// srcDir, each encrypted under its path) into the same paths under dstDir,
// creating directories 0700. Files go one after another, each on all
// workers. On error dstDir may hold some files: the caller removes it.
func (k *Key) DecryptTree(ctx context.Context, srcDir, dstDir string, names []string, workers int) error {
	for _, name := range names {
		if !filepath.IsLocal(filepath.FromSlash(name)) {
			return fmt.Errorf("decrypting %s: not a path inside the checkpoint", name)
		}
		dst := filepath.Join(dstDir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return err
		}
		if err := k.DecryptFile(ctx, filepath.Join(srcDir, filepath.FromSlash(name)), dst, name, workers); err != nil {
			return err
		}
	}
	return nil
}
