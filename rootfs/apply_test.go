package rootfs

import (
	"archive/tar"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

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

func TestApplyDiffRejectsHostileInput(t *testing.T) {
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
			want: []string{DiffFile, "data/big"}, kind: errdefs.ErrDataLoss},
		{name: "truncated at entry boundary", archive: valid[:len(valid)-1024],
			want: []string{DiffFile, "truncated"}, kind: errdefs.ErrDataLoss},
		{name: "truncated header", archive: valid[:100],
			want: []string{DiffFile, "first header"}, kind: errdefs.ErrDataLoss},
		{name: "empty archive", archive: []byte{},
			want: []string{DiffFile, "truncated"}, kind: errdefs.ErrDataLoss},
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
			mustWrite(t, filepath.Join(src, DiffFile), string(tc.archive), 0o600)
			if tc.deleted != "" {
				mustWrite(t, filepath.Join(src, DeletedFilesFile), tc.deleted, 0o600)
			}
			if tc.opaque != "" {
				mustWrite(t, filepath.Join(src, OpaqueDirsFile), tc.opaque, 0o600)
			}
			before := snapshot(t, base)
			beforeOutside := snapshot(t, outside)

			err := ApplyDiff(src, rootfs)
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

func TestApplyDiffSymlinkTargetsStayUnresolved(t *testing.T) {
	requireRoot(t)
	// An absolute symlink is normal in images; it is created, never followed,
	// and a later file at the same name replaces the link instead of writing
	// through it.
	base := t.TempDir()
	rootfs := filepath.Join(base, "rootfs")
	must(t, os.MkdirAll(rootfs, 0o755))
	must(t, os.Symlink(filepath.Join(base, "victim"), filepath.Join(rootfs, "f")))
	src := filepath.Join(base, "ck")
	mustWrite(t, filepath.Join(src, DiffFile), string(makeTar(t,
		entry{name: "abs", typ: tar.TypeSymlink, link: "/etc/passwd"},
		entry{name: "f", typ: tar.TypeReg, data: "inside"},
	)), 0o600)
	if err := ApplyDiff(src, rootfs); err != nil {
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
