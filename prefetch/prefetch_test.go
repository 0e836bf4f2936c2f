package prefetch

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestOrdered(t *testing.T) {
	got := ordered(map[string]int64{"d/pages-2.img": 1, "d/core-1.img": 1, "d/pages-1.img": 1, "d/pagemap-1.img": 1, "rootfs-diff.tar": 1})
	want := []string{"d/core-1.img", "d/pagemap-1.img", "rootfs-diff.tar", "d/pages-1.img", "d/pages-2.img"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ordered = %v, want %v", got, want)
	}
}

// TestBringsFilesIntoThePageCache: files evicted from the page cache are
// resident again after a prefetch, every block asked for once by several
// readers; a missing file is skipped.
func TestBringsFilesIntoThePageCache(t *testing.T) {
	dir := t.TempDir()
	files := map[string]int64{}
	var total int64
	for name, size := range map[string]int64{"core-1.img": 100, "pages-1.img": 3*Block + 5, "pages-2.img": Block, "empty.img": 0} {
		p := filepath.Join(dir, name)
		data := make([]byte, size)
		rand.Read(data)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		evict(t, p)
		files[p] = size
		total += size
	}
	big := filepath.Join(dir, "pages-1.img")
	if r := resident(t, big); r > 0.5 {
		t.Skipf("cannot evict test files from the page cache here (%.0f%% resident)", r*100)
	}
	files[filepath.Join(dir, "missing.img")] = Block
	st := Start(files, 3).Wait()
	if st.Bytes != total || st.Done {
		t.Fatalf("prefetch: %+v, want %d bytes asked for and not done (a file is missing)", st, total)
	}
	deadline := time.Now().Add(5 * time.Second)
	for resident(t, big) < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if r := resident(t, big); r < 1 {
		t.Fatalf("after the prefetch %.0f%% of %s is in the page cache", r*100, big)
	}
	delete(files, filepath.Join(dir, "missing.img"))
	if st := Start(files, 2).Wait(); st.Bytes != total || !st.Done {
		t.Fatalf("second prefetch: %+v, want %d bytes, done", st, total)
	}
}

// TestStop: Stop ends the readers and keeps answering the same.
func TestStop(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pages-1.img")
	if err := os.WriteFile(p, make([]byte, 4*Block), 0o600); err != nil {
		t.Fatal(err)
	}
	pf := Start(map[string]int64{p: 4 * Block}, 1)
	st := pf.Stop()
	if again := pf.Stop(); again != st {
		t.Fatalf("second Stop = %+v, first %+v", again, st)
	}
	if w := pf.Wait(); w != st {
		t.Fatalf("Wait after Stop = %+v, Stop said %+v", w, st)
	}
}

// evict drops a written file's pages from the page cache.
func evict(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Sync()
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// resident is the fraction of path's pages in the page cache (mincore).
func resident(t *testing.T, path string) float64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	data, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(data)
	vec := make([]byte, (len(data)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&data[0])), uintptr(len(data)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	in := 0
	for _, v := range vec {
		in += int(v & 1)
	}
	return float64(in) / float64(len(vec))
}
