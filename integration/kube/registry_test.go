package kube

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	nodev1 "k8s.io/api/node/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
	"github.com/gpusnap/containerd-shim-snapshot-v2/registry"
)

// Two more runtime handlers of the bed, each with a store of its own and
// the test registry: pushHandler checkpoints pods on ready and pushes the
// checkpoints; pullHandler's store starts empty, as a node's that never
// saw the checkpoint, and pulls on demand.
const (
	pushHandler  = "snapshot-push"
	pullHandler  = "snapshot-pull"
	registryRepo = "checkpoints/stateful"
)

// registryHandlers are the bed's handler options for them.
func registryHandlers(dir string) map[string]string {
	regOpts := fmt.Sprintf("registry = %q\nregistry_hosts_dir = %q\nregistry_credentials = %q\n",
		reg.Host+"/"+registryRepo, reg.HostsDir, reg.Credentials)
	handler := func(name, extra string) string {
		return fmt.Sprintf("store = %q\ncontrol_dir = %q\n%s%s", filepath.Join(dir, "store-"+name), testbed.StatefulControlDir, regOpts, extra)
	}
	return map[string]string{
		pushHandler: handler(pushHandler, "auto_checkpoint = \"on-ready\"\npush = \"on-checkpoint\"\n"),
		pullHandler: handler(pullHandler, ""),
	}
}

// TestPodRestoresFromRegistry: through a real kubelet, a pod of one
// RuntimeClass is checkpointed on ready and its checkpoint pushed to the
// registry; a pod of another RuntimeClass, whose store is empty, pulls it
// and is restored, continuing the first pod's counter.
func TestPodRestoresFromRegistry(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{pushHandler, pullHandler} {
		rc := &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Handler: name}
		if _, err := cluster.Client.NodeV1().RuntimeClasses().Create(ctx, rc, metav1.CreateOptions{}); err != nil {
			t.Fatalf("RuntimeClass %s: %v", name, err)
		}
	}
	pod := func(name, class string) string {
		p := statefulPod(name)
		p.Spec.RuntimeClassName = ptr.To(class)
		return runPod(t, p)
	}
	pod("reg-first", pushHandler)
	before := waitAnswer(t, "reg-first", 20)
	remote, err := registry.Open(ctx, reg.Host+"/"+registryRepo, registry.Config{HostsDir: reg.HostsDir, Credentials: reg.Credentials})
	if err != nil {
		t.Fatal(err)
	}
	if err := waitUntil(cluster.kubelet, 2*time.Minute, 250*time.Millisecond, "a checkpoint in the registry", func() (bool, error) {
		tags, err := remote.Tags(ctx)
		return err == nil && len(tags) == 1, nil
	}); err != nil {
		t.Fatal(err)
	}

	id := pod("reg-second", pullHandler)
	got := waitAnswer(t, "reg-second", 0)
	if got.Count < 20 || got.File != "written-before-checkpoint" || got.Child != "alive" {
		t.Fatalf("pod of %s %+v does not continue the checkpoint of %+v", pullHandler, got, before)
	}
	st := status(t, id)
	phases, _ := st["phases_seconds"].(map[string]any)
	if st["decision"] != "restored" || phases["pull"] == nil || !strings.Contains(fmt.Sprint(st["from"]), "store-"+pullHandler) {
		t.Fatalf("status of %s: %v; want restored from the pulled copy", id, st)
	}
}
