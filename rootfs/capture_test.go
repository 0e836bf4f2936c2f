package rootfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

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

func TestCaptureDiffNoChanges(t *testing.T) {
	up, ck := t.TempDir(), t.TempDir()
	if err := CaptureDiff(up, ck); err != nil {
		t.Fatal(err)
	}
	if got := readList(t, filepath.Join(ck, DeletedFilesFile)); len(got) != 0 {
		t.Errorf("deleted.files = %q", got)
	}
	if _, err := os.Stat(filepath.Join(ck, OpaqueDirsFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("opaque.dirs written without opaque dirs")
	}
	rootfs := t.TempDir()
	if err := ApplyDiff(ck, rootfs); err != nil {
		t.Fatal(err)
	}
	// A checkpoint without a diff at all (no overlay rootfs) applies as nothing.
	if err := ApplyDiff(t.TempDir(), rootfs); err != nil {
		t.Fatal(err)
	}
}

func TestCaptureDiffRefusesRedirectDir(t *testing.T) {
	requireRoot(t)
	up := t.TempDir()
	must(t, os.Mkdir(filepath.Join(up, "renamed"), 0o755))
	if err := unix.Lsetxattr(filepath.Join(up, "renamed"), "trusted.overlay.redirect", []byte("/orig"), 0); err != nil {
		t.Skipf("cannot set trusted xattrs here: %v", err)
	}
	ck := t.TempDir()
	err := CaptureDiff(up, ck)
	if err == nil || !strings.Contains(err.Error(), "redirect") {
		t.Fatalf("err = %v, want a redirect_dir refusal", err)
	}
	if _, err := os.Stat(filepath.Join(ck, DiffFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Error("partial rootfs-diff.tar left behind")
	}
}
