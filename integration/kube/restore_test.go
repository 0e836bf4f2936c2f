package kube

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// hostControl is where the shim keeps each container's control directory
// on the node.
const hostControl = "/run/containerd-shim-snapshot"

// statefulPod is a pod of the stateful workload through RuntimeClass
// snapshot, bound to the node by itself (nodeName, no scheduling), using
// the locally imported image.
func statefulPod(name string, env ...corev1.EnvVar) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": "stateful"}},
		Spec: corev1.PodSpec{
			NodeName:         nodeName,
			RuntimeClassName: ptr.To(handler),
			// Service links put one set of variables per Service into the
			// environment, which is part of the checkpoint identity.
			EnableServiceLinks:            ptr.To(false),
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To(int64(5)),
			Containers: []corev1.Container{{
				Name:            "app",
				Image:           testbed.StatefulRef,
				ImagePullPolicy: corev1.PullNever,
				Env:             env,
			}},
		},
	}
}

// runPod creates the pod and waits until its container runs; it returns
// the container's runtime id.
func runPod(t *testing.T, pod *corev1.Pod) string {
	t.Helper()
	ctx := context.Background()
	pods := cluster.Client.CoreV1().Pods(pod.Namespace)
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating pod %s: %v", pod.Name, err)
	}
	var id, podIP string
	err := waitUntil(cluster.kubelet, 2*time.Minute, 250*time.Millisecond, "pod "+pod.Name+" running", func() (bool, error) {
		p, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
			return false, fmt.Errorf("pod %s ended: %s: %s %s", pod.Name, p.Status.Phase, p.Status.Reason, p.Status.Message)
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Running != nil && cs.ContainerID != "" {
				_, id, _ = strings.Cut(cs.ContainerID, "://")
				podIP = p.Status.PodIP
				return true, nil
			}
			if w := cs.State.Waiting; w != nil {
				return false, fmt.Errorf("container waiting: %s: %s", w.Reason, w.Message)
			}
			if term := cs.State.Terminated; term != nil {
				return false, fmt.Errorf("container terminated: %s (exit %d): %s", term.Reason, term.ExitCode, term.Message)
			}
		}
		return false, fmt.Errorf("phase %s, conditions %v", p.Status.Phase, p.Status.Conditions)
	})
	if err != nil {
		t.Fatalf("%v\nevents:\n%s", err, events(pod.Namespace, pod.Name))
	}
	// Pods have their own network namespace, on the bed's CNI bridge.
	if ip := net.ParseIP(podIP); ip == nil || !podSubnet.Contains(ip) {
		t.Fatalf("pod %s has IP %q, not one of the bed's CNI subnet %s", pod.Name, podIP, podSubnet)
	}
	return id
}

// podSubnet is the test bed's CNI bridge subnet (testbed's default).
var podSubnet = &net.IPNet{IP: net.IPv4(10, 88, 77, 0), Mask: net.CIDRMask(24, 32)}

// events lists the events of an object, for failure messages.
func events(ns, name string) string {
	list, err := cluster.Client.CoreV1().Events(ns).List(context.Background(),
		metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, e := range list.Items {
		fmt.Fprintf(&b, "  %s %s: %s\n", e.Type, e.Reason, e.Message)
	}
	return b.String()
}

type workloadState = testbed.StatefulAnswer

// query asks the workload over its TCP socket, from inside its container,
// through kubectl-style exec (apiserver -> kubelet -> CRI).
func query(pod string) (workloadState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := cluster.Exec(ctx, "default", pod, "app", "nc", "127.0.0.1", "8080")
	if err != nil {
		return workloadState{}, err
	}
	return testbed.ParseStatefulAnswer(out)
}

// waitAnswer waits until the workload answers with at least count.
func waitAnswer(t *testing.T, pod string, count int) workloadState {
	t.Helper()
	var got workloadState
	err := waitUntil(cluster.kubelet, time.Minute, 200*time.Millisecond, pod+" answers count>="+strconv.Itoa(count), func() (bool, error) {
		var err error
		got, err = query(pod)
		return err == nil && got.Count >= count, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// status reads the shim's snapshot-status of a container.
func status(t *testing.T, id string) map[string]any {
	t.Helper()
	st, err := testbed.Status(id)
	if err != nil {
		t.Fatalf("no snapshot-status for %s: %v", id, err)
	}
	return st
}

func checkpoints(t *testing.T) []*storage.Checkpoint {
	t.Helper()
	if _, err := os.Stat(store); os.IsNotExist(err) {
		return nil
	}
	s, err := storage.Open(store)
	if err != nil {
		t.Fatal(err)
	}
	cks, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	return cks
}

// TestPodCheckpointRestore is the RuntimeClass story through a real kubelet:
// the first pod cold-starts and is checkpointed by the shim once it writes
// ready-for-checkpoint; a second pod with the same spec is restored from
// that checkpoint and continues its counter; a pod with another spec
// cold-starts with the reason; deleting the pods leaves nothing behind.
func TestPodCheckpointRestore(t *testing.T) {
	first := runPod(t, statefulPod("stateful-first"))
	if err := waitUntil(cluster.kubelet, 2*time.Minute, 200*time.Millisecond, "a checkpoint in the store", func() (bool, error) {
		return len(checkpoints(t)) == 1, nil
	}); err != nil {
		t.Fatalf("%v; snapshot-status: %s", err, readFile(filepath.Join(hostControl, first, "snapshot-status")))
	}
	// The status file is written right after the checkpoint is published.
	if err := waitUntil(nil, 10*time.Second, 100*time.Millisecond, "status checkpointed", func() (bool, error) {
		return strings.Contains(readFile(filepath.Join(hostControl, first, "snapshot-status")), `"checkpointed"`), nil
	}); err != nil {
		t.Fatalf("first pod: %v: %v", err, readFile(filepath.Join(hostControl, first, "snapshot-status")))
	}
	before := waitAnswer(t, "stateful-first", 20)
	t.Logf("first pod %s checkpointed, answers %+v", first, before)

	second := runPod(t, statefulPod("stateful-second"))
	if st := status(t, second); st["decision"] != "restored" {
		t.Fatalf("second pod %s status: %v", second, st)
	}
	got := waitAnswer(t, "stateful-second", 0)
	// The checkpoint was taken once the counter reached 20 (READY_AT); a
	// cold start would count from 0.
	if got.Count < 20 || got.File != "written-before-checkpoint" || got.Child != "alive" {
		t.Fatalf("restored pod state %+v does not continue the checkpoint", got)
	}
	data := readFile(filepath.Join(hostControl, second, "restore-complete"))
	if !strings.Contains(data, second) {
		t.Fatalf("restore-complete of %s: %s", second, data)
	}
	if n := len(checkpoints(t)); n != 1 {
		t.Fatalf("%d checkpoints in the store after the restore, want 1", n)
	}
	t.Logf("second pod %s restored, answers %+v", second, got)

	t.Run("different env cold-starts with the reason", func(t *testing.T) {
		// READY_AT far away: this pod never asks for a checkpoint.
		other := runPod(t, statefulPod("stateful-other-env", corev1.EnvVar{Name: "READY_AT", Value: "1000000"}))
		got := waitAnswer(t, "stateful-other-env", 0)
		st := status(t, other)
		reason, _ := st["reason"].(string)
		if st["decision"] != "cold-start" || !strings.Contains(reason, "env") || !strings.Contains(reason, "READY_AT=1000000") {
			t.Fatalf("status: %v", st)
		}
		if got.Count >= before.Count {
			t.Fatalf("cold-started workload counts from %d, as if restored", got.Count)
		}
		t.Logf("reason: %s", reason)
	})

	t.Run("deleting the pods leaves nothing behind", func(t *testing.T) {
		ctx := context.Background()
		if err := cluster.DeleteAllPods(ctx, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		// The kubelet stops the sandboxes at once and removes them (and so
		// the containers, their shims and control directories) in its
		// garbage collection, once a minute.
		if err := cluster.WaitSandboxesRemoved(150 * time.Second); err != nil {
			t.Fatal(err)
		}
		left := append(cluster.Bed.Leftovers(), cluster.Leftovers()...)
		for _, id := range []string{first, second} {
			if _, err := os.Stat(filepath.Join(hostControl, id)); err == nil {
				left = append(left, "control directory of "+id)
			}
		}
		if len(left) > 0 {
			t.Fatalf("left behind after deleting the pods:\n  %s", strings.Join(left, "\n  "))
		}
		if n := len(checkpoints(t)); n != 1 {
			t.Fatalf("%d checkpoints in the store after deleting the pods, want 1", n)
		}
	})
}

func readFile(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(data)
}
