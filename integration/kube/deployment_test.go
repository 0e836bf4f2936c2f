package kube

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// deploymentReadyAt is when the Deployment's workload asks for its
// checkpoint; the env var also gives it an identity of its own in the store.
const deploymentReadyAt = 25

// statefulDeployment runs the stateful workload through RuntimeClass
// snapshot with no nodeName: the scheduler places its pods.
func statefulDeployment(name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	pod := statefulPod("", corev1.EnvVar{Name: "READY_AT", Value: fmt.Sprint(deploymentReadyAt)})
	pod.Spec.NodeName = ""
	pod.Spec.RestartPolicy = corev1.RestartPolicyAlways
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: pod.Spec},
		},
	}
}

// runningPods lists the Deployment's pods whose container runs, by name,
// with their container's runtime id.
func runningPods(ctx context.Context, name string) (map[string]string, error) {
	pods, err := cluster.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		return nil, err
	}
	running := map[string]string{}
	var waiting []string
	for _, p := range pods.Items {
		if p.Spec.NodeName != nodeName {
			waiting = append(waiting, p.Name+" not scheduled")
			continue
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Running != nil && cs.ContainerID != "" {
				_, id, _ := strings.Cut(cs.ContainerID, "://")
				running[p.Name] = id
			} else if w := cs.State.Waiting; w != nil {
				waiting = append(waiting, fmt.Sprintf("%s waiting: %s: %s", p.Name, w.Reason, w.Message))
			} else if term := cs.State.Terminated; term != nil {
				return nil, fmt.Errorf("pod %s: container terminated: %s (exit %d): %s", p.Name, term.Reason, term.ExitCode, term.Message)
			}
		}
	}
	if len(waiting) > 0 {
		return running, fmt.Errorf("%s", strings.Join(waiting, "; "))
	}
	return running, nil
}

// waitReplicas waits until n of the Deployment's pods run and returns them.
func waitReplicas(t *testing.T, name string, n int) map[string]string {
	t.Helper()
	ctx := context.Background()
	var running map[string]string
	err := waitUntil(cluster.kubelet, 2*time.Minute, 250*time.Millisecond, fmt.Sprintf("%d replicas of %s running", n, name), func() (bool, error) {
		var err error
		running, err = runningPods(ctx, name)
		return len(running) == n && err == nil, err
	})
	if err != nil {
		t.Fatalf("%v\nevents:\n%s", err, deploymentEvents(name))
	}
	return running
}

// deploymentEvents lists the events of a Deployment, its ReplicaSets and
// pods, for failure messages.
func deploymentEvents(name string) string {
	list, err := cluster.Client.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, e := range list.Items {
		if strings.HasPrefix(e.InvolvedObject.Name, name) {
			fmt.Fprintf(&b, "  %s %s/%s %s: %s\n", e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
		}
	}
	return b.String()
}

// TestDeploymentScaleRestores is the RuntimeClass story with the
// controllers: a Deployment of one replica cold-starts its pod, which the
// shim checkpoints once ready; scaled to two, the ReplicaSet's new pod,
// placed by the scheduler, is restored from that checkpoint and continues
// its state.
func TestDeploymentScaleRestores(t *testing.T) {
	ctx := context.Background()
	const name = "stateful-deploy"
	deployments := cluster.Client.AppsV1().Deployments("default")
	storeBefore := checkpointNames(t)
	if _, err := deployments.Create(ctx, statefulDeployment(name, 1), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteDeployment(t, name, storeBefore) })

	var firstPod, first string
	for p, id := range waitReplicas(t, name, 1) {
		firstPod, first = p, id
	}
	if st := status(t, first); st["decision"] != "cold-start" && st["decision"] != "checkpointed" {
		t.Fatalf("first replica %s: status %v, want a cold start", firstPod, st)
	}
	var ck string
	if err := waitUntil(cluster.kubelet, 2*time.Minute, 200*time.Millisecond, "the first replica's checkpoint", func() (bool, error) {
		added := newCheckpoints(t, storeBefore)
		if len(added) == 1 {
			ck = added[0]
		}
		return len(added) == 1 && strings.Contains(readFile(filepath.Join(hostControl, first, "snapshot-status")), `"checkpointed"`), nil
	}); err != nil {
		t.Fatalf("%v; snapshot-status: %s", err, readFile(filepath.Join(hostControl, first, "snapshot-status")))
	}
	before := waitAnswer(t, firstPod, deploymentReadyAt)
	t.Logf("first replica %s (%s) checkpointed as %s, answers %+v", firstPod, first, ck, before)

	if _, err := deployments.Patch(ctx, name, types.MergePatchType, []byte(`{"spec":{"replicas":2}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := waitReplicas(t, name, 2)
	var secondPod, second string
	for p, id := range pods {
		if p != firstPod {
			secondPod, second = p, id
		}
	}
	if second == "" || pods[firstPod] != first {
		t.Fatalf("after scaling: %v; the first replica %s (%s) should still run", pods, firstPod, first)
	}
	if st := status(t, second); st["decision"] != "restored" || st["checkpoint"] != ck {
		t.Fatalf("second replica %s: status %v, want restored from %s", secondPod, st, ck)
	}
	got := waitAnswer(t, secondPod, 0)
	// The checkpoint was taken once the counter reached deploymentReadyAt;
	// a cold start would count from 0.
	if got.Count < deploymentReadyAt || got.File != "written-before-checkpoint" || got.Child != "alive" {
		t.Fatalf("second replica state %+v does not continue the checkpoint", got)
	}
	if added := newCheckpoints(t, storeBefore); len(added) != 1 {
		t.Fatalf("checkpoints added: %v, want only %s", added, ck)
	}
	t.Logf("second replica %s (%s) restored, answers %+v", secondPod, second, got)
}

// checkpointNames lists the store's checkpoints by name.
func checkpointNames(t *testing.T) map[string]bool {
	names := map[string]bool{}
	for _, ck := range checkpoints(t) {
		names[ck.Name] = true
	}
	return names
}

// newCheckpoints lists the checkpoints not in before.
func newCheckpoints(t *testing.T, before map[string]bool) []string {
	var added []string
	for name := range checkpointNames(t) {
		if !before[name] {
			added = append(added, name)
		}
	}
	sort.Strings(added)
	return added
}

// deleteDeployment deletes the Deployment and its pods, waits until they
// are gone, and removes the checkpoints the test added, so that the other
// tests find the store as they would without this one.
func deleteDeployment(t *testing.T, name string, storeBefore map[string]bool) {
	ctx := context.Background()
	err := cluster.Client.AppsV1().Deployments("default").Delete(ctx, name,
		metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting deployment %s: %v", name, err)
	}
	if err := waitUntil(cluster.kubelet, 2*time.Minute, 250*time.Millisecond, "deployment "+name+" and its pods gone", func() (bool, error) {
		pods, err := cluster.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false, err
		}
		_, derr := cluster.Client.AppsV1().Deployments("default").Get(ctx, name, metav1.GetOptions{})
		return len(pods.Items) == 0 && apierrors.IsNotFound(derr), fmt.Errorf("%d pods left, deployment: %v", len(pods.Items), derr)
	}); err != nil {
		t.Error(err)
	}
	added := newCheckpoints(t, storeBefore)
	if len(added) == 0 {
		return
	}
	s, err := storage.Open(store)
	if err != nil {
		t.Error(err)
		return
	}
	for _, name := range added {
		if err := s.Remove(name); err != nil {
			t.Errorf("removing checkpoint %s: %v", name, err)
		}
	}
}
