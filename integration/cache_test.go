package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRestoreFromNodeLocalCache: with cache_dir set, a restore reads the
// store until `gpusnap prefetch` has copied the checkpoint into the cache,
// and the cache's copy afterwards; both restore the same state.
func TestRestoreFromNodeLocalCache(t *testing.T) {
	cache := filepath.Join(t.TempDir(), "cache")
	if err := os.Mkdir(cache, 0o700); err != nil {
		t.Fatal(err)
	}
	opts, store := handlerOptions(t, fmt.Sprintf("cache_dir = %q\n", cache))
	before := checkpointWarm(t, "cache-source", opts, store)

	restoreFrom := func(id, wantDir string) {
		t.Helper()
		runStateful(t, id, opts)
		got := waitWarm(t, id, 0)
		st := statusOf(t, id)
		if st["decision"] != "restored" || !strings.HasPrefix(fmt.Sprint(st["from"]), wantDir+"/") || got.Count < before.Count {
			t.Fatalf("%s: status %v, answer %+v; want restored from %s, from %+v on", id, st, got, wantDir, before)
		}
	}
	restoreFrom("cache-cold", store)

	out, err := exec.Command(cliPath, "--handler-config", opts, "prefetch", "--latest").CombinedOutput()
	if err != nil {
		t.Fatalf("gpusnap prefetch: %v: %s", err, out)
	}
	t.Logf("gpusnap prefetch --latest: %s", strings.TrimSpace(string(out)))
	restoreFrom("cache-warm", cache)
}
