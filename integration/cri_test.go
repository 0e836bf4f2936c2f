package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
)

// criHandlers maps each runtime to its CRI runtime handler (what a
// Kubernetes RuntimeClass names).
var criHandlers = map[string]string{testbed.RuncRuntime: "runc", containerdconfig.RuntimeType: "snapshot"}

// writeJSON writes v as a JSON file for crictl and returns its path.
func writeJSON(t *testing.T, name string, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func podConfig(t *testing.T, name string) string {
	return writeJSON(t, "pod.json", map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": name + "-uid"},
		"log_directory": filepath.Join(bed.Dir, "logs", name),
		"linux":         map[string]any{},
	})
}

func containerConfig(t *testing.T, name string, args ...string) string {
	return writeJSON(t, name+".json", map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": busyboxRef},
		"command":  args,
		"log_path": name + ".log",
		"linux":    map[string]any{},
	})
}

// crictl runs crictl and fails the test on error.
func crictl(t *testing.T, args ...string) string {
	t.Helper()
	return crictlOn(t, bed, args...)
}

// crictlOn runs crictl against bed b and fails the test on error.
func crictlOn(t *testing.T, b *testbed.Bed, args ...string) string {
	t.Helper()
	out, err := b.Crictl(args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return strings.TrimSpace(out)
}

// inspectField reads one field of `crictl inspect[p] -o go-template`.
func inspectField(t *testing.T, verb, id, template string) string {
	return crictl(t, verb, "-o", "go-template", "--template", template, id)
}

// runPod starts a pod sandbox on the handler and removes it at cleanup.
func runPod(t *testing.T, handler, name string) (podID, podJSON string) {
	t.Helper()
	return runPodOn(t, bed, handler, name)
}

// runPodOn starts a pod sandbox on the handler of bed b and removes it at
// cleanup.
func runPodOn(t *testing.T, b *testbed.Bed, handler, name string) (podID, podJSON string) {
	t.Helper()
	podJSON = podConfig(t, name)
	podID = crictlOn(t, b, "runp", "--runtime", handler, podJSON)
	t.Cleanup(func() {
		b.Crictl("stopp", podID)
		b.Crictl("rmp", "--force", podID)
	})
	return podID, podJSON
}

// TestCRIPodTwoContainers drives a pod through CRI, the path a Kubernetes
// RuntimeClass takes: its own network namespace, two containers, exec, logs,
// update, stop and remove.
func TestCRIPodTwoContainers(t *testing.T) {
	r := sameOnBoth(t, func(t *testing.T, rt string) result {
		handler := criHandlers[rt]
		podID, podJSON := runPod(t, handler, "pod-"+handler)
		c1 := crictl(t, "create", podID, containerConfig(t, "first", "sh", "-c", "echo first started; exec sleep 600"), podJSON)
		c2 := crictl(t, "create", podID, containerConfig(t, "second", "sh", "-c", "echo second started; exec sleep 600"), podJSON)
		crictl(t, "start", c1)
		crictl(t, "start", c2)
		if rt == containerdconfig.RuntimeType && !shimRunning(testbed.ShimBinary, "k8s.io") {
			t.Fatalf("no %s serves the pod", testbed.ShimBinary)
		}

		var r result
		ip := inspectField(t, "inspectp", podID, "{{.status.network.ip}}")
		if !strings.HasPrefix(ip, "10.88.77.") {
			t.Fatalf("pod IP %q is not from the bed's CNI subnet", ip)
		}
		for _, c := range []string{c1, c2} {
			addr := crictl(t, "exec", "--sync", c, "ip", "-4", "-o", "addr", "show", "eth0")
			if !strings.Contains(addr, " "+ip+"/") {
				t.Fatalf("container %s does not share the pod's network namespace: %s", c, addr)
			}
		}
		r.Stdout += "exec=" + crictl(t, "exec", "--sync", c1, "sh", "-c", "echo exec-ok") + "|"
		_, err := bed.Crictl("exec", "--sync", c1, "sh", "-c", "exit 3")
		r.Stdout += fmt.Sprintf("exit3=%v|", err != nil && strings.Contains(err.Error(), "exited with 3"))

		waitFor(t, func() bool { out, _ := bed.Crictl("logs", c1); return strings.Contains(out, "first started") })
		waitFor(t, func() bool { out, _ := bed.Crictl("logs", c2); return strings.Contains(out, "second started") })

		crictl(t, "update", "--memory", "67108864", c1)
		cgroup := inspectField(t, "inspect", c1, "{{.info.runtimeSpec.linux.cgroupsPath}}")
		limit, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", cgroup, "memory.limit_in_bytes"))
		r.Stdout += fmt.Sprintf("limit=%s err=%v|", strings.TrimSpace(string(limit)), err)

		crictl(t, "stop", "--timeout", "2", c1)
		r.Stdout += "c1=" + inspectField(t, "inspect", c1, "{{.status.state}}") + "|"
		r.Stdout += "c2=" + inspectField(t, "inspect", c2, "{{.status.state}}") + "|"
		crictl(t, "stopp", podID)
		r.Stdout += "pod=" + inspectField(t, "inspectp", podID, "{{.status.state}}") + "|"
		crictl(t, "rmp", podID)
		if out, _ := bed.Crictl("pods", "-q"); strings.Contains(out, podID) {
			t.Fatalf("pod %s still listed after rmp", podID)
		}
		return r
	})
	const want = `exec=exec-ok|exit3=true|limit=67108864 err=<nil>|c1=CONTAINER_EXITED|c2=CONTAINER_RUNNING|pod=SANDBOX_NOTREADY|`
	if r.Stdout != want {
		t.Fatalf("pod lifecycle:\n got %s\nwant %s", r.Stdout, want)
	}
}
