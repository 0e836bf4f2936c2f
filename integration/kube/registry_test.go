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
	pushThenPull(t, registryRepo, pushHandler, pullHandler, "reg")
}

// pushThenPull runs a pod of the stateful workload through pushClass until
// its on-ready checkpoint is in repo (the only tag there), then a pod of
// the same spec through pullClass, whose store is empty: it must pull the
// checkpoint and continue the first pod's counter, restored from its
// handler's own copy. Pods are named prefix-first and prefix-second.
func pushThenPull(t *testing.T, repo, pushClass, pullClass, prefix string) {
	t.Helper()
	ctx := context.Background()
	pod := func(name, class string) string {
		p := statefulPod(name)
		p.Spec.RuntimeClassName = ptr.To(class)
		return runPod(t, p)
	}
	first, second := prefix+"-first", prefix+"-second"
	pod(first, pushClass)
	before := waitAnswer(t, first, 20)
	remote, err := registry.Open(ctx, reg.Host+"/"+repo, registry.Config{HostsDir: reg.HostsDir, Credentials: reg.Credentials})
	if err != nil {
		t.Fatal(err)
	}
	if err := waitUntil(cluster.kubelet, 2*time.Minute, 250*time.Millisecond, "a checkpoint in "+repo, func() (bool, error) {
		tags, err := remote.Tags(ctx)
		return err == nil && len(tags) == 1, err
	}); err != nil {
		t.Fatal(err)
	}

	id := pod(second, pullClass)
	got := waitAnswer(t, second, 0)
	if got.Count < 20 || got.File != "written-before-checkpoint" || got.Child != "alive" {
		t.Fatalf("pod of %s %+v does not continue the checkpoint of %+v", pullClass, got, before)
	}
	st := status(t, id)
	phases, _ := st["phases_seconds"].(map[string]any)
	if st["decision"] != "restored" || phases["pull"] == nil || !strings.Contains(fmt.Sprint(st["from"]), pullClass) {
		t.Fatalf("status of %s: %v; want restored from the copy %s pulled", id, st, pullClass)
	}
}
