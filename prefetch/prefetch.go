// Package prefetch reads a checkpoint's files into the page cache ahead of
// CRIU, with several readers at once.
//
// CRIU restores memory by reading its page images front to back with one
// thread: from a cold page cache the restore runs at one stream's read
// bandwidth, after the shim has already spent the time between Create and
// Start doing nothing with the disk. Prefetching starts at Create, as soon
// as the checkpoint is chosen, and reads the files in the order CRIU will
// (small images first, then the page images, each front to back) in blocks
// that several readers take in turn, so that the read front runs ahead of
// CRIU at the device's parallel bandwidth and CRIU's reads hit the cache.
// Each block is a readahead request (POSIX_FADV_WILLNEED): the kernel reads
// it into the page cache without a copy to user space, which on a node with
// few cores would take CPU from CRIU; a block already cached costs nothing.
package prefetch

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Block is the size each reader reads at a time.
const Block = 8 << 20

// Stats is what a prefetch did.
type Stats struct {
	Bytes    int64         // asked to be read ahead
	Duration time.Duration // from Start to the end of the last read
	Done     bool          // every block was read before the stop
}

type block struct {
	file      int
	off, size int64
}

// Prefetch is a running prefetch.
type Prefetch struct {
	stop   atomic.Bool
	wg     sync.WaitGroup
	bytes  atomic.Int64
	start  time.Time
	end    atomic.Int64 // unix nanoseconds of the last read's end
	blocks []block
	read   atomic.Int64 // blocks read
	once   sync.Once
	stats  Stats
}

// Start reads files (name → size) in the background with workers readers.
// A file that cannot be opened is skipped: prefetching only speeds up reads
// that CRIU makes and reports itself.
func Start(files map[string]int64, workers int) *Prefetch {
	p := &Prefetch{start: time.Now()}
	names := ordered(files)
	for i, name := range names {
		for off := int64(0); off < files[name]; off += Block {
			p.blocks = append(p.blocks, block{file: i, off: off, size: min(Block, files[name]-off)})
		}
	}
	if workers < 1 {
		workers = 1
	}
	var next atomic.Int64
	for range workers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.reader(names, &next)
		}()
	}
	return p
}

// ordered sorts names as CRIU reads them: everything but the page images
// first (small), then the page images by name.
func ordered(files map[string]int64) []string {
	var names []string
	for name := range files {
		names = append(names, name)
	}
	isPages := func(n string) bool { return strings.HasPrefix(filepath.Base(n), "pages-") }
	sort.Slice(names, func(i, j int) bool {
		if isPages(names[i]) != isPages(names[j]) {
			return !isPages(names[i])
		}
		return names[i] < names[j]
	})
	return names
}

// reader is one reader: it takes the next block until none is left or the
// prefetch is stopped.
func (p *Prefetch) reader(names []string, next *atomic.Int64) {
	open := map[int]*os.File{}
	defer func() {
		for _, f := range open {
			f.Close()
		}
	}()
	for !p.stop.Load() {
		i := int(next.Add(1) - 1)
		if i >= len(p.blocks) {
			return
		}
		b := p.blocks[i]
		f, ok := open[b.file]
		if !ok {
			var err error
			if f, err = os.Open(names[b.file]); err != nil {
				open[b.file] = nil
				continue
			}
			open[b.file] = f
		}
		if f == nil {
			continue
		}
		if err := unix.Fadvise(int(f.Fd()), b.off, b.size, unix.FADV_WILLNEED); err != nil {
			continue
		}
		p.bytes.Add(b.size)
		p.read.Add(1)
		p.end.Store(time.Now().UnixNano())
	}
}

// Wait waits until every block was read and says what the readers did.
func (p *Prefetch) Wait() Stats {
	p.wg.Wait()
	return p.Stop()
}

// Stop ends the prefetch (blocks not yet taken are skipped), waits for the
// readers and says what they did. It may be called more than once.
func (p *Prefetch) Stop() Stats {
	p.once.Do(func() {
		p.stop.Store(true)
		p.wg.Wait()
		p.stats = Stats{Bytes: p.bytes.Load(), Done: int(p.read.Load()) >= len(p.blocks)}
		if end := p.end.Load(); end > 0 {
			p.stats.Duration = time.Unix(0, end).Sub(p.start)
		}
	})
	return p.stats
}
