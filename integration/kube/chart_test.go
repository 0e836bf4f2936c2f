package kube

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/images"
	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
)

// The chart's release in TestHelmChartRegistryFromSecret: its namespace,
// the Secret of registry credentials, the installer image the test builds,
// its two handlers and their repository.
const (
	chartNamespace    = "gpusnap-chart"
	chartSecret       = "gpusnap-registry"
	chartImageRepo    = "gpusnap.test/gpusnap"
	chartImageTag     = "test"
	chartPushHandler  = "chart-push"
	chartPullHandler  = "chart-pull"
	chartRegistryRepo = "checkpoints/chart"
)

// TestHelmChartRegistryFromSecret installs the shim the way an operator
// does: `helm template` of contrib/helm/gpusnap with a handler that pushes
// and one that pulls, both naming the test registry, and
// registryCredentialsSecret pointing at a kubernetes.io/dockerconfigjson
// Secret. The DaemonSet's install step (the real gpusnap-install, from an
// image built here) copies the Secret's credentials to the node, declares
// the handlers to the bed's containerd and restarts it. Then a pod of the
// pushing handler is checkpointed on ready and pushed with those
// credentials (the registry refuses anonymous clients), and a pod of the
// pulling handler, whose store is empty, pulls the checkpoint and is
// restored.
//
// What differs from a node: the bed's apiserver listens on loopback only,
// so no pod can reach it, and the DaemonSet's label-node step (kubectl)
// is left out of the rendered objects; StartCluster has put that label on
// the node already. The installer's node paths (bin, options, drop-in
// directories, containerd's config) are the bed's, and its restart command
// runs the bed's restart service through the host root the DaemonSet
// mounts (chroot /host): the chart's default enters PID 1's namespaces,
// which this machine's PID 1 does not allow.
func TestHelmChartRegistryFromSecret(t *testing.T) {
	dir := filepath.Join(cluster.Dir, "chart")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	buildInstallerImage(t, filepath.Join(dir, "build"))
	restarts, err := cluster.Bed.ServeRestarts()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(restarts.Close)
	createNamespaceAndSecret(t)

	values := chartValues(dir, restarts.Command())
	valuesFile := filepath.Join(dir, "values.yaml")
	if err := os.WriteFile(valuesFile, []byte(values), 0o644); err != nil {
		t.Fatal(err)
	}
	docs := helmTemplate(t, chartNamespace, "--values", valuesFile)
	applyChart(t, docs)
	podName := waitBootstrapped(t)
	if asked, failed := restarts.Restarts(); asked != 1 || failed != 0 {
		t.Fatalf("the install step asked for %d containerd restarts, %d failed; want 1, 0\ninstall log:\n%s", asked, failed, installLog(podName))
	}

	pushThenPull(t, chartRegistryRepo, chartPushHandler, chartPullHandler, "chart")
}

// buildInstallerImage builds the image the chart's install step runs:
// gpusnap-install and the shim, with busybox for the shell the installer
// runs its restart command with (and nsenter).
func buildInstallerImage(t *testing.T, build string) {
	t.Helper()
	if err := testbed.Build(build, testbed.Program{Name: "gpusnap-install", Package: "./cmd/gpusnap-install"}); err != nil {
		t.Fatal(err)
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox: %v", err)
	}
	spec := images.Spec{Ref: chartImageRepo + ":" + chartImageTag, Busybox: busybox, Files: []images.File{
		{Src: filepath.Join(build, "gpusnap-install"), Dst: "/usr/local/bin/gpusnap-install"},
		{Src: cluster.Bed.ShimPath, Dst: "/usr/local/bin/" + testbed.ShimBinary},
	}}
	if err := cluster.Bed.BuildImage(spec); err != nil {
		t.Fatal(err)
	}
}

// createNamespaceAndSecret creates the release namespace and the Secret of
// registry credentials: the test registry's docker-style config.json.
func createNamespaceAndSecret(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	if _, err := cluster.Client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: chartNamespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	creds, err := os.ReadFile(reg.Credentials)
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: chartSecret, Namespace: chartNamespace},
		Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: creds}}
	if _, err := cluster.Client.CoreV1().Secrets(chartNamespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cluster.Client.CoreV1().Namespaces().Delete(context.Background(), chartNamespace, metav1.DeleteOptions{})
	})
}

// chartValues are the release's values: the installer image built here,
// the bed's pause image, the two registry handlers with stores of their own
// under a hostPath store, the Secret, and the bed's node paths.
func chartValues(dir, restartCmd string) string {
	storeRoot := filepath.Join(dir, "store")
	handler := func(name, extra string) string {
		return fmt.Sprintf(`  - name: %s
    store: %s
    controlDir: %s
    autoCheckpoint: %q
    options:
      registry: %s
      registry_hosts_dir: %s
%s`, name, filepath.Join(storeRoot, name), testbed.StatefulControlDir, map[bool]string{true: "on-ready", false: "off"}[extra != ""],
			reg.Host+"/"+chartRegistryRepo, reg.HostsDir, extra)
	}
	pause, pauseTag, _ := strings.Cut(testbed.PauseRef, ":")
	return fmt.Sprintf(`image: {repository: %s, tag: %s, pullPolicy: Never}
pauseImage: {repository: %s, tag: %q, pullPolicy: Never}
handlers:
%s%sregistryCredentialsSecret: %s
store: {type: hostPath, hostPath: %s}
installer:
  binDir: %s
  containerdConfig: %s
  dropinDir: %s
  optionsDir: %s
  restartCmd: chroot /host %s
  cli: ""
  criu: ""
nodeSelector: {nvidia.com/gpu.present: null}
`, chartImageRepo, chartImageTag, pause, pauseTag,
		handler(chartPushHandler, "      push: on-checkpoint\n"), handler(chartPullHandler, ""), chartSecret, storeRoot,
		filepath.Join(dir, "node", "bin"), cluster.Bed.ConfigFile, filepath.Join(dir, "node", "conf.d"),
		filepath.Join(dir, "node", "options"), restartCmd)
}

// applyChart creates the rendered objects, less the DaemonSet's label-node
// init container (see TestHelmChartRegistryFromSecret), and deletes them
// when the test ends.
func applyChart(t *testing.T, docs []*unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	clients := newObjectClients(t, cluster.Config)
	for _, obj := range docs {
		if obj.GetKind() == "DaemonSet" {
			dropInitContainer(t, obj, "label-node")
		}
		client, err := clients.forObject(obj)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating %s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
		name := obj.GetName()
		t.Cleanup(func() {
			client.Delete(context.Background(), name, metav1.DeleteOptions{})
		})
	}
}

// dropInitContainer removes the named init container from a DaemonSet.
func dropInitContainer(t *testing.T, ds *unstructured.Unstructured, name string) {
	t.Helper()
	path := []string{"spec", "template", "spec", "initContainers"}
	list, _, err := unstructured.NestedSlice(ds.Object, path...)
	if err != nil {
		t.Fatal(err)
	}
	var kept []any
	for _, c := range list {
		if m, _ := c.(map[string]any); m["name"] != name {
			kept = append(kept, c)
		}
	}
	if len(kept) != len(list)-1 {
		t.Fatalf("the DaemonSet has no init container %q", name)
	}
	if err := unstructured.SetNestedSlice(ds.Object, kept, path...); err != nil {
		t.Fatal(err)
	}
}

// waitBootstrapped waits until the DaemonSet's pod ran its install step and
// runs its pause container; it returns the pod's name.
func waitBootstrapped(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	var name string
	var failed error // the first failure of an init container ends the wait
	err := waitUntil(cluster.kubelet, 3*time.Minute, 500*time.Millisecond, "the chart's DaemonSet pod running", func() (bool, error) {
		pods, err := cluster.Client.CoreV1().Pods(chartNamespace).List(ctx, metav1.ListOptions{})
		if err != nil || len(pods.Items) == 0 {
			return false, fmt.Errorf("no pod yet: %v", err)
		}
		p := pods.Items[0]
		name = p.Name
		for _, cs := range p.Status.InitContainerStatuses {
			if term := cs.State.Terminated; term != nil && term.ExitCode != 0 {
				failed = fmt.Errorf("init container %s exited %d: %s", cs.Name, term.ExitCode, term.Message)
				return true, nil
			}
		}
		return p.Status.Phase == corev1.PodRunning, fmt.Errorf("phase %s", p.Status.Phase)
	})
	if err == nil {
		err = failed
	}
	if err != nil {
		t.Fatalf("%v\nevents:\n%s\ninstall log:\n%s", err, events(chartNamespace, name), installLog(name))
	}
	return name
}

// installLog is the install step's output, as `kubectl logs -c install`.
func installLog(pod string) string {
	if pod == "" {
		return ""
	}
	data, err := cluster.Client.CoreV1().Pods(chartNamespace).GetLogs(pod, &corev1.PodLogOptions{Container: "install"}).DoRaw(context.Background())
	if err != nil {
		return err.Error()
	}
	return string(data)
}
