package shim

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// fakeProc writes a /proc entry with a command line and, per thread, the
// children file.
func fakeProc(t *testing.T, root string, pid int, cmdline string, children map[int]string) {
	t.Helper()
	dir := filepath.Join(root, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cmdline"), []byte(cmdline), 0o644); err != nil {
		t.Fatal(err)
	}
	for tid, list := range children {
		task := filepath.Join(dir, "task", strconv.Itoa(tid))
		if err := os.MkdirAll(task, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(task, "children"), []byte(list), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCRIUOrphans: only the shim's children running CRIU's restore code
// count, found under any of its threads; the shim's own CRIU (a version
// query), its other children and CRIU's helpers under a live CRIU do not.
func TestCRIUOrphans(t *testing.T) {
	root := t.TempDir()
	const shim = 100
	fakeProc(t, root, shim, "containerd-shim-snapshot-v2\x00", map[int]string{100: "201 203 ", 101: "204 205", 102: ""})
	fakeProc(t, root, 201, "criu: restore --rpc\x00", nil)
	fakeProc(t, root, 300, "criu\x00swrk\x003\x00", map[int]string{300: "202"})
	fakeProc(t, root, 202, "criu: restore --rpc\x00", nil) // under a live CRIU
	fakeProc(t, root, 203, "criu\x00swrk\x003\x00", nil)   // the shim's own CRIU
	fakeProc(t, root, 204, "criu: restore --rpc\x00", nil) // reparented to another thread
	fakeProc(t, root, 205, "/usr/bin/stateful\x00", nil)   // restored in full
	got := criuOrphans(root, shim)
	slices.Sort(got)
	if !slices.Equal(got, []int{201, 204}) {
		t.Fatalf("criuOrphans = %v, want [201 204]", got)
	}
	if got := criuOrphans(root, 999); len(got) != 0 {
		t.Fatalf("criuOrphans of a missing process = %v", got)
	}
}
