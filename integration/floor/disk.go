package floor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// blockSize is one read request: large enough that syscall overhead
	// vanishes and the device sees long sequential requests.
	blockSize = 4 << 20
	// dioAlign is the offset and length alignment used for O_DIRECT. 4 KiB
	// satisfies both 512-byte and 4K-sector devices.
	dioAlign = 4096
	// minChunk and maxChunk bound the span a stream takes at a time. Spans
	// start at whole MiB, so O_DIRECT offsets are always aligned.
	minChunk = 1 << 20
	maxChunk = 64 << 20
)

// file is one regular file to read.
type file struct {
	path   string
	size   int64
	direct bool // the file's filesystem accepted O_DIRECT
}

// span is the byte range [off, end) of one file: the unit of work a stream
// takes. Spans never overlap, so streams never read the same bytes twice.
type span struct {
	f        *file
	off, end int64
}

// DiskRead measures sequential read bandwidth of the device holding path (a
// file, or a directory whose regular files are all read, largest first),
// split over streams goroutines. Each file is first synced and dropped from
// the page cache (fadvise DONTNEED), then read with O_DIRECT into page-aligned
// 4 MiB buffers, so the number is the device's, not memory's. Where O_DIRECT
// is refused (EINVAL, some filesystems), the file is read through the page
// cache after the drop and the Note says so. The unaligned tail of a file
// (under 4 KiB) is read without O_DIRECT.
func DiskRead(path string, streams int) (Result, error) {
	r := Result{Name: fmt.Sprintf("disk_read_%d", streams)}
	if err := checkCount("streams", streams); err != nil {
		return r, err
	}
	files, err := listFiles(path)
	if err != nil {
		return r, err
	}
	if err := dropCache(files); err != nil {
		return r, err
	}
	n, d, err := runStreams(planSpans(files, streams), streams)
	r.Bytes, r.Seconds = n, d.Seconds()
	r.Note = diskNote(path, files, streams)
	return r, err
}

// CacheRead measures page-cache read bandwidth: path is read once untimed to
// warm the cache, then read again with plain read(2) into one reused 4 MiB
// buffer per stream. This is the read floor of a restore whose image is
// still cached (restore right after checkpoint, or a tmpfs store).
func CacheRead(path string, streams int) (Result, error) {
	r := Result{Name: "cache_read"}
	if err := checkCount("streams", streams); err != nil {
		return r, err
	}
	files, err := listFiles(path)
	if err != nil {
		return r, err
	}
	spans := planSpans(files, streams)
	if _, _, err := runStreams(spans, streams); err != nil {
		return r, fmt.Errorf("floor: warming the cache: %w", err)
	}
	n, d, err := runStreams(spans, streams)
	r.Bytes, r.Seconds = n, d.Seconds()
	r.Note = cacheNote(files, streams)
	return r, err
}

// listFiles returns path itself if it is a regular file, or every regular
// file under it, largest first so that the big files, which dominate the
// time, are spread over all streams from the start.
func listFiles(path string) ([]*file, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	if st.Mode().IsRegular() {
		return []*file{{path: path, size: st.Size()}}, nil
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("floor: %s is neither a regular file nor a directory", path)
	}
	var files []*file
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		files = append(files, &file{path: p, size: info.Size()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("floor: walking %s: %w", path, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("floor: no regular files under %s", path)
	}
	sort.SliceStable(files, func(i, j int) bool { return files[i].size > files[j].size })
	return files, nil
}

// dropCache makes every file cold before a disk measurement: dirty pages are
// written back first (fdatasync, so a freshly written file does not make the
// timed read pay for writeback, and so DONTNEED can drop them), then the
// file's cached pages are dropped. It also records whether O_DIRECT is
// accepted, which the filesystem decides at open time.
func dropCache(files []*file) error {
	for _, f := range files {
		if err := dropFile(f.path); err != nil {
			return err
		}
		direct, err := acceptsDirect(f.path)
		if err != nil {
			return err
		}
		f.direct = direct
	}
	return nil
}

// dropFile syncs one file and drops it from the page cache.
func dropFile(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Fdatasync(fd); err != nil && err != unix.EINVAL {
		return &os.PathError{Op: "fdatasync", Path: path, Err: err}
	}
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		return &os.PathError{Op: "fadvise DONTNEED", Path: path, Err: err}
	}
	return nil
}

// acceptsDirect reports whether path can be opened with O_DIRECT; EINVAL
// means the filesystem does not support it, any other error is real.
func acceptsDirect(path string) (bool, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_DIRECT, 0)
	if err == unix.EINVAL {
		return false, nil
	}
	if err != nil {
		return false, &os.PathError{Op: "open O_DIRECT", Path: path, Err: err}
	}
	unix.Close(fd)
	return true, nil
}

// planSpans cuts the files into spans, largest file first.
func planSpans(files []*file, streams int) []span {
	var total int64
	for _, f := range files {
		total += f.size
	}
	chunk := chunkSize(total, streams)
	var spans []span
	for _, f := range files {
		for off := int64(0); off < f.size; off += chunk {
			spans = append(spans, span{f: f, off: off, end: min(off+chunk, f.size)})
		}
	}
	return spans
}

// chunkSize aims at about four spans per stream, so that streams finish at
// about the same time even when they run at different speeds, in whole MiB
// so every span starts O_DIRECT-aligned.
func chunkSize(total int64, streams int) int64 {
	c := (total / int64(streams*4)) &^ (minChunk - 1)
	return max(minChunk, min(maxChunk, c))
}

// runStreams reads all spans with streams goroutines, each taking the next
// unread span, and returns the bytes read and the wall time. Buffers are
// mapped and touched before the clock starts so their page faults are not
// timed. The first error stops every stream.
func runStreams(spans []span, streams int) (int64, time.Duration, error) {
	bufs := make([][]byte, streams)
	for i := range bufs {
		b, err := mmapAnon(blockSize)
		if err != nil {
			return 0, 0, err
		}
		defer unix.Munmap(b)
		touch(b, 0, blockSize)
		bufs[i] = b
	}
	var next, total atomic.Int64
	var failed atomic.Bool
	errs := make([]error, streams)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range streams {
		wg.Go(func() {
			for !failed.Load() {
				j := next.Add(1) - 1
				if j >= int64(len(spans)) {
					return
				}
				n, err := readSpan(spans[j], bufs[i])
				total.Add(n)
				if err != nil {
					errs[i] = err
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	return total.Load(), time.Since(start), errors.Join(errs...)
}

// readSpan reads one span: the 4 KiB-aligned part with O_DIRECT when the
// file allows it, the rest (a file's unaligned tail, or everything when
// O_DIRECT is refused) through the page cache.
func readSpan(s span, buf []byte) (int64, error) {
	directEnd := s.off
	if s.f.direct {
		directEnd = max(s.off, s.end&^(dioAlign-1))
	}
	var n int64
	if directEnd > s.off {
		m, err := readRange(s.f.path, unix.O_DIRECT, s.off, directEnd, buf)
		n += m
		if err != nil {
			return n, err
		}
	}
	if s.end > directEnd {
		m, err := readRange(s.f.path, 0, directEnd, s.end, buf)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// readRange reads [off, end) of path with pread(2) in buffer-sized requests.
// It stops early, without error, if the file turns out shorter.
func readRange(path string, flags int, off, end int64, buf []byte) (int64, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|flags, 0)
	if err != nil {
		return 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var n int64
	for off < end {
		m, err := unix.Pread(fd, buf[:min(int64(len(buf)), end-off)], off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("floor: reading %s at offset %d: %w", path, off, err)
		}
		if m == 0 {
			break
		}
		n += int64(m)
		off += int64(m)
	}
	return n, nil
}

// diskNote says how the disk read was done, so a page-cache or tmpfs number
// is not mistaken for a disk's.
func diskNote(path string, files []*file, streams int) string {
	refused := 0
	for _, f := range files {
		if !f.direct {
			refused++
		}
	}
	note := plural(streams, "stream") + ", " + plural(len(files), "file")
	switch {
	case refused == 0:
		note += ", O_DIRECT"
	case refused == len(files):
		note += ", O_DIRECT refused: page cache after fadvise(DONTNEED)"
	default:
		note += fmt.Sprintf(", O_DIRECT refused for %d files: those via page cache after fadvise(DONTNEED)", refused)
	}
	if onTmpfs(path) {
		note += ", tmpfs: memory, not a disk"
	}
	return note
}

// cacheNote warns when the data cannot all stay cached, in which case part
// of the "cache" read is really a disk read.
func cacheNote(files []*file, streams int) string {
	note := plural(streams, "stream") + ", " + plural(len(files), "file") + ", read(2) from page cache"
	var total int64
	for _, f := range files {
		total += f.size
	}
	if avail, err := memInfo("MemAvailable"); err == nil && total > avail {
		note += fmt.Sprintf(", WARNING: %d bytes exceed MemAvailable %d: partly from disk", total, avail)
	}
	return note
}

// plural is "1 file" or "N files".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// onTmpfs reports whether path lives on tmpfs or ramfs, where any "disk"
// read is a memory read whatever the flags.
func onTmpfs(path string) bool {
	var st unix.Statfs_t
	if unix.Statfs(path, &st) != nil {
		return false
	}
	return st.Type == unix.TMPFS_MAGIC || st.Type == unix.RAMFS_MAGIC
}
