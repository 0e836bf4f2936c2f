package floor

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// thpEnabled is where the kernel says when it backs anonymous memory with
// transparent huge pages.
const thpEnabled = "/sys/kernel/mm/transparent_hugepage/enabled"

// Memcpy measures host memory copy bandwidth: size bytes copied between two
// buffers by threads goroutines, each copying its own slice. Both buffers
// are faulted in first so page faults are not timed, and the best of three
// runs is kept to shed scheduling noise. Bytes counts bytes copied; the
// memory traffic is twice that (read plus write).
func Memcpy(size int64, threads int) (Result, error) {
	r := Result{Name: "memcpy"}
	if err := checkMem(size, threads); err != nil {
		return r, err
	}
	src, err := mmapAnon(size)
	if err != nil {
		return r, err
	}
	defer unix.Munmap(src)
	dst, err := mmapAnon(size)
	if err != nil {
		return r, err
	}
	defer unix.Munmap(dst)
	parallel(threads, size, func(lo, hi int64) { touch(src, lo, hi); touch(dst, lo, hi) })
	best := time.Duration(math.MaxInt64)
	for range 3 {
		start := time.Now()
		parallel(threads, size, func(lo, hi int64) { copy(dst[lo:hi], src[lo:hi]) })
		best = min(best, time.Since(start))
	}
	r.Bytes, r.Seconds = size, best.Seconds()
	r.Note = plural(threads, "thread") + ", best of 3, bytes copied (traffic is 2x)"
	return r, nil
}

// FaultIn measures what populating fresh anonymous memory costs, which a
// restore pays for every page it writes into the new process: size bytes are
// mapped and one byte per 4 KiB page is written by threads goroutines. The
// mapping is marked MADV_NOHUGEPAGE so this is the 4 KiB-page cost whatever
// the system's THP setting.
func FaultIn(size int64, threads int) (Result, error) {
	return faultIn("fault_in_4k", size, threads, unix.MADV_NOHUGEPAGE)
}

// FaultInHuge is FaultIn with the mapping marked MADV_HUGEPAGE, the cost when
// transparent huge pages back the memory (one fault per 2 MiB). The Note
// gives the system THP setting and how much of the mapping really got huge
// pages, since the kernel may refuse them.
func FaultInHuge(size int64, threads int) (Result, error) {
	return faultIn("fault_in_thp", size, threads, unix.MADV_HUGEPAGE)
}

// FirstReadAfterFill measures what a process pays the first time it reads
// memory that the kernel filled for it, as CRIU's restore fills a restored
// process's pages (populated, then written by preadv): size bytes are
// mapped with 4 KiB pages and populated by MADV_POPULATE_WRITE, not timed,
// then one byte per page is read by threads goroutines, timed. Where this
// is much slower than reading memory (some VMs: the 2-core dev VM measured
// 0.4-0.5 GB/s on 2026-12-05), part of every restore's cost is deferred to
// the restored workload's first pass over its memory.
func FirstReadAfterFill(size int64, threads int) (Result, error) {
	r := Result{Name: "first_read_after_fill"}
	b, err := mapWithAdvice(size, threads, unix.MADV_NOHUGEPAGE, unix.MADV_POPULATE_WRITE)
	if err != nil {
		return r, err
	}
	defer unix.Munmap(b)
	var sink atomic.Int64 // keeps the reads from being optimised away
	start := time.Now()
	parallel(threads, size, func(lo, hi int64) { sink.Add(int64(readPages(b, lo, hi))) })
	r.Bytes, r.Seconds = size, time.Since(start).Seconds()
	r.Note = plural(threads, "thread") + ", one byte read per 4 KiB page of memory the kernel populated, " + pageReportingNote()
	return r, nil
}

// readPages reads one byte per page of b[lo:hi] and returns their sum.
func readPages(b []byte, lo, hi int64) byte {
	ps := int64(os.Getpagesize())
	var sum byte
	for i := lo; i < hi; i += ps {
		sum += b[i]
	}
	return sum
}

// faultIn maps size bytes, applies advice and times the first touch of
// every page.
func faultIn(name string, size int64, threads int, advice int) (Result, error) {
	r := Result{Name: name}
	b, err := mapWithAdvice(size, threads, advice)
	if err != nil {
		return r, err
	}
	defer unix.Munmap(b)
	start := time.Now()
	parallel(threads, size, func(lo, hi int64) { touch(b, lo, hi) })
	r.Bytes, r.Seconds = size, time.Since(start).Seconds()
	r.Note = plural(threads, "thread") + ", " + thpNote() + ", " + hugeNote(b) + ", " + pageReportingNote()
	return r, nil
}

// mapWithAdvice maps size bytes of fresh anonymous memory, for threads to
// measure, and applies each madvise advice in turn.
func mapWithAdvice(size int64, threads int, advice ...int) ([]byte, error) {
	if err := checkMem(size, threads); err != nil {
		return nil, err
	}
	b, err := mmapAnon(size)
	if err != nil {
		return nil, err
	}
	for _, a := range advice {
		// Without THP in the kernel, MADV_NOHUGEPAGE is EINVAL and moot.
		if err := unix.Madvise(b, a); err != nil && !(err == unix.EINVAL && a == unix.MADV_NOHUGEPAGE) {
			unix.Munmap(b)
			return nil, fmt.Errorf("floor: madvise(%d) on %d bytes: %w", a, size, err)
		}
	}
	return b, nil
}

// THPMode returns the system's transparent huge page mode, the bracketed
// word of /sys/kernel/mm/transparent_hugepage/enabled: always, madvise or
// never.
func THPMode() (string, error) {
	data, err := os.ReadFile(thpEnabled)
	if err != nil {
		return "", fmt.Errorf("floor: %w", err)
	}
	s := string(data)
	i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']')
	if i < 0 || j < i {
		return "", fmt.Errorf("floor: no [mode] in %s: %q", thpEnabled, strings.TrimSpace(s))
	}
	return s[i+1 : j], nil
}

// pageReportingParams is where a guest kernel with free page reporting
// (virtio-balloon) says how soon it hands free memory back to its host.
const pageReportingParams = "/sys/module/page_reporting/parameters"

// pageReportingNote says whether this kernel reports free pages to a
// hypervisor, which then discards them: memory allocated afresh is then
// backed again by the host on first use, at a cost the fault-in floors
// include (the 2-core dev VM: min_free_ms 0, order 9, 2026-12-05).
func pageReportingNote() string {
	read := func(name string) string {
		data, _ := os.ReadFile(pageReportingParams + "/" + name)
		return strings.TrimSpace(string(data))
	}
	switch reported := read("reported_kib"); reported {
	case "":
		return "no free page reporting"
	case "0":
		return "free page reporting idle (nothing reported yet)"
	}
	return fmt.Sprintf("free page reporting active (min_free_ms %s, order %s)", read("min_free_ms"), read("page_reporting_order"))
}

// thpNote is "thp=[mode]" for a result's note.
func thpNote() string {
	mode, err := THPMode()
	if err != nil {
		return "thp=unknown"
	}
	return "thp=[" + mode + "]"
}

// hugeNote says how much of b the kernel backed with huge pages.
func hugeNote(b []byte) string {
	huge, err := anonHugeBytes(b)
	if err != nil {
		return "huge pages unknown"
	}
	return fmt.Sprintf("%d of %d MiB in huge pages", huge>>20, len(b)>>20)
}

// anonHugeBytes reads AnonHugePages of the mapping holding b from
// /proc/self/smaps. If the kernel merged the mapping with a neighbour, the
// neighbour's huge pages are counted too.
func anonHugeBytes(b []byte) (int64, error) {
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	addr := uint64(uintptr(unsafe.Pointer(&b[0])))
	in := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if lo, hi, ok := vmaRange(line); ok {
			in = lo <= addr && addr < hi
			continue
		}
		if in && strings.HasPrefix(line, "AnonHugePages:") {
			return kbField(line)
		}
	}
	return 0, fmt.Errorf("floor: mapping %#x not in /proc/self/smaps", addr)
}

// vmaRange parses the "start-end perms ..." header line of a smaps entry.
func vmaRange(line string) (lo, hi uint64, ok bool) {
	field, _, _ := strings.Cut(line, " ")
	a, b, found := strings.Cut(field, "-")
	if !found {
		return 0, 0, false
	}
	lo, err1 := strconv.ParseUint(a, 16, 64)
	hi, err2 := strconv.ParseUint(b, 16, 64)
	return lo, hi, err1 == nil && err2 == nil
}

// kbField parses "Key:   123 kB" into bytes.
func kbField(line string) (int64, error) {
	f := strings.Fields(line)
	if len(f) < 2 {
		return 0, fmt.Errorf("floor: malformed line %q", line)
	}
	kb, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("floor: malformed line %q: %w", line, err)
	}
	return kb << 10, nil
}

// checkMem rejects sizes that would measure nothing or not fit an int.
func checkMem(size int64, threads int) error {
	if size < int64(os.Getpagesize()) || size > math.MaxInt {
		return fmt.Errorf("floor: memory size %d out of range (at least one page)", size)
	}
	return checkCount("threads", threads)
}

// mmapAnon maps size bytes of private anonymous memory: page aligned (as
// O_DIRECT needs) and outside the Go heap, so it is really returned to the
// kernel on munmap and each measurement starts from fresh pages.
func mmapAnon(size int64) ([]byte, error) {
	b, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("floor: mmap %d bytes: %w", size, err)
	}
	return b, nil
}

// touch writes one byte per page of b[lo:hi], which faults each page in.
func touch(b []byte, lo, hi int64) {
	ps := int64(os.Getpagesize())
	for i := lo; i < hi; i += ps {
		b[i] = 1
	}
}

// parallel splits [0, n) into threads page-aligned parts and runs fn on each
// in its own goroutine, returning when all are done.
func parallel(threads int, n int64, fn func(lo, hi int64)) {
	ps := int64(os.Getpagesize())
	var wg sync.WaitGroup
	for i := range int64(threads) {
		lo := n * i / int64(threads) / ps * ps
		hi := n
		if i < int64(threads)-1 {
			hi = n * (i + 1) / int64(threads) / ps * ps
		}
		wg.Go(func() { fn(lo, hi) })
	}
	wg.Wait()
}
