package runtime

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

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

func TestUpperDir(t *testing.T) {
	for _, tc := range []struct {
		opts []string
		want string
		ok   bool
	}{
		{[]string{"index=off", "workdir=/s/1/work", "upperdir=/s/1/fs", "lowerdir=/s/2/fs:/s/3/fs"}, "/s/1/fs", true},
		{[]string{"lowerdir=/s/2/fs:/s/3/fs"}, "", false}, // read-only view
		{[]string{"rbind", "rw"}, "", false},
		{nil, "", false},
	} {
		got, ok := UpperDir(tc.opts)
		if got != tc.want || ok != tc.ok {
			t.Errorf("UpperDir(%q) = %q, %v; want %q, %v", tc.opts, got, ok, tc.want, tc.ok)
		}
	}
}

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

func TestCaptureAndApplyRootfsDiff(t *testing.T) {
	requireRoot(t)
	up := fakeUpper(t)
	ck := t.TempDir()
	if err := CaptureRootfsDiff(up, ck); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{RootfsDiffFile, DeletedFilesFile, OpaqueDirsFile} {
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
	names := tarNames(t, filepath.Join(ck, RootfsDiffFile))
	want := []string{"app/", "app/current", "app/model.bin", "app/model.link", "app/nested/", "app/nested/deeper/",
		"app/nested/deeper/cfg.json", "etc/", "etc/localtime", "usr/", "usr/bin/", "usr/bin/tool", "var/", "var/cache/", "var/cache/new"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("tar entries = %q\nwant %q", names, want)
	}

	rootfs := t.TempDir()
	fakeLower(t, rootfs)
	if err := ApplyRootfsDiff(ck, rootfs); err != nil {
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
	if err := ApplyRootfsDiff(ck, rootfs); err != nil {
		t.Fatalf("second apply: %v", err)
	}
	compareEntry(t, filepath.Join(up, "app/model.bin"), filepath.Join(rootfs, "app/model.bin"), "app/model.bin")
}

func TestCaptureRootfsDiffNoChanges(t *testing.T) {
	up, ck := t.TempDir(), t.TempDir()
	if err := CaptureRootfsDiff(up, ck); err != nil {
		t.Fatal(err)
	}
	if got := readList(t, filepath.Join(ck, DeletedFilesFile)); len(got) != 0 {
		t.Errorf("deleted.files = %q", got)
	}
	if _, err := os.Stat(filepath.Join(ck, OpaqueDirsFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("opaque.dirs written without opaque dirs")
	}
	rootfs := t.TempDir()
	if err := ApplyRootfsDiff(ck, rootfs); err != nil {
		t.Fatal(err)
	}
	// A checkpoint without a diff at all (no overlay rootfs) applies as nothing.
	if err := ApplyRootfsDiff(t.TempDir(), rootfs); err != nil {
		t.Fatal(err)
	}
}

func TestCaptureRootfsDiffRefusesRedirectDir(t *testing.T) {
	requireRoot(t)
	up := t.TempDir()
	must(t, os.Mkdir(filepath.Join(up, "renamed"), 0o755))
	if err := unix.Lsetxattr(filepath.Join(up, "renamed"), "trusted.overlay.redirect", []byte("/orig"), 0); err != nil {
		t.Skipf("cannot set trusted xattrs here: %v", err)
	}
	ck := t.TempDir()
	err := CaptureRootfsDiff(up, ck)
	if err == nil || !strings.Contains(err.Error(), "redirect") {
		t.Fatalf("err = %v, want a redirect_dir refusal", err)
	}
	if _, err := os.Stat(filepath.Join(ck, RootfsDiffFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Error("partial rootfs-diff.tar left behind")
	}
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

// entry is one member of a hand-made archive.
type entry struct {
	name, link string
	typ        byte
	data       string
}

func makeTar(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.data))}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if e.typ == tar.TypeChar {
			h.Devmajor, h.Devminor = 1, 3
		}
		must(t, tw.WriteHeader(h))
		if e.typ == tar.TypeReg {
			_, err := tw.Write([]byte(e.data))
			must(t, err)
		}
	}
	must(t, tw.Close())
	return buf.Bytes()
}

// snapshot is every path under dir with its type, mode and content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		v := fi.Mode().String()
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			v += " -> " + l
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			v += " " + string(b)
		}
		m[p] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestApplyRootfsDiffRejectsHostileInput(t *testing.T) {
	requireRoot(t)
	big := strings.Repeat("x", 4096)
	valid := makeTar(t, entry{name: "data/", typ: tar.TypeDir}, entry{name: "data/big", typ: tar.TypeReg, data: big})
	for _, tc := range []struct {
		name    string
		archive []byte
		deleted string                       // deleted.files content, if any
		opaque  string                       // opaque.dirs content, if any
		setup   func(rootfs, outside string) // the new container's rootfs before applying
		limit   int64
		want    []string // in the error
		kind    error
		// touched: the archive passes the checks that need no rootfs, so
		// earlier entries may be written; only outside must stay unchanged.
		touched bool
	}{
		{name: "dot-dot", archive: makeTar(t, entry{name: "ok", typ: tar.TypeReg, data: "1"}, entry{name: "../x", typ: tar.TypeReg, data: "pwned"}),
			want: []string{`"../x"`, `".." component`}, kind: errdefs.ErrInvalidArgument},
		{name: "dot-dot inside", archive: makeTar(t, entry{name: "a/../../x", typ: tar.TypeReg, data: "pwned"}),
			want: []string{`"a/../../x"`, `".." component`}, kind: errdefs.ErrInvalidArgument},
		{name: "absolute", archive: makeTar(t, entry{name: "/etc/x", typ: tar.TypeReg, data: "pwned"}),
			want: []string{`"/etc/x"`, "absolute name"}, kind: errdefs.ErrInvalidArgument},
		{name: "symlink escape in archive", archive: makeTar(t, entry{name: "a", typ: tar.TypeSymlink, link: "/"}, entry{name: "a/etc/passwd", typ: tar.TypeReg, data: "pwned"}),
			want: []string{`"a/etc/passwd"`, `parent "a" is a symlink`}, kind: errdefs.ErrInvalidArgument},
		{name: "symlink then replace dir", archive: makeTar(t, entry{name: "d/f", typ: tar.TypeReg, data: "1"}, entry{name: "d", typ: tar.TypeSymlink, link: "/"}),
			want: []string{`"d"`, "replaces a directory"}, kind: errdefs.ErrInvalidArgument},
		{name: "absolute symlink in rootfs", archive: makeTar(t, entry{name: "ok", typ: tar.TypeReg, data: "1"}, entry{name: "a/pwned", typ: tar.TypeReg, data: "pwned"}),
			setup: func(rootfs, outside string) { must(t, os.Symlink(outside, filepath.Join(rootfs, "a"))) },
			want:  []string{`"a/pwned"`, `parent "a" is a symlink`}, kind: errdefs.ErrInvalidArgument, touched: true},
		{name: "relative symlink in rootfs", archive: makeTar(t, entry{name: "b/c/pwned", typ: tar.TypeReg, data: "pwned"}),
			setup: func(rootfs, outside string) {
				must(t, os.Mkdir(filepath.Join(rootfs, "b"), 0o755))
				must(t, os.Symlink("../../outside", filepath.Join(rootfs, "b", "c")))
			},
			want: []string{`"b/c/pwned"`, `parent "b/c" is a symlink`}, kind: errdefs.ErrInvalidArgument, touched: true},
		{name: "device node", archive: makeTar(t, entry{name: "dev/null", typ: tar.TypeChar}),
			want: []string{`"dev/null"`, "device node"}, kind: errdefs.ErrInvalidArgument},
		{name: "fifo", archive: makeTar(t, entry{name: "p", typ: tar.TypeFifo}),
			want: []string{`"p"`, "FIFO"}, kind: errdefs.ErrInvalidArgument},
		{name: "hard link outside", archive: makeTar(t, entry{name: "l", typ: tar.TypeLink, link: "../outside/secret"}),
			want: []string{`"l"`, "hard link target", `".." component`}, kind: errdefs.ErrInvalidArgument},
		{name: "hard link absolute", archive: makeTar(t, entry{name: "l", typ: tar.TypeLink, link: "/etc/shadow"}),
			want: []string{`"l"`, "hard link target: absolute name"}, kind: errdefs.ErrInvalidArgument},
		{name: "hard link to rootfs file", archive: makeTar(t, entry{name: "l", typ: tar.TypeLink, link: "etc/passwd"}),
			want: []string{`"l"`, "not an earlier regular file"}, kind: errdefs.ErrInvalidArgument},
		{name: "duplicate", archive: makeTar(t, entry{name: "f", typ: tar.TypeReg, data: "1"}, entry{name: "./f", typ: tar.TypeReg, data: "2"}),
			want: []string{`"./f"`, "duplicate"}, kind: errdefs.ErrInvalidArgument},
		{name: "too big", archive: valid, limit: 1024,
			want: []string{`"data/big"`, "exceeds the limit"}, kind: errdefs.ErrInvalidArgument},
		{name: "truncated in data", archive: valid[:len(valid)-1024-2048],
			want: []string{RootfsDiffFile, "data/big"}, kind: errdefs.ErrDataLoss},
		{name: "truncated at entry boundary", archive: valid[:len(valid)-1024],
			want: []string{RootfsDiffFile, "truncated"}, kind: errdefs.ErrDataLoss},
		{name: "truncated header", archive: valid[:100],
			want: []string{RootfsDiffFile, "first header"}, kind: errdefs.ErrDataLoss},
		{name: "empty archive", archive: []byte{},
			want: []string{RootfsDiffFile, "truncated"}, kind: errdefs.ErrDataLoss},
		{name: "deleted dot-dot", archive: valid, deleted: `["/ok", "/../outside/secret"]`,
			want: []string{DeletedFilesFile, `"/../outside/secret"`}, kind: errdefs.ErrInvalidArgument},
		{name: "deleted relative", archive: valid, deleted: `["etc/passwd"]`,
			want: []string{DeletedFilesFile, `"etc/passwd"`, "not absolute"}, kind: errdefs.ErrInvalidArgument},
		{name: "deleted root", archive: valid, deleted: `["/"]`,
			want: []string{DeletedFilesFile, "container root"}, kind: errdefs.ErrInvalidArgument},
		{name: "deleted not json", archive: valid, deleted: `{"a":1}`,
			want: []string{DeletedFilesFile, "JSON array"}, kind: errdefs.ErrDataLoss},
		{name: "deleted through symlink", archive: valid, deleted: `["/a/secret"]`,
			setup: func(rootfs, outside string) { must(t, os.Symlink(outside, filepath.Join(rootfs, "a"))) },
			want:  []string{DeletedFilesFile, `"/a/secret"`, "symlink"}, kind: errdefs.ErrInvalidArgument, touched: true},
		{name: "opaque without dir entry", archive: valid, opaque: `["/etc"]`,
			want: []string{OpaqueDirsFile, `"/etc"`}, kind: errdefs.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.limit != 0 {
				old := maxEntrySize
				maxEntrySize = tc.limit
				defer func() { maxEntrySize = old }()
			}
			base := t.TempDir()
			outside := filepath.Join(base, "outside")
			mustWrite(t, filepath.Join(outside, "secret"), "secret", 0o600)
			mustWrite(t, filepath.Join(outside, "etc", "passwd"), "host", 0o644)
			rootfs := filepath.Join(base, "rootfs")
			mustWrite(t, filepath.Join(rootfs, "etc", "passwd"), "root:x:0:0::/root:/bin/sh\n", 0o644)
			if tc.setup != nil {
				tc.setup(rootfs, outside)
			}
			src := filepath.Join(base, "checkpoint")
			mustWrite(t, filepath.Join(src, RootfsDiffFile), string(tc.archive), 0o600)
			if tc.deleted != "" {
				mustWrite(t, filepath.Join(src, DeletedFilesFile), tc.deleted, 0o600)
			}
			if tc.opaque != "" {
				mustWrite(t, filepath.Join(src, OpaqueDirsFile), tc.opaque, 0o600)
			}
			before := snapshot(t, base)
			beforeOutside := snapshot(t, outside)

			err := ApplyRootfsDiff(src, rootfs)
			if err == nil {
				t.Fatal("hostile input applied")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if !errors.Is(err, tc.kind) {
				t.Errorf("error %q is not %v", err, tc.kind)
			}
			if after := snapshot(t, outside); !reflect.DeepEqual(beforeOutside, after) {
				t.Errorf("outside the rootfs changed:\n%v\n%v", beforeOutside, after)
			}
			if !tc.touched {
				if after := snapshot(t, base); !reflect.DeepEqual(before, after) {
					t.Errorf("something was written before the input was refused:\n%v\n%v", before, after)
				}
			}
		})
	}
}

func TestApplyRootfsDiffSymlinkTargetsStayUnresolved(t *testing.T) {
	requireRoot(t)
	// An absolute symlink is normal in images; it is created, never followed,
	// and a later file at the same name replaces the link instead of writing
	// through it.
	base := t.TempDir()
	rootfs := filepath.Join(base, "rootfs")
	must(t, os.MkdirAll(rootfs, 0o755))
	must(t, os.Symlink(filepath.Join(base, "victim"), filepath.Join(rootfs, "f")))
	src := filepath.Join(base, "ck")
	mustWrite(t, filepath.Join(src, RootfsDiffFile), string(makeTar(t,
		entry{name: "abs", typ: tar.TypeSymlink, link: "/etc/passwd"},
		entry{name: "f", typ: tar.TypeReg, data: "inside"},
	)), 0o600)
	if err := ApplyRootfsDiff(src, rootfs); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(base, "victim")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("wrote through a symlink in the rootfs")
	}
	if b, _ := os.ReadFile(filepath.Join(rootfs, "f")); string(b) != "inside" {
		t.Fatalf("f = %q", b)
	}
	if l, _ := os.Readlink(filepath.Join(rootfs, "abs")); l != "/etc/passwd" {
		t.Fatalf("abs -> %q", l)
	}
}
