package floor

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tempDir makes a directory on /var/tmp, which is usually a real disk where
// O_DIRECT works, unlike a tmpfs /tmp. It falls back to the default.
func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "floor-test-")
	if err != nil {
		dir, err = os.MkdirTemp("", "floor-test-")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// writeFile writes size bytes of non-zero data to dir/name.
func writeFile(t *testing.T, dir, name string, size int) string {
	t.Helper()
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i%251 + 1)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkResult asserts a measurement succeeded and moved want bytes.
func checkResult(t *testing.T, r Result, err error, want int64) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", r.Name, err)
	}
	if r.Bytes != want {
		t.Errorf("%s: read %d bytes, want %d", r.Name, r.Bytes, want)
	}
	if r.Seconds <= 0 || r.GBps() <= 0 {
		t.Errorf("%s: seconds %v, GB/s %v: want positive", r.Name, r.Seconds, r.GBps())
	}
	t.Logf("%s: %.2f GB/s (%s)", r.Name, r.GBps(), r.Note)
}

func TestDiskReadFile(t *testing.T) {
	// 64 MiB plus an unaligned tail, so the tail path is exercised.
	const size = 64<<20 + 1234
	p := writeFile(t, tempDir(t), "image", size)
	for _, streams := range []int{1, 4} {
		r, err := DiskRead(p, streams)
		checkResult(t, r, err, size)
		if want := fmt.Sprintf("disk_read_%d", streams); r.Name != want {
			t.Errorf("name %q, want %q", r.Name, want)
		}
		if !strings.Contains(r.Note, "O_DIRECT") {
			t.Errorf("note %q does not say whether O_DIRECT was used", r.Note)
		}
	}
}

func TestDiskReadDir(t *testing.T) {
	dir := tempDir(t)
	sizes := []int{5 << 20, 3<<20 + 17, 4096, 100, 0}
	var total int64
	for i, s := range sizes {
		sub := filepath.Join(dir, string(rune('a'+i)))
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, sub, "pages.img", s)
		total += int64(s)
	}
	r, err := DiskRead(dir, 3)
	checkResult(t, r, err, total)
	if !strings.Contains(r.Note, "5 files") {
		t.Errorf("note %q: want 5 files", r.Note)
	}
	r, err = CacheRead(dir, 2)
	checkResult(t, r, err, total)
}

// TestBufferedFallback reads the way DiskRead does when a filesystem refuses
// O_DIRECT (none on a typical test machine does, so it is forced here).
func TestBufferedFallback(t *testing.T) {
	const size = 8<<20 + 5
	p := writeFile(t, tempDir(t), "image", size)
	files, err := listFiles(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := dropCache(files); err != nil {
		t.Fatal(err)
	}
	files[0].direct = false
	n, _, err := runStreams(planSpans(files, 2), 2)
	if err != nil || n != size {
		t.Fatalf("read %d bytes, %v; want %d", n, err, size)
	}
	if note := diskNote(p, files, 2); !strings.Contains(note, "O_DIRECT refused") {
		t.Errorf("note %q does not say O_DIRECT was refused", note)
	}
}

// TestTmpfs checks a tmpfs read is flagged as memory, not disk.
func TestTmpfs(t *testing.T) {
	dir, err := os.MkdirTemp("/dev/shm", "floor-test-")
	if err != nil || !onTmpfs(dir) {
		t.Skip("no tmpfs at /dev/shm")
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := writeFile(t, dir, "image", 4<<20+1)
	r, err := DiskRead(p, 2)
	checkResult(t, r, err, 4<<20+1)
	if !strings.Contains(r.Note, "tmpfs") {
		t.Errorf("note %q does not say tmpfs", r.Note)
	}
}

func TestCacheRead(t *testing.T) {
	const size = 32 << 20
	p := writeFile(t, tempDir(t), "image", size)
	r, err := CacheRead(p, 2)
	checkResult(t, r, err, size)
}

func TestReadErrors(t *testing.T) {
	missing := filepath.Join(tempDir(t), "missing")
	if _, err := DiskRead(missing, 1); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("DiskRead(missing): error %v does not name the path", err)
	}
	empty := tempDir(t)
	if _, err := CacheRead(empty, 1); err == nil || !strings.Contains(err.Error(), empty) {
		t.Errorf("CacheRead(empty dir): error %v does not name the path", err)
	}
	if _, err := DiskRead(empty, 0); err == nil {
		t.Error("DiskRead with 0 streams: no error")
	}
}

func TestMemory(t *testing.T) {
	const size = 64 << 20
	r, err := Memcpy(size, 2)
	checkResult(t, r, err, size)
	r, err = FaultIn(size, 2)
	checkResult(t, r, err, size)
	if mode, err := THPMode(); err == nil {
		if !strings.Contains(r.Note, "thp=["+mode+"]") {
			t.Errorf("note %q does not give THP mode %q", r.Note, mode)
		}
		r, err = FaultInHuge(size, 2)
		checkResult(t, r, err, size)
	}
	r, err = FirstReadAfterFill(size, 2)
	checkResult(t, r, err, size)
	if _, err := Memcpy(0, 1); err == nil {
		t.Error("Memcpy(0): no error")
	}
	if _, err := FaultIn(size, 0); err == nil {
		t.Error("FaultIn with 0 threads: no error")
	}
}

func TestFloor(t *testing.T) {
	cases := []struct {
		image, gpu int64
		read, h2d  float64
		want       float64
	}{
		{image: 2e9, read: 1e9, want: 2},
		{image: 2e9, read: 1e9, gpu: 10e9, h2d: 20e9, want: 2.5},
		{image: 2e9, read: 1e9, gpu: 10e9, h2d: 0, want: 2},
		{image: 2e9, read: 1e9, gpu: 0, h2d: 20e9, want: 2},
		{image: 0, read: 0, gpu: 4e9, h2d: 2e9, want: 2},
	}
	for _, c := range cases {
		if got := Floor(c.image, c.read, c.gpu, c.h2d); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("Floor(%d, %g, %d, %g) = %g, want %g", c.image, c.read, c.gpu, c.h2d, got, c.want)
		}
	}
	if got := Floor(1, 0, 0, 0); !math.IsInf(got, 1) {
		t.Errorf("Floor with zero read bandwidth = %g, want +Inf", got)
	}
}

func TestGBps(t *testing.T) {
	if got := (Result{Bytes: 3e9, Seconds: 2}).GBps(); got != 1.5 {
		t.Errorf("GBps = %g, want 1.5", got)
	}
	if got := (Result{Bytes: 1}).GBps(); got != 0 {
		t.Errorf("GBps with no time = %g, want 0", got)
	}
}

func TestTHPMode(t *testing.T) {
	mode, err := THPMode()
	if err != nil {
		t.Skip(err)
	}
	if mode != "always" && mode != "madvise" && mode != "never" {
		t.Errorf("THP mode %q", mode)
	}
}

func TestMachine(t *testing.T) {
	m, err := Machine()
	if err != nil {
		t.Fatal(err)
	}
	if m.CPUs < 1 || m.MemTotal <= 0 || m.Kernel == "" {
		t.Errorf("machine %+v", m)
	}
}

// TestTransfer: loopback and disk writes move what they were asked to, the
// write leaves no file behind, and a directory that is not there is an error.
func TestTransfer(t *testing.T) {
	r, err := Loopback(64 << 20)
	checkResult(t, r, err, 64<<20)
	dir := tempDir(t)
	r, err = DiskWrite(dir, 32<<20)
	checkResult(t, r, err, 32<<20)
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("DiskWrite left %d files in %s", len(left), dir)
	}
	if _, err := DiskWrite(filepath.Join(dir, "missing"), 1<<20); err == nil {
		t.Error("DiskWrite into a missing directory: no error")
	}
	var out strings.Builder
	if err := writeRepeated(&out, []byte("abc"), 7); err != nil || out.String() != "abcabca" {
		t.Errorf("writeRepeated of 7 bytes wrote %q, %v", out.String(), err)
	}
}
