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
)

// optOutReadyAt is the count at which the opt-out test's workload asks for
// its checkpoint: far enough from 0 that a cold start, asked at once, is
// told apart from a restore; and an identity of its own in the store.
const optOutReadyAt = 50

// annotatedStatefulPod runs the stateful workload in a new pod on handler
// whose sandbox config carries annotations, as the kubelet passes a pod's
// metadata.annotations; it returns the container id.
func annotatedStatefulPod(t *testing.T, handler, name string, annotations map[string]string) string {
	t.Helper()
	podJSON := writeJSON(t, name+"-pod.json", map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": name + "-uid"},
		"annotations":   annotations,
		"log_directory": filepath.Join(bed.Dir, "logs", name),
		"linux":         map[string]any{},
	})
	podID := crictl(t, "runp", "--runtime", handler, podJSON)
	t.Cleanup(func() {
		bed.Crictl("stopp", podID)
		bed.Crictl("rmp", "--force", podID)
	})
	ctrJSON := writeJSON(t, name+"-app.json", map[string]any{
		"metadata": map[string]any{"name": "app"},
		"image":    map[string]any{"image": statefulRef},
		"envs":     []map[string]string{{"key": "READY_AT", "value": fmt.Sprint(optOutReadyAt)}},
		"log_path": "app.log",
		"linux":    map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"pid": 1}}},
	})
	id := crictl(t, "create", podID, ctrJSON, podJSON)
	crictl(t, "start", id)
	return id
}

// criAnswer asks the workload until it answers (a cold start listens
// only once it started), for at most 3 s: well before a cold start's
// counter could reach optOutReadyAt.
func criAnswer(t *testing.T, id string) (workloadState, error) {
	deadline := time.Now().Add(3 * time.Second)
	for {
		got, err := criQuery(t, id)
		if err == nil || time.Now().After(deadline) {
			return got, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// setHandlerOptions rewrites the snapshot handler's options file, which
// the shim reads at every container create, and puts it back at cleanup.
func setHandlerOptions(t *testing.T, body string) {
	t.Helper()
	saved, err := os.ReadFile(bed.OptionsPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bed.OptionsPath, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(bed.OptionsPath, saved, 0o600) })
}

// TestCRIOptOut is a pod's opt-out through CRI: the annotation
// gpusnap.io/restore: never on the pod sandbox (which containerd passes to
// the shim through the handler's pod_annotations) makes its container
// cold-start, although the store holds a matching checkpoint (the same
// pod without it restores) and the handler says restore = required.
func TestCRIOptOut(t *testing.T) {
	since := time.Now()
	store := filepath.Join(t.TempDir(), "store")
	handler := criHandlers[containerdconfig.RuntimeType]

	// A checkpoint of the workload, taken by the shim when it is ready.
	setHandlerOptions(t, fmt.Sprintf("store = %q\ncontrol_dir = %q\nauto_checkpoint = \"on-ready\"\n", store, controlDir))
	source := annotatedStatefulPod(t, handler, "optout-source", nil)
	deadline := time.Now().Add(60 * time.Second)
	for len(checkpointsIfAny(store)) != 1 || decisionOf(source) != "checkpointed" {
		if time.Now().After(deadline) {
			st, err := testbed.Status(source)
			t.Fatalf("source pod not checkpointed: store %v, status %v %v", checkpointsIfAny(store), st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The same pod restores from it, under restore = required: the pod's
	// pause container, on the same handler and without a checkpoint, is
	// left out of restore decisions (runp failed under required before).
	setHandlerOptions(t, fmt.Sprintf("store = %q\ncontrol_dir = %q\nrestore = \"required\"\n", store, controlDir))
	t.Run("without the annotation the pod restores", func(t *testing.T) {
		id := annotatedStatefulPod(t, handler, "optout-control", nil)
		got, err := criAnswer(t, id)
		if st := statusOf(t, id); st["decision"] != "restored" || err != nil || got.Count < optOutReadyAt {
			t.Fatalf("control pod: status %v, workload %+v (%v): the checkpoint does not match, so the opt-out below proves nothing", st, got, err)
		}
	})

	t.Run("gpusnap.io/restore: never cold-starts", func(t *testing.T) {
		id := annotatedStatefulPod(t, handler, "optout-never", map[string]string{"gpusnap.io/restore": "never"})
		got, err := criAnswer(t, id)
		if err != nil {
			t.Fatalf("opted-out pod does not answer: %v", err)
		}
		// Its counter starts from zero: a restored one goes on from the
		// checkpoint's, which is at least optOutReadyAt.
		if got.Count >= optOutReadyAt {
			t.Errorf("opted-out workload counts from %d, as if restored", got.Count)
		}
		st := statusOf(t, id)
		if reason := fmt.Sprint(st["reason"]); st["decision"] != "cold-start" || !strings.Contains(reason, "opted out") ||
			!strings.Contains(reason, "gpusnap.io/restore") {
			t.Errorf("opted-out pod status: %v", st)
		}
		if _, err := os.Stat(filepath.Join(hostControl, id, "restore-complete")); err == nil {
			t.Errorf("opted-out pod has a restore-complete file")
		}
		var found []events.Event
		evts, err := events.Read(eventsDir, since)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evts {
			if e.ContainerID == id {
				found = append(found, e)
			}
		}
		if len(found) != 1 || found[0].Kind != events.KindRestore || found[0].Outcome != events.OutcomeColdStart ||
			found[0].ReasonCode != events.ReasonOptedOut || found[0].Namespace != "k8s.io" {
			t.Errorf("events of the opted-out container: %+v", found)
		}
		if n := len(checkpointsIfAny(store)); n != 1 {
			t.Errorf("store holds %d checkpoints, want still 1", n)
		}
	})
}
