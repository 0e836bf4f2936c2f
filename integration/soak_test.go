package integration

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
)

// TestSoakRestoreKill restores one checkpoint into a container, checks it
// answers with the checkpointed state, kills and deletes it, SNAPSHOT_SOAK
// times (default 20; `make soak` runs 500), and then requires the node to
// hold exactly what it held before the first cycle: mounts, shim processes,
// cgroups, network namespaces, control directories, containerd's open
// files, and no more bytes on disk under the bed.
func TestSoakRestoreKill(t *testing.T) {
	cycles := 20
	if v := os.Getenv("SNAPSHOT_SOAK"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SNAPSHOT_SOAK=%q: want a positive number of cycles", v)
		}
		cycles = n
	}
	// With prefetching on, so that its readers are part of what must not
	// leak.
	opts, store := handlerOptions(t, "prefetch_readers = 2\n")
	const src = "soak-source"
	before := checkpointWarm(t, src, opts, store)
	removeContainer(t, src)
	netns := podNetns(t, "soak")

	start := settledCensus(nil)
	t.Logf("before: %s", start)
	began := time.Now()
	for i := range cycles {
		id := fmt.Sprintf("soak-%d", i)
		if out, err := bed.Ctr("run", "-d", "--null-io", "--runtime", containerdconfig.RuntimeType, "--runtime-config-path", opts,
			"--with-ns", "network:"+netns, statefulRef, id); err != nil {
			t.Fatalf("cycle %d: ctr run: %v: %s", i, err, out)
		}
		got := waitWarm(t, id, 0)
		if st := statusOf(t, id); st["decision"] != "restored" || got.Count < before.Count || got.Child != "alive" {
			t.Fatalf("cycle %d: status %v, answer %+v, checkpoint at %+v", i, st, got, before)
		}
		removeContainer(t, id)
	}
	took := time.Since(began)
	end := settledCensus(&start)
	t.Logf("after %d restore/kill cycles in %s (%.2f s each): %s", cycles, took.Round(time.Second), took.Seconds()/float64(cycles), end)
	// Disk may shrink: containerd collects earlier tests' garbage in the
	// background. It must not grow.
	same := end
	same.DiskBytes = start.DiskBytes
	if same != start || end.DiskBytes > start.DiskBytes {
		t.Fatalf("the node changed over %d cycles:\nbefore: %s\nafter:  %s", cycles, start, end)
	}
}

// removeContainer kills a container's task with SIGKILL and deletes the task
// and the container (with its snapshot).
func removeContainer(t *testing.T, id string) {
	t.Helper()
	bed.Ctr("tasks", "kill", "-s", "SIGKILL", id)
	waitTaskStatus(t, id, "STOPPED")
	if out, err := bed.Ctr("tasks", "delete", id); err != nil {
		t.Fatalf("ctr tasks delete %s: %v: %s", id, err, out)
	}
	if out, err := bed.Ctr("containers", "delete", id); err != nil {
		t.Fatalf("ctr containers delete %s: %v: %s", id, err, out)
	}
}

// settledCensus counts the bed's holdings once they stop changing (shims
// exit and containerd closes their connections shortly after a delete), or
// as soon as they equal want.
func settledCensus(want *testbed.Census) testbed.Census {
	last := bed.Count()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		time.Sleep(500 * time.Millisecond)
		now := bed.Count()
		if (want != nil && now == *want) || (want == nil && now == last) {
			return now
		}
		last = now
	}
	return last
}
