package integration

import (
	"fmt"
	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// storesDir holds the stores of the CRI handlers below.
var storesDir string

// criHandlerOptions are the extra CRI runtime handlers (what RuntimeClasses
// name) for the checkpoint/restore tests, each with its own store.
func criHandlerOptions(stores string) map[string]string {
	storesDir = stores
	return map[string]string{
		"snap-ready": fmt.Sprintf("store = %q\ncontrol_dir = %q\nauto_checkpoint = \"on-ready\"\n",
			filepath.Join(stores, "ready"), controlDir),
	}
}

// statefulPod runs the stateful workload in a new pod on handler and
// returns the container id.
func statefulPod(t *testing.T, handler, name string) string {
	t.Helper()
	return statefulPodOn(t, bed, handler, name)
}

// statefulPodOn runs the stateful workload in a new pod on the handler of
// bed b and returns the container id.
func statefulPodOn(t *testing.T, b *testbed.Bed, handler, name string) string {
	t.Helper()
	podID, podJSON := runPodOn(t, b, handler, name)
	ctrJSON := writeJSON(t, "app.json", map[string]any{
		"metadata": map[string]any{"name": "app"},
		"image":    map[string]any{"image": statefulRef},
		"log_path": "app.log",
		// Kubernetes gives each container its own PID namespace unless the
		// pod shares one; CRIU needs to own the namespace it dumps.
		"linux": map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"pid": 1}}},
	})
	id := crictlOn(t, b, "create", podID, ctrJSON, podJSON)
	crictlOn(t, b, "start", id)
	return id
}

// criQuery asks the workload through its socket via crictl exec.
func criQuery(t *testing.T, id string) (workloadState, error) {
	return criQueryOn(bed, id)
}

// criQueryOn asks the workload on bed b through its socket via crictl exec.
func criQueryOn(b *testbed.Bed, id string) (workloadState, error) {
	out, err := b.Crictl("exec", "--sync", id, "nc", "127.0.0.1", "8080")
	if err != nil {
		return workloadState{}, err
	}
	return parseAnswer(out)
}

// TestCRIOnReadyThenRestore is the RuntimeClass story without an operator:
// the first pod cold-starts and is checkpointed by the shim when it writes
// ready-for-checkpoint; a second pod with the same spec restores from it.
func TestCRIOnReadyThenRestore(t *testing.T) {
	store := filepath.Join(storesDir, "ready")
	first := statefulPod(t, "snap-ready", "ready-first")
	// The shim publishes the checkpoint, then records its decision.
	deadline := time.Now().Add(60 * time.Second)
	for len(checkpointsIfAny(store)) != 1 || decisionOf(first) != "checkpointed" {
		if time.Now().After(deadline) {
			st, err := testbed.Status(first)
			t.Fatalf("first pod not checkpointed: store %v, status %v %v", checkpointsIfAny(store), st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got, err := criQuery(t, first); err != nil || got.Count < 20 {
		t.Fatalf("first pod after its checkpoint: %+v, %v", got, err)
	}

	second := statefulPod(t, "snap-ready", "ready-second")
	got, err := criQuery(t, second)
	if err != nil {
		t.Fatalf("restored pod does not answer: %v", err)
	}
	// The checkpoint was taken once the counter reached 20 (READY_AT); a
	// cold start would count from 0.
	if got.Count < 20 || got.File != "written-before-checkpoint" || got.Child != "alive" {
		t.Fatalf("restored pod state %+v does not continue the checkpoint", got)
	}
	st := statusOf(t, second)
	if st["decision"] != "restored" {
		t.Fatalf("second pod status: %v", st)
	}
	checkTimeline(t, st)
	data, err := os.ReadFile(filepath.Join(hostControl, second, "restore-complete"))
	if err != nil || !strings.Contains(string(data), second) {
		t.Fatalf("restore-complete: %v: %s", err, data)
	}
	if len(checkpointsIfAny(store)) != 1 {
		t.Fatalf("the restored pod was checkpointed again")
	}

	t.Run("crictl checkpoint --export", func(t *testing.T) {
		archive := filepath.Join(t.TempDir(), "export.tar")
		crictl(t, "checkpoint", "--export="+archive, first)
		if st, err := os.Stat(archive); err != nil || st.Size() == 0 {
			t.Fatalf("export archive: %v", err)
		}
		if _, err := criQuery(t, first); err != nil {
			t.Fatalf("container stopped serving after crictl checkpoint: %v", err)
		}
	})
}

func checkpointsIfAny(store string) []string {
	entries, _ := os.ReadDir(store)
	var names []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	return names
}

// decisionOf is the decision in a container's snapshot-status, "" if none yet.
func decisionOf(id string) string {
	st, _ := testbed.Status(id)
	d, _ := st["decision"].(string)
	return d
}

// checkTimeline checks that a restore's status tells when the shim started
// and got Create and Start, in that order, all before the restore ended.
func checkTimeline(t *testing.T, st map[string]any) {
	t.Helper()
	tl, _ := st["timeline"].(map[string]any)
	var last time.Time
	for _, k := range []string{"shim_started", "create", "created", "start"} {
		at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(tl[k]))
		if err != nil || at.Before(last) {
			t.Fatalf("status timeline %v: %q is %v (%v), want it after %v", tl, k, tl[k], err, last)
		}
		last = at
	}
	if end, err := time.Parse(time.RFC3339Nano, fmt.Sprint(st["at"])); err != nil || end.Before(last) {
		t.Fatalf("status: restored at %v, before its Start at %v", st["at"], last)
	}
}
