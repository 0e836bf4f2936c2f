package prefetch

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestOrdered(t *testing.T) {
	got := ordered(map[string]int64{"d/pages-2.img": 1, "d/core-1.img": 1, "d/pages-1.img": 1, "d/pagemap-1.img": 1, "rootfs-diff.tar": 1})
	want := []string{"d/core-1.img", "d/pagemap-1.img", "rootfs-diff.tar", "d/pages-1.img", "d/pages-2.img"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ordered = %v, want %v", got, want)
	}
}

// TestReadsEverything: every byte of every file is read once, by several
// readers, and a missing file is skipped.
func TestReadsEverything(t *testing.T) {
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
		files[p] = size
		total += size
	}
	files[filepath.Join(dir, "missing.img")] = Block
	st := Start(files, 3).Wait()
	if st.Bytes != total {
		t.Fatalf("read %d bytes, want %d", st.Bytes, total)
	}
	if st.Done {
		t.Fatal("Done with a missing file's blocks unread")
	}
	delete(files, filepath.Join(dir, "missing.img"))
	if st := Start(files, 2).Wait(); st.Bytes != total || !st.Done {
		t.Fatalf("second prefetch: %+v, want %d bytes, done", st, total)
	}
}

// TestStop: a stopped prefetch takes no more blocks.
func TestStop(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pages-1.img")
	if err := os.WriteFile(p, make([]byte, 16*Block), 0o600); err != nil {
		t.Fatal(err)
	}
	pf := Start(map[string]int64{p: 16 * Block}, 1)
	st := pf.Stop()
	if st.Done || st.Bytes >= 16*Block {
		t.Fatalf("stopped prefetch read everything: %+v", st)
	}
	if again := pf.Stop(); again != st {
		t.Fatalf("second Stop = %+v, first %+v", again, st)
	}
}
