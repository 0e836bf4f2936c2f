package rootfs

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: whiteouts, ownership and trusted xattrs")
	}
}

func mustWrite(t *testing.T, p, data string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// fakeUpper builds an overlay upper directory by hand: what a container that
// changed its image would leave behind.
func fakeUpper(t *testing.T) string {
	up := filepath.Join(t.TempDir(), "upper")
	mtime := time.Date(2024, 5, 1, 12, 0, 0, 123456789, time.UTC)
	must(t, os.MkdirAll(filepath.Join(up, "app", "nested", "deeper"), 0o750))
	must(t, os.Chown(filepath.Join(up, "app"), 1000, 1000))
	mustWrite(t, filepath.Join(up, "app", "model.bin"), "weights", 0o640)
	must(t, os.Chown(filepath.Join(up, "app", "model.bin"), 1000, 2000))
	must(t, os.Chtimes(filepath.Join(up, "app", "model.bin"), mtime, mtime))
	must(t, os.Link(filepath.Join(up, "app", "model.bin"), filepath.Join(up, "app", "model.link")))
	mustWrite(t, filepath.Join(up, "app", "nested", "deeper", "cfg.json"), `{"a":1}`, 0o600)
	mustWrite(t, filepath.Join(up, "usr", "bin", "tool"), "#!/bin/sh\n", fs.ModeSetuid|0o755)
	must(t, os.Symlink("model.bin", filepath.Join(up, "app", "current")))
	must(t, os.MkdirAll(filepath.Join(up, "etc"), 0o755))
	must(t, os.Symlink("/usr/share/zoneinfo/UTC", filepath.Join(up, "etc", "localtime")))
	must(t, unix.Lchown(filepath.Join(up, "etc", "localtime"), 7, 7))
	must(t, unix.Mknod(filepath.Join(up, "etc", "removed"), unix.S_IFCHR, 0))
	must(t, unix.Mknod(filepath.Join(up, "app", "gone-dir"), unix.S_IFCHR, 0))
	must(t, unix.Mkfifo(filepath.Join(up, "app", "fifo"), 0o600))
	must(t, unix.Mknod(filepath.Join(up, "app", "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	mustWrite(t, filepath.Join(up, "var", "cache", "new"), "fresh", 0o644)
	if err := unix.Lsetxattr(filepath.Join(up, "var", "cache"), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		t.Skipf("cannot set trusted xattrs here: %v", err)
	}
	must(t, os.Chtimes(filepath.Join(up, "app", "nested"), mtime, mtime))
	return up
}

// fakeLower is the new container's rootfs before the diff: the image.
func fakeLower(t *testing.T, rootfs string) {
	mustWrite(t, filepath.Join(rootfs, "etc", "passwd"), "root:x:0:0::/root:/bin/sh\n", 0o644)
	mustWrite(t, filepath.Join(rootfs, "etc", "removed"), "old", 0o644)
	mustWrite(t, filepath.Join(rootfs, "app", "gone-dir", "x"), "old", 0o644)
	mustWrite(t, filepath.Join(rootfs, "app", "model.bin"), "old weights", 0o644)
	mustWrite(t, filepath.Join(rootfs, "var", "cache", "old"), "stale", 0o644)
	mustWrite(t, filepath.Join(rootfs, "usr", "bin", "tool"), "old", 0o755)
}

func TestCaptureAndApplyDiff(t *testing.T) {
	requireRoot(t)
	up := fakeUpper(t)
	ck := t.TempDir()
	if err := CaptureDiff(up, ck); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{DiffFile, DeletedFilesFile, OpaqueDirsFile} {
		fi, err := os.Stat(filepath.Join(ck, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	if got := readList(t, filepath.Join(ck, DeletedFilesFile)); !reflect.DeepEqual(got, []string{"/app/gone-dir", "/etc/removed"}) {
		t.Errorf("deleted.files = %q", got)
	}
	if got := readList(t, filepath.Join(ck, OpaqueDirsFile)); !reflect.DeepEqual(got, []string{"/var/cache"}) {
		t.Errorf("opaque.dirs = %q", got)
	}
	names := tarNames(t, filepath.Join(ck, DiffFile))
	want := []string{"app/", "app/current", "app/model.bin", "app/model.link", "app/nested/", "app/nested/deeper/",
		"app/nested/deeper/cfg.json", "etc/", "etc/localtime", "usr/", "usr/bin/", "usr/bin/tool", "var/", "var/cache/", "var/cache/new"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("tar entries = %q\nwant %q", names, want)
	}

	rootfs := t.TempDir()
	fakeLower(t, rootfs)
	if err := ApplyDiff(ck, rootfs); err != nil {
		t.Fatal(err)
	}
	// Every captured entry is in the rootfs as it was in the upper dir.
	for _, n := range want {
		n = strings.TrimSuffix(n, "/")
		compareEntry(t, filepath.Join(up, n), filepath.Join(rootfs, n), n)
	}
	for _, gone := range []string{"etc/removed", "app/gone-dir", "var/cache/old", "app/fifo", "app/null"} {
		if _, err := os.Lstat(filepath.Join(rootfs, gone)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still exists (%v)", gone, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(rootfs, "etc", "passwd")); !strings.HasPrefix(string(b), "root:") {
		t.Errorf("untouched lower file changed: %q", b)
	}
	a, _ := os.Stat(filepath.Join(rootfs, "app", "model.bin"))
	b, _ := os.Stat(filepath.Join(rootfs, "app", "model.link"))
	if !os.SameFile(a, b) {
		t.Error("hard link not kept as a link")
	}

	// Applying again (a retried restore) gives the same result.
	if err := ApplyDiff(ck, rootfs); err != nil {
		t.Fatalf("second apply: %v", err)
	}
	compareEntry(t, filepath.Join(up, "app/model.bin"), filepath.Join(rootfs, "app/model.bin"), "app/model.bin")
}

func compareEntry(t *testing.T, want, got, name string) {
	t.Helper()
	w, err := os.Lstat(want)
	if err != nil {
		t.Fatal(err)
	}
	g, err := os.Lstat(got)
	if err != nil {
		t.Errorf("%s: %v", name, err)
		return
	}
	if w.Mode() != g.Mode() {
		t.Errorf("%s: mode %v, want %v", name, g.Mode(), w.Mode())
	}
	ws, gs := w.Sys().(*syscall.Stat_t), g.Sys().(*syscall.Stat_t)
	if ws.Uid != gs.Uid || ws.Gid != gs.Gid {
		t.Errorf("%s: owner %d:%d, want %d:%d", name, gs.Uid, gs.Gid, ws.Uid, ws.Gid)
	}
	if !w.ModTime().Equal(g.ModTime()) {
		t.Errorf("%s: mtime %v, want %v", name, g.ModTime(), w.ModTime())
	}
	switch {
	case w.Mode()&fs.ModeSymlink != 0:
		wl, _ := os.Readlink(want)
		gl, _ := os.Readlink(got)
		if wl != gl {
			t.Errorf("%s: link %q, want %q", name, gl, wl)
		}
	case w.Mode().IsRegular():
		wb, _ := os.ReadFile(want)
		gb, _ := os.ReadFile(got)
		if !bytes.Equal(wb, gb) {
			t.Errorf("%s: content %q, want %q", name, gb, wb)
		}
	}
}

func readList(t *testing.T, p string) []string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatal(err)
	}
	return l
}

func tarNames(t *testing.T, p string) []string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	return names
}
