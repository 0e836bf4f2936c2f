package rootfs

import (
	"archive/tar"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzApplyDiff: whatever rootfs-diff.tar and deleted.files hold,
// applying them never writes outside the rootfs (a sentinel file beside it
// must survive, and nothing may appear next to it).
func FuzzApplyDiff(f *testing.F) {
	f.Add(makeTar(f, entry{name: "etc/app.conf", typ: tar.TypeReg, data: "x"}), []byte(`["/tmp/gone"]`))
	f.Add(makeTar(f, entry{name: "../escape", typ: tar.TypeReg, data: "x"}), []byte(`[]`))
	f.Add(makeTar(f, entry{name: "link", typ: tar.TypeSymlink, link: "/"}, entry{name: "link/etc/x", typ: tar.TypeReg, data: "x"}), []byte(`null`))
	f.Add([]byte("not a tar"), []byte(`["../../x"]`))
	f.Fuzz(func(t *testing.T, archive, deleted []byte) {
		dir := t.TempDir()
		src, rootfs := filepath.Join(dir, "src"), filepath.Join(dir, "rootfs")
		must(t, os.MkdirAll(src, 0o700))
		must(t, os.MkdirAll(filepath.Join(rootfs, "tmp"), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, "sentinel"), []byte("keep"), 0o644))
		must(t, os.WriteFile(filepath.Join(src, DiffFile), archive, 0o600))
		must(t, os.WriteFile(filepath.Join(src, DeletedFilesFile), deleted, 0o600))
		ApplyDiff(src, rootfs) // errors are fine; escapes are not
		if data, err := os.ReadFile(filepath.Join(dir, "sentinel")); err != nil || string(data) != "keep" {
			t.Fatalf("sentinel outside the rootfs changed: %q, %v", data, err)
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if name := e.Name(); name != "src" && name != "rootfs" && name != "sentinel" {
				t.Fatalf("wrote %s outside the rootfs", name)
			}
		}
		filepath.WalkDir(rootfs, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type()&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe) != 0 {
				t.Fatalf("created special file %s", strings.TrimPrefix(p, rootfs))
			}
			return nil
		})
	})
}
