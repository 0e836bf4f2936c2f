package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

func TestPrefetch(t *testing.T) {
	ts := newTestStore(t)
	cache := filepath.Join(t.TempDir(), "cache")
	if err := os.Mkdir(cache, 0o700); err != nil {
		t.Fatal(err)
	}
	saved := verifiedDir
	verifiedDir = t.TempDir()
	t.Cleanup(func() { verifiedDir = saved })
	out, _ := mustRun(t, exitOK, "--store", ts.root, "prefetch", "--cache", cache, ts.web1)
	contains(t, "prefetch", out, ts.web1+": "+ts.human(t, ts.web1)+" in "+filepath.Join(cache, ts.web1))
	mustRun(t, exitOK, "--store", cache, "verify", ts.web1)
	// The copy was remembered as verified: a restore's VerifyCached on it
	// need not hash it.
	cs, err := storage.Open(cache)
	if err != nil {
		t.Fatal(err)
	}
	copied, err := cs.Get(ts.web1)
	if err != nil {
		t.Fatal(err)
	}
	if cached, err := copied.VerifyCached(context.Background(), verifiedDir, storage.SignaturePolicy{}, nil); err != nil || !cached {
		t.Errorf("the prefetched copy is not remembered as verified: cached=%v, %v", cached, err)
	}

	// --latest: the newest generation of every key; web1 stays as it was.
	out, _ = mustRun(t, exitOK, "--store", ts.root, "--json", "prefetch", "--cache", cache, "--latest")
	var names []string
	for _, r := range decode[[]prefetched](t, out) {
		names = append(names, r.Name)
	}
	slices.Sort(names)
	want := []string{ts.db, ts.web2}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("prefetch --latest copied %v, want %v", names, want)
	}
	out, _ = mustRun(t, exitOK, "--store", cache, "--json", "ls")
	if got := lsNames(decode[[]lsEntry](t, out)); len(got) != 3 {
		t.Errorf("cache holds %v, want web1, web2 and db", got)
	}

	// A damaged source is not copied.
	os.RemoveAll(filepath.Join(cache, ts.db))
	pages := filepath.Join(ts.root, ts.db, "checkpoint", "pages-1.img")
	if err := os.WriteFile(pages, []byte("tampered"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ = mustRun(t, exitFail, "--store", ts.root, "prefetch", "--cache", cache, ts.db)
	contains(t, "damaged source", out, ts.db+": FAILED", "does not match its manifest")

	mustRun(t, exitUsage, "--store", ts.root, "prefetch", "--cache", cache)
	mustRun(t, exitUsage, "--store", ts.root, "prefetch", "--cache", cache, "--latest", ts.web1)
	mustRun(t, exitUsage, "--store", ts.root, "prefetch", ts.web1)
}
