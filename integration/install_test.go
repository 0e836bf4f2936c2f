package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
)

// node is a second private containerd, started like a node's before the
// installer ran: its main config declares runc only. host holds the node's
// files the installer works on (binaries, containerd's config and drop-in
// directory, the options directory), at their usual places under it.
type node struct {
	bed      *testbed.Bed
	host     string
	restarts *testbed.RestartService
}

// Node paths of the installer's run, under node.host.
const (
	nodeBinDir     = "usr/local/bin"
	nodeConfig     = "etc/containerd/config.toml"
	nodeDropinDir  = "etc/containerd/conf.d"
	nodeOptionsDir = "etc/containerd-shim-snapshot"
	installHandler = "snapshot"
)

// startNode starts the second containerd with its own bridge and subnet
// (the suite's bed keeps running next to it) and the suite's images.
func startNode(t *testing.T, base string) *node {
	t.Helper()
	n := &node{host: filepath.Join(base, "host")}
	// What the node has before: the bin directory with someone else's
	// tool in it, which the installer must leave as it is.
	if err := os.MkdirAll(filepath.Join(n.host, nodeBinDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.host, nodeBinDir, "other-tool"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := testbed.Start(testbed.Config{Dir: filepath.Join(base, "bed"), ConfigFile: filepath.Join(n.host, nodeConfig),
		Namespace: "snapshot-install", Bridge: "snaptest1", Subnet: "10.88.78.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	n.bed = b
	t.Cleanup(func() {
		left, err := b.Stop()
		if err != nil {
			t.Errorf("stopping the node's containerd: %v", err)
		}
		if len(left) > 0 {
			t.Errorf("the node's containerd left behind:\n  %s", strings.Join(left, "\n  "))
		}
	})
	if err := b.ImportImages(filepath.Dir(bed.ShimPath)); err != nil {
		t.Fatal(err)
	}
	if n.restarts, err = b.ServeRestarts(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.restarts.Close)
	return n
}

// path is where a node path of the installer's run is.
func (n *node) path(rel string) string { return filepath.Join(n.host, rel) }

// crictl runs crictl against the node's containerd and fails the test on error.
func (n *node) crictl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := n.bed.Crictl(args...)
	if err != nil {
		t.Fatalf("%v\ncontainerd's log:\n%s", err, lastLines(n.bed.Log(), 20))
	}
	return strings.TrimSpace(out)
}

// runtimeHandler is a handler as `crictl info` shows containerd's CRI
// config (nil when containerd does not declare it).
func (n *node) runtimeHandler(t *testing.T, name string) map[string]any {
	t.Helper()
	var info struct {
		Config struct {
			Containerd struct {
				Runtimes map[string]map[string]any `json:"runtimes"`
			} `json:"containerd"`
		} `json:"config"`
	}
	out := n.crictl(t, "info")
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("crictl info: %v: %s", err, out)
	}
	if _, ok := info.Config.Containerd.Runtimes["runc"]; !ok {
		t.Fatalf("crictl info lists no runc handler; is this containerd's CRI config? %s", out)
	}
	return info.Config.Containerd.Runtimes[name]
}

// install runs gpusnap-install as a DaemonSet runs it: in its own mount
// namespace with the node's root file system bind-mounted at hostfs and
// --host-root pointing there, so that it writes through the host mount
// while the files it writes name the node's own paths.
func (n *node) install(t *testing.T, installer, hostfs string, args ...string) string {
	t.Helper()
	script := `mount --bind / "$0" && exec "$@"`
	cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", script, hostfs,
		installer, "--host-root", hostfs, "--options-dir", n.path(nodeOptionsDir),
		"--restart-cmd", n.restarts.Command()}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("gpusnap-install %s: %v\nstdout:\n%s\nstderr:\n%s\ncontainerd's log:\n%s", strings.Join(args, " "), err,
			stdout.String(), stderr.String(), lastLines(n.bed.Log(), 20))
	}
	t.Logf("gpusnap-install %s:\n%s", strings.Join(args, " "), stdout.String())
	return stdout.String()
}

// fileState is one entry of a directory tree: what kind, its permissions,
// a digest of a file's content and its modification time.
type fileState struct {
	Mode   fs.FileMode
	SHA256 string
	MTime  time.Time
}

// listTree records every entry under root (paths relative to it).
func listTree(t *testing.T, root string) map[string]fileState {
	t.Helper()
	tree := map[string]fileState{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		st := fileState{Mode: info.Mode(), MTime: info.ModTime()}
		if info.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			st.SHA256 = hex.EncodeToString(sum[:])
		}
		tree[rel] = st
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// treeDiff lists entries that differ between two listings; withTimes
// compares modification times of files too.
func treeDiff(before, after map[string]fileState, withTimes bool) []string {
	var diff []string
	for p, a := range after {
		b, ok := before[p]
		switch {
		case !ok:
			diff = append(diff, "added "+p)
		case a.Mode != b.Mode || a.SHA256 != b.SHA256:
			diff = append(diff, fmt.Sprintf("changed %s (%v %.12s -> %v %.12s)", p, b.Mode, b.SHA256, a.Mode, a.SHA256))
		case withTimes && a.Mode.IsRegular() && !a.MTime.Equal(b.MTime):
			diff = append(diff, "rewritten "+p)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			diff = append(diff, "removed "+p)
		}
	}
	return diff
}

// nodeStatefulPod runs the stateful workload in a pod on the node's
// snapshot handler, as statefulPod does on the suite's bed.
func (n *node) statefulPod(t *testing.T, name string) string {
	t.Helper()
	podJSON := n.podConfig(t, name)
	podID := n.crictl(t, "runp", "--runtime", installHandler, podJSON)
	t.Cleanup(func() {
		n.bed.Crictl("stopp", podID)
		n.bed.Crictl("rmp", "--force", podID)
	})
	ctrJSON := writeJSON(t, name+"-app.json", map[string]any{
		"metadata": map[string]any{"name": "app"},
		"image":    map[string]any{"image": statefulRef},
		"log_path": "app.log",
		"linux":    map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"pid": 1}}},
	})
	id := n.crictl(t, "create", podID, ctrJSON, podJSON)
	n.crictl(t, "start", id)
	if state := n.crictl(t, "inspect", "-o", "go-template", "--template", "{{.status.state}}", id); state != "CONTAINER_RUNNING" {
		t.Fatalf("container %s of pod %s: %s", id, name, state)
	}
	return id
}

// shimExe is the binary of the shim serving a container of the node's
// containerd: the process whose command line names the container and the
// node's socket.
func (n *node) shimExe(t *testing.T, id string) string {
	t.Helper()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmdline, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), n.bed.Socket) || !strings.Contains(string(cmdline), testbed.ShimBinary) {
			continue
		}
		if exe, err := os.Readlink(filepath.Join(d, "exe")); err == nil {
			return exe
		}
	}
	t.Fatalf("no %s process serves the node's containerd (container %s)", testbed.ShimBinary, id)
	return ""
}

// TestInstallerOnLiveContainerd runs gpusnap-install for real against a
// live containerd whose config starts without the snapshot handler, the
// way a DaemonSet runs it (--host-root): containerd is restarted, lists the
// handler in `crictl info` and runs pods with it (cold start, checkpoint on
// ready, restore); a second run changes nothing and does not restart
// containerd; uninstall restarts it without the handler and leaves the
// node's files exactly as they were.
func TestInstallerOnLiveContainerd(t *testing.T) {
	base, err := os.MkdirTemp("/var/tmp", "snapshot-install-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	build := filepath.Join(base, "build")
	if err := testbed.Build(build, testbed.Program{Name: "gpusnap-install", Package: "./cmd/gpusnap-install"}); err != nil {
		t.Fatal(err)
	}
	installer := filepath.Join(build, "gpusnap-install")
	criuBin, err := exec.LookPath("criu")
	if err != nil {
		t.Fatal(err)
	}
	hostfs := filepath.Join(base, "hostfs")
	if err := os.Mkdir(hostfs, 0o755); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, base)
	if h := n.runtimeHandler(t, installHandler); h != nil {
		t.Fatalf("the node's containerd declares %q before the installer ran: %v", installHandler, h)
	}
	configBefore, err := os.ReadFile(n.path(nodeConfig))
	if err != nil {
		t.Fatal(err)
	}
	treeBefore := listTree(t, n.host)

	store := filepath.Join(base, "store")
	installArgs := []string{"--bin-dir", n.path(nodeBinDir), "--containerd-config", n.path(nodeConfig),
		"--dropin-dir", n.path(nodeDropinDir), "--shim", bed.ShimPath, "--cli", cliPath, "--criu", criuBin,
		"--handler", fmt.Sprintf("name=%s,store=%s,control_dir=%s,auto_checkpoint=on-ready", installHandler, store, controlDir)}

	pid := n.bed.PID()
	out := n.install(t, installer, hostfs, installArgs...)
	if !strings.Contains(out, "restarting containerd") || n.bed.PID() == pid {
		t.Fatalf("the install did not restart containerd (pid %d, now %d)", pid, n.bed.PID())
	}
	if asked, failed := n.restarts.Restarts(); asked != 1 || failed != 0 {
		t.Fatalf("restarts asked %d, failed %d; want 1, 0", asked, failed)
	}
	// The installer wrote through the host mount, not into its own view.
	if entries, _ := os.ReadDir(hostfs); len(entries) != 0 {
		t.Fatalf("the installer's host mount point holds files: %v", entries)
	}
	shimPath := n.path(filepath.Join(nodeBinDir, testbed.ShimBinary))
	optionsPath := n.path(filepath.Join(nodeOptionsDir, installHandler+".toml"))
	h := n.runtimeHandler(t, installHandler)
	if h == nil {
		t.Fatalf("crictl info lists no %q handler after the install; drop-in:\n%s\nmain config:\n%s", installHandler,
			readOr(n.path(filepath.Join(nodeDropinDir, "containerd-shim-snapshot.toml"))), readOr(n.path(nodeConfig)))
	}
	opts, _ := h["options"].(map[string]any)
	if h["runtimeType"] != containerdconfig.RuntimeType || h["runtimePath"] != shimPath || opts["ConfigPath"] != optionsPath ||
		!reflect.DeepEqual(h["PodAnnotations"], []any{"gpusnap.io/*"}) {
		t.Fatalf("crictl info's %q handler: %v", installHandler, h)
	}
	treeInstalled := listTree(t, n.host)

	t.Run("pods run on the installed handler", func(t *testing.T) {
		first := n.statefulPod(t, "installed-first")
		if exe := n.shimExe(t, first); exe != shimPath {
			t.Fatalf("the pod's shim runs %s, want the installed %s", exe, shimPath)
		}
		// The options file the installer wrote reached the shim: it
		// checkpoints into the store that file names once the workload
		// is ready (auto_checkpoint = on-ready).
		deadline := time.Now().Add(60 * time.Second)
		for decisionOf(first) != "checkpointed" {
			if time.Now().After(deadline) {
				st, err := testbed.Status(first)
				t.Fatalf("first pod not checkpointed into %s: status %v %v, store %v", store, st, err, checkpointsIfAny(store))
			}
			time.Sleep(50 * time.Millisecond)
		}
		if cks := checkpointsIfAny(store); len(cks) != 1 {
			t.Fatalf("store %s holds %v after one checkpoint", store, cks)
		}
		second := n.statefulPod(t, "installed-second")
		if st := statusOf(t, second); st["decision"] != "restored" {
			t.Fatalf("second pod status: %v", st)
		}
		got, err := n.query(t, second)
		if err != nil || got.Count < 20 || got.File != "written-before-checkpoint" || got.Child != "alive" {
			t.Fatalf("restored pod state %+v (%v) does not continue the checkpoint", got, err)
		}
	})
	// The pods go before the uninstall: containerd without the handler
	// could not stop them.
	if out, err := n.bed.Crictl("rmp", "--all", "--force"); err != nil {
		t.Fatalf("removing the pods: %v: %s", err, out)
	}

	t.Run("a second run changes nothing and does not restart containerd", func(t *testing.T) {
		pid := n.bed.PID()
		out := n.install(t, installer, hostfs, installArgs...)
		if !strings.Contains(out, "nothing to change") || strings.Contains(out, "restarting") {
			t.Errorf("second run's output:\n%s", out)
		}
		if now := n.bed.PID(); now != pid {
			t.Errorf("containerd restarted: pid %d, now %d", pid, now)
		}
		if asked, _ := n.restarts.Restarts(); asked != 1 {
			t.Errorf("restarts asked %d, want still 1", asked)
		}
		if diff := treeDiff(treeInstalled, listTree(t, n.host), true); len(diff) > 0 {
			t.Errorf("the second run changed the node's files:\n  %s", strings.Join(diff, "\n  "))
		}
		if n.runtimeHandler(t, installHandler) == nil {
			t.Errorf("the handler is gone after the second run")
		}
	})

	t.Run("uninstall takes back the handler and every file", func(t *testing.T) {
		pid := n.bed.PID()
		n.install(t, installer, hostfs, "--uninstall")
		if now := n.bed.PID(); now == pid {
			t.Fatalf("the uninstall did not restart containerd (pid %d)", pid)
		}
		if asked, failed := n.restarts.Restarts(); asked != 2 || failed != 0 {
			t.Fatalf("restarts asked %d, failed %d; want 2, 0", asked, failed)
		}
		if h := n.runtimeHandler(t, installHandler); h != nil {
			t.Errorf("crictl info still lists %q after the uninstall: %v", installHandler, h)
		}
		if diff := treeDiff(treeBefore, listTree(t, n.host), false); len(diff) > 0 {
			t.Errorf("the node's files differ from before the install:\n  %s", strings.Join(diff, "\n  "))
		}
		if after, err := os.ReadFile(n.path(nodeConfig)); err != nil || !bytes.Equal(after, configBefore) {
			t.Errorf("containerd's main config is not as before (%v):\n%s\nwas:\n%s", err, after, configBefore)
		}
		// containerd still runs pods with the handlers it had.
		if _, err := n.bed.Crictl("runp", "--runtime", installHandler, n.podConfig(t, "after-uninstall")); err == nil ||
			!strings.Contains(err.Error(), installHandler) {
			t.Errorf("runp on the uninstalled handler: want an error naming it, got %v", err)
		}
	})
}

// podConfig is a pod sandbox config for crictl runp on the node.
func (n *node) podConfig(t *testing.T, name string) string {
	return writeJSON(t, name+"-pod.json", map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": name + "-uid"},
		"log_directory": filepath.Join(n.bed.Dir, "logs", name),
		"linux":         map[string]any{},
	})
}

// query asks the stateful workload in a container of the node.
func (n *node) query(t *testing.T, id string) (workloadState, error) {
	out, err := n.bed.Crictl("exec", "--sync", id, "nc", "127.0.0.1", "8080")
	if err != nil {
		return workloadState{}, err
	}
	return parseAnswer(out)
}

func readOr(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(data)
}

func lastLines(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
