package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
)

// criHandler is the CRI runtime handler (what a RuntimeClass names) the
// restore bench declares: its own store, checkpoints on ready.
const criHandler = "bench-cri"

// criHandlers are the bench's CRI handlers for testbed.Prepare, with their
// store under dir.
func criHandlers(dir string) map[string]string {
	return map[string]string{criHandler: fmt.Sprintf("store = %q\ncontrol_dir = %q\nauto_checkpoint = \"on-ready\"\n",
		filepath.Join(dir, "cri-store"), testbed.StatefulControlDir)}
}

// criResult is the workload run as a Kubernetes pod would run it, through
// CRI: cold, then restored from its on-ready checkpoint with the image in
// the page cache, each from RunPodSandbox to the first answer.
type criResult struct {
	cold, restore time.Duration
	// steps is where the restore's time went: the crictl calls
	// (runp, create, start), and, from the shim's status timeline, the
	// restore itself and from its end to the first answer.
	steps map[string]float64
}

// criBench runs the CRI cold start, waits for its on-ready checkpoint,
// removes the pod, and times a restore of the same pod spec.
func criBench(bed *testbed.Bed, dir string, env []string) (*criResult, error) {
	var r criResult
	cold, err := runPodToAnswer(bed, dir, "bench-cri-cold", env)
	if err != nil {
		return nil, err
	}
	r.cold = cold.took
	err = waitCheckpoint(filepath.Join(dir, "cri-store"), cold.container)
	removePod(bed, cold.pod)
	if err != nil {
		return nil, err
	}
	restored, err := runPodToAnswer(bed, dir, "bench-cri-restored", env)
	if err != nil {
		return nil, err
	}
	defer removePod(bed, restored.pod)
	status := statusFile(restored.container)
	if !strings.Contains(string(status), `"restored"`) {
		return nil, fmt.Errorf("the CRI pod was not restored: %s", status)
	}
	r.restore = restored.took
	t, err := statusTimeline(status)
	if err != nil {
		return nil, err
	}
	r.steps = map[string]float64{
		"runp": restored.runp.Seconds(), "create": restored.create.Seconds(), "start": restored.start.Seconds(),
		"restore":            t["restored"].Sub(t["start"]).Seconds(),
		"restored_to_answer": restored.began.Add(restored.took).Sub(t["restored"]).Seconds(),
	}
	return &r, nil
}

// podRun is one pod run to its first answer.
type podRun struct {
	pod, container      string
	began               time.Time
	runp, create, start time.Duration // each crictl call
	took                time.Duration // RunPodSandbox to the first answer
}

// runPodToAnswer runs the stateful workload in a new pod of criHandler and
// waits for its first answer, asked in the pod's network namespace.
func runPodToAnswer(bed *testbed.Bed, dir, name string, env []string) (r podRun, err error) {
	podJSON, ctrJSON, err := podConfigs(dir, name, env)
	if err != nil {
		return r, err
	}
	timed := func(d *time.Duration, args ...string) (string, error) {
		t := time.Now()
		out, err := bed.Crictl(args...)
		*d = time.Since(t)
		return strings.TrimSpace(out), err
	}
	r.began = time.Now()
	if r.pod, err = timed(&r.runp, "runp", "--runtime", criHandler, podJSON); err != nil {
		return r, err
	}
	netns, err := bed.Crictl("inspectp", "-o", "go-template", "--template",
		`{{range .info.runtimeSpec.linux.namespaces}}{{if eq .type "network"}}{{.path}}{{end}}{{end}}`, r.pod)
	if err != nil {
		return r, err
	}
	if r.container, err = timed(&r.create, "create", r.pod, ctrJSON, podJSON); err != nil {
		return r, err
	}
	if _, err = timed(&r.start, "start", r.container); err != nil {
		return r, err
	}
	r.took, err = waitAnswer(r.began, "nsenter", "--net="+strings.TrimSpace(netns), "busybox", "nc", "127.0.0.1", "8080")
	return r, err
}

// podConfigs writes crictl's pod and container configurations for name.
func podConfigs(dir, name string, env []string) (pod, ctr string, err error) {
	envs := []map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		envs = append(envs, map[string]string{"key": k, "value": v})
	}
	docs := map[string]any{
		"pod": map[string]any{
			"metadata":      map[string]any{"name": name, "namespace": "default", "uid": name + "-uid"},
			"log_directory": filepath.Join(dir, "pod-logs", name), "linux": map[string]any{},
		},
		"ctr": map[string]any{
			"metadata": map[string]any{"name": "app"}, "image": map[string]any{"image": testbed.StatefulRef},
			"envs": envs, "log_path": "app.log",
			// The container's own PID namespace, which CRIU must own.
			"linux": map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"pid": 1}}},
		},
	}
	paths := map[string]string{}
	for kind, doc := range docs {
		data, err := json.Marshal(doc)
		if err != nil {
			return "", "", err
		}
		paths[kind] = filepath.Join(dir, name+"-"+kind+".json")
		if err := os.WriteFile(paths[kind], data, 0o600); err != nil {
			return "", "", err
		}
	}
	return paths["pod"], paths["ctr"], nil
}

// waitCheckpoint waits until the shim published container id's on-ready
// checkpoint into store.
func waitCheckpoint(store, id string) error {
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if strings.Contains(string(statusFile(id)), `"checkpointed"`) {
			return nil
		}
	}
	return fmt.Errorf("no on-ready checkpoint of %s in %s: %s", id, store, statusFile(id))
}

func removePod(bed *testbed.Bed, pod string) {
	bed.Crictl("stopp", pod)
	bed.Crictl("rmp", "--force", pod)
}
