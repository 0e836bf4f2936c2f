package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
	"github.com/gpusnap/containerd-shim-snapshot-v2/internal/testregistry"
)

// registryOptions are the handler options that reach reg's repository.
func registryOptions(reg *testregistry.Registry, repo string) string {
	return fmt.Sprintf("registry = %q\nregistry_hosts_dir = %q\nregistry_credentials = %q\n", reg.Host+"/"+repo, reg.HostsDir, reg.Credentials)
}

// TestRegistryPushAndPull: a checkpoint one handler publishes is pushed to a
// real registry (distribution, TLS from a test CA, htpasswd) in the
// background; a handler whose store is empty, as on a node that never saw
// the checkpoint, pulls it on Create and restores it. A registry that
// cannot be reached, and restore_timeout running out during the pull, each
// end in a cold start with its reason and leave the store empty.
func TestRegistryPushAndPull(t *testing.T) {
	reg := testregistry.Start(t)
	start := time.Now()
	regOpts := registryOptions(reg, "checkpoints/stateful")
	src, srcStore := handlerOptions(t, regOpts+"push = \"on-checkpoint\"\n")
	before := checkpointWarm(t, "reg-source", src, srcStore)
	name := checkpoints(t, srcStore)[0].Name
	pushed := waitTransfer(t, "reg-source", start)
	if pushed.Outcome != events.OutcomePushed || pushed.Checkpoint != name || pushed.BytesWritten == 0 || pushed.Phases["push"] == 0 {
		t.Fatalf("push event %+v, want %s pushed", pushed, name)
	}

	fresh, freshStore := handlerOptions(t, regOpts)
	runStateful(t, "reg-fresh", fresh)
	got := waitWarm(t, "reg-fresh", 0)
	if got.Count < before.Count || got.Child != "alive" {
		t.Fatalf("restored %+v does not continue from %+v", got, before)
	}
	st := statusOf(t, "reg-fresh")
	phases, _ := st["phases_seconds"].(map[string]any)
	if st["decision"] != events.OutcomeRestored || st["checkpoint"] != name || phases["pull"] == nil {
		t.Fatalf("status %v: want restored from %s after a pull", st, name)
	}
	if cks := checkpoints(t, freshStore); len(cks) != 1 || cks[0].Name != name {
		t.Fatalf("the fresh store holds %v after the pull", cks)
	}
	if pulled := waitTransfer(t, "reg-fresh", start); pulled.Outcome != events.OutcomePulled || pulled.BytesRead == 0 {
		t.Errorf("pull event %+v", pulled)
	}

	t.Run("a second containerd restores it", func(t *testing.T) {
		opts, store := handlerOptions(t, regOpts)
		restoreOnNode(t, startBed(t, 2, nil), "reg-node", opts, before.Count)
		if cks := checkpoints(t, store); len(cks) != 1 || cks[0].Name != name {
			t.Fatalf("the second containerd's store holds %v", cks)
		}
	})

	t.Run("through CRI from one node to another", func(t *testing.T) {
		// A pod's spec is not a ctr container's, so its checkpoint is
		// its own: a pod on one node is checkpointed on ready and
		// pushed, and a pod of the same spec on another pulls it.
		repo := registryOptions(reg, "checkpoints/pods")
		handler := func(extra string) map[string]string {
			return map[string]string{"snap-registry": fmt.Sprintf("store = %q\ncontrol_dir = %q\n%s%s", filepath.Join(t.TempDir(), "store"), controlDir, repo, extra)}
		}
		since := time.Now()
		first := startBed(t, 2, handler("auto_checkpoint = \"on-ready\"\npush = \"on-checkpoint\"\n"))
		source := statefulPodOn(t, first, "snap-registry", "reg-pod-source")
		if pushed := waitTransfer(t, source, since); pushed.Outcome != events.OutcomePushed {
			t.Fatalf("push of the pod's checkpoint: %+v", pushed)
		}
		if got, err := criQueryOn(first, source); err != nil || got.Count < 20 {
			t.Fatalf("the source pod after its checkpoint: %+v, %v", got, err)
		}
		// The first node's pods go before the second node starts: CRI's
		// cgroups of both live under k8s.io, and what a node leaves
		// behind is checked when it stops.
		crictlOn(t, first, "rmp", "--all", "--force")
		// The workload is checkpointed once its counter reaches 20
		// (READY_AT); a cold start counts from 0.
		restorePodOnNode(t, startBed(t, 3, handler("")), "snap-registry", 20)
	})

	t.Run("with cache_dir the pull lands there, the store stays as it was", func(t *testing.T) {
		cache := t.TempDir()
		opts, store := handlerOptions(t, regOpts+fmt.Sprintf("cache_dir = %q\n", cache))
		runStateful(t, "reg-cache", opts)
		if got := waitWarm(t, "reg-cache", 0); got.Count < before.Count {
			t.Fatalf("reg-cache was not restored: %+v", got)
		}
		if st := statusOf(t, "reg-cache"); st["decision"] != events.OutcomeRestored || !strings.HasPrefix(fmt.Sprint(st["from"]), cache) {
			t.Fatalf("status %v: want restored from %s", st, cache)
		}
		if cks := checkpoints(t, cache); len(cks) != 1 || cks[0].Name != name {
			t.Fatalf("cache_dir holds %v", cks)
		}
		if entries, _ := os.ReadDir(store); len(entries) != 0 {
			t.Fatalf("the store holds %v", entries)
		}
	})

	t.Run("pull = background cold-starts and pulls for the next container", func(t *testing.T) {
		since := time.Now()
		opts, store := handlerOptions(t, regOpts+"pull = \"background\"\n")
		runStateful(t, "reg-bg", opts)
		if got := waitWarm(t, "reg-bg", 0); got.Count >= before.Count {
			t.Fatalf("reg-bg was restored: %+v", got)
		}
		if ev := restoreEvent(t, "reg-bg", since); ev.Outcome != events.OutcomeColdStart || ev.ReasonCode != events.ReasonNoCheckpoint ||
			!strings.Contains(ev.Reason, "pulling "+name+" from "+reg.Host) {
			t.Fatalf("restore event %+v, want a cold start for no-checkpoint that names the background pull", ev)
		}
		if pulled := waitTransfer(t, "reg-bg", since); pulled.Outcome != events.OutcomePulled {
			t.Fatalf("background pull %+v", pulled)
		}
		runStateful(t, "reg-bg-next", opts)
		if got := waitWarm(t, "reg-bg-next", 0); got.Count < before.Count {
			t.Fatalf("the next container was not restored: %+v", got)
		}
		if cks := checkpoints(t, store); len(cks) != 1 || cks[0].Name != name {
			t.Fatalf("store after the background pull: %v", cks)
		}
	})

	for _, tc := range []struct{ name, id, opts, code string }{
		{"a registry that is not there", "reg-dead", registryOptions(&testregistry.Registry{Host: testregistry.FreeLoopbackAddr(t),
			HostsDir: reg.HostsDir, Credentials: reg.Credentials}, "checkpoints/stateful"), events.ReasonRegistryError},
		{"restore_timeout running out", "reg-timeout", regOpts + "restore_timeout = \"1ms\"\n", events.ReasonPullTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			since := time.Now()
			opts, store := handlerOptions(t, tc.opts)
			runStateful(t, tc.id, opts)
			if got := waitWarm(t, tc.id, 0); got.Count >= before.Count {
				t.Fatalf("%s was restored: %+v", tc.id, got)
			}
			if ev := restoreEvent(t, tc.id, since); ev.Outcome != events.OutcomeColdStart || ev.ReasonCode != tc.code {
				t.Fatalf("restore event %+v, want a cold start for %s", ev, tc.code)
			}
			if entries, _ := os.ReadDir(store); len(entries) != 0 {
				t.Fatalf("the store keeps %v after a failed pull", entries)
			}
		})
	}
}

// waitTransfer waits for the registry transfer event of container id.
func waitTransfer(t *testing.T, id string, since time.Time) events.Event {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if e, ok := eventOf(t, events.KindTransfer, id, since); ok {
			return e
		}
	}
	t.Fatalf("no transfer event for %s in %s", id, eventsDir)
	return events.Event{}
}

// startBed starts private containerd number n (2, 3, ...; the suite's
// own is the first), as on a node that never saw a checkpoint: its own
// root, socket, namespace and CNI bridge, with the suite's images and shim,
// and the CRI runtime handlers given (name to options TOML).
func startBed(t *testing.T, n int, handlers map[string]string) *testbed.Bed {
	t.Helper()
	b, err := testbed.Start(testbed.Config{Dir: filepath.Join(t.TempDir(), "bed"), ShimPath: bed.ShimPath, Handlers: handlers,
		Namespace: fmt.Sprintf("snapshot-node%d", n), Bridge: fmt.Sprintf("snaptest%d", n), Subnet: fmt.Sprintf("10.88.%d.0/24", 77+n),
		Env: []string{"SNAPSHOT_EVENTS_DIR=" + eventsDir}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if left, err := b.Stop(); err != nil || len(left) > 0 {
			t.Errorf("stopping containerd %d: %v; left behind:\n  %s", n, err, strings.Join(left, "\n  "))
		}
	})
	if err := b.ImportImages(filepath.Dir(bed.ShimPath)); err != nil {
		t.Fatal(err)
	}
	return b
}

// restorePodOnNode runs the workload in a pod of the CRI handler on node
// b, as a RuntimeClass would, and checks that it was restored after a
// pull: it continues from at least count, and its status says so.
func restorePodOnNode(t *testing.T, b *testbed.Bed, handler string, count int) {
	t.Helper()
	id := statefulPodOn(t, b, handler, "reg-pod")
	var got workloadState
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got, err = criQueryOn(b, id); err == nil {
			break
		}
	}
	if err != nil || got.Count < count || got.Child != "alive" {
		t.Fatalf("the pod on the second containerd %+v (%v) does not continue from %d", got, err, count)
	}
	st := statusOf(t, id)
	phases, _ := st["phases_seconds"].(map[string]any)
	if st["decision"] != events.OutcomeRestored || phases["pull"] == nil {
		t.Fatalf("status of the pod on the second containerd: %v", st)
	}
}

// restoreOnNode runs the workload on node b with ctr, with the handler
// options at opts, and checks that it was restored after a pull: it
// continues from at least count, and its status says so.
func restoreOnNode(t *testing.T, b *testbed.Bed, id, opts string, count int) {
	t.Helper()
	netns := podNetns(t, id)
	out, err := b.Ctr("run", "-d", "--runtime", containerdconfig.RuntimeType, "--runtime-config-path", opts,
		"--with-ns", "network:"+netns, statefulRef, id)
	t.Cleanup(func() {
		b.Ctr("tasks", "delete", "--force", id)
		b.Ctr("containers", "delete", id)
	})
	if err != nil {
		t.Fatalf("ctr run on the second containerd: %v: %s", err, out)
	}
	got := waitWarmOn(t, b, id, 0)
	if got.Count < count || got.Child != "alive" {
		t.Fatalf("restored %+v does not continue from %d", got, count)
	}
	st := statusOf(t, id)
	phases, _ := st["phases_seconds"].(map[string]any)
	if st["decision"] != events.OutcomeRestored || phases["pull"] == nil {
		t.Fatalf("status on the second containerd: %v", st)
	}
}
