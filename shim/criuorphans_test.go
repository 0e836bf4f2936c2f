package shim

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// fakeProc writes a /proc entry with a stat line and a command line.
func fakeProc(t *testing.T, root string, pid int, stat, cmdline string) {
	t.Helper()
	dir := filepath.Join(root, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cmdline"), []byte(cmdline), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCRIUOrphans: only the shim's children running CRIU's restore code
// count, whatever their command name holds; the shim's own CRIU (a
// version query), other children and CRIU's helpers under a live CRIU do
// not.
func TestCRIUOrphans(t *testing.T) {
	root := t.TempDir()
	const shim = 100
	fakeProc(t, root, 201, "201 (criu) S 100 201 201 0", "criu: restore --rpc\x00")
	fakeProc(t, root, 202, "202 (criu) S 300 202 202 0", "criu: restore --rpc\x00")    // under a live CRIU
	fakeProc(t, root, 203, "203 (criu) S 100 203 203 0", "criu\x00swrk\x003\x00")      // the shim's own CRIU
	fakeProc(t, root, 204, "204 (a (b) c) S 100 204 204 0", "criu: restore --rpc\x00") // spaces and ')' in the name
	fakeProc(t, root, 205, "205 (stateful) S 100 205 205 0", "/usr/bin/stateful\x00")  // restored in full
	if err := os.MkdirAll(filepath.Join(root, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	got := criuOrphans(root, shim)
	slices.Sort(got)
	if !slices.Equal(got, []int{201, 204}) {
		t.Fatalf("criuOrphans = %v, want [201 204]", got)
	}
	if parentOf(filepath.Join(root, "missing")) != -1 {
		t.Fatal("parentOf of a missing process is not -1")
	}
}
