// Package kubernetes_test checks the Kubernetes packaging of the shim: every
// manifest in this directory, and the Helm chart in contrib/helm/gpusnap,
// must decode strictly into the Kubernetes API types (an unknown or
// misspelt field is an error, as it is for kubectl apply --validate=strict),
// must hang together (RuntimeClass, DaemonSet, store, example workload), and
// the chart must render the same objects as the plain manifests.
package kubernetes_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

const (
	chartDir    = "../helm/gpusnap"
	releaseName = "gpusnap" // object names then equal the plain manifests'
	namespace   = "gpusnap-system"

	handlerName  = "snapshot"
	storeHost    = "/var/lib/gpusnap/store"
	controlDir   = "/run/gpusnap"
	nodeLabelKey = "gpusnap.io/enabled"
	handlerArg   = "--handler=name=snapshot,store=/var/lib/gpusnap/store,restore=auto,auto_checkpoint=on-ready,control_dir=/run/gpusnap"
	restartArg   = "--restart-cmd=nsenter -t 1 -m -u -i -n -p -- systemctl restart containerd"
)

// strict decodes YAML into the typed objects of client-go's scheme and
// fails on unknown and duplicate fields.
var strict = json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	json.SerializerOptions{Yaml: true, Strict: true})

// object is one decoded document and where it came from.
type object struct {
	source string // file and document index, for messages
	obj    runtime.Object
	kind   string
	name   string
	ns     string
}

func (o object) key() string { return o.kind + "/" + o.name }

// decodeAll splits a YAML stream into documents and decodes each strictly.
// Documents holding only comments (Helm's "# Source:" headers, templates
// that rendered nothing) are skipped.
func decodeAll(t *testing.T, source string, data []byte) []object {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []object
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: reading document %d: %v", source, i, err)
		}
		var probe map[string]any
		if err := yaml.Unmarshal(doc, &probe); err != nil {
			t.Fatalf("%s: document %d is not YAML: %v", source, i, err)
		}
		if len(probe) == 0 {
			continue
		}
		where := fmt.Sprintf("%s#%d", source, i)
		obj, gvk, err := strict.Decode(doc, nil, nil)
		if err != nil {
			t.Errorf("%s: strict decoding: %v", where, err)
			continue
		}
		m, err := meta.Accessor(obj)
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if m.GetName() == "" {
			t.Errorf("%s: %s without a name", where, gvk.Kind)
		}
		objs = append(objs, object{source: where, obj: obj, kind: gvk.Kind, name: m.GetName(), ns: m.GetNamespace()})
	}
	return objs
}

// byKey indexes objects by kind/name and refuses duplicates.
func byKey(t *testing.T, objs []object) map[string]object {
	t.Helper()
	m := map[string]object{}
	for _, o := range objs {
		if prev, ok := m[o.key()]; ok {
			t.Errorf("%s and %s both define %s", prev.source, o.source, o.key())
		}
		m[o.key()] = o
	}
	return m
}

func get[T runtime.Object](t *testing.T, objs map[string]object, kind, name string) T {
	t.Helper()
	o, ok := objs[kind+"/"+name]
	if !ok {
		t.Fatalf("no %s %q", kind, name)
	}
	v, ok := o.obj.(T)
	if !ok {
		t.Fatalf("%s: %s is a %T", o.source, o.key(), o.obj)
	}
	return v
}

// plainManifests decodes every contrib/kubernetes/*.yaml.
func plainManifests(t *testing.T) []object {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no *.yaml manifests next to the test")
	}
	var all []object
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs := decodeAll(t, f, data)
		if len(objs) == 0 {
			t.Errorf("%s: no Kubernetes object in it", f)
		}
		all = append(all, objs...)
	}
	return all
}

func TestManifestsDecodeStrictly(t *testing.T) {
	objs := plainManifests(t)
	byKey(t, objs)
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.key())
	}
	t.Logf("decoded %d objects: %s", len(objs), strings.Join(keys, ", "))
}

// TestStrictDecoderRefusesUnknownFields makes sure the check above has
// teeth: a misspelt field must fail, not be dropped.
func TestStrictDecoderRefusesUnknownFields(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field":   "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: x}\nhandler: x\nhandlr: x\n",
		"duplicate field": "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: x}\nhandler: x\nhandler: y\n",
		"unknown kind":    "apiVersion: node.k8s.io/v1\nkind: RuntimeKlass\nmetadata: {name: x}\n",
	} {
		if _, _, err := strict.Decode([]byte(doc), nil, nil); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

// TestManifestsHangTogether checks what ties the objects to each other and
// to the shim: names, the handler, the store path, the control directory.
func TestManifestsHangTogether(t *testing.T) {
	objs := byKey(t, plainManifests(t))

	ns := get[*corev1.Namespace](t, objs, "Namespace", namespace)
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Errorf("namespace %s: the privileged DaemonSet needs pod-security.kubernetes.io/enforce=privileged", namespace)
	}
	for _, o := range objs {
		switch o.obj.(type) {
		case *corev1.Namespace, *corev1.PersistentVolume, *nodev1.RuntimeClass, *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding:
			if o.ns != "" {
				t.Errorf("%s: cluster-scoped %s has namespace %q", o.source, o.kind, o.ns)
			}
		case *appsv1.Deployment:
			// The example workload goes wherever kubectl -n puts it.
		default:
			if o.ns != namespace {
				t.Errorf("%s: %s in namespace %q, want %q", o.source, o.key(), o.ns, namespace)
			}
		}
	}

	checkRuntimeClass(t, get[*nodev1.RuntimeClass](t, objs, "RuntimeClass", handlerName))
	ds := get[*appsv1.DaemonSet](t, objs, "DaemonSet", "gpusnap-node")
	checkDaemonSet(t, ds, "gpusnap-node", "gpusnap-store")
	checkStore(t, objs, "gpusnap-store", "gpusnap-store")
	checkRBAC(t, objs, "gpusnap-node", "gpusnap-node-labeler")
	checkExample(t, get[*appsv1.Deployment](t, objs, "Deployment", "pytorch-server"))
	checkInstallerArgs(t, container(t, ds.Spec.Template.Spec.InitContainers, "install").Args)
}

func checkRuntimeClass(t *testing.T, rc *nodev1.RuntimeClass) {
	t.Helper()
	// The class is named like its containerd handler, so that
	// runtimeClassName: snapshot means handler "snapshot".
	if rc.Handler != rc.Name {
		t.Errorf("RuntimeClass %s: handler %q, want %q", rc.Name, rc.Handler, rc.Name)
	}
	if rc.Scheduling == nil || rc.Scheduling.NodeSelector[nodeLabelKey] != "true" {
		t.Errorf("RuntimeClass %s: scheduling.nodeSelector must require %s=true", rc.Name, nodeLabelKey)
	}
	if rc.Scheduling == nil || !hasGPUToleration(rc.Scheduling.Tolerations) {
		t.Errorf("RuntimeClass %s: no toleration of nvidia.com/gpu:NoSchedule", rc.Name)
	}
}

func hasGPUToleration(ts []corev1.Toleration) bool {
	for _, tol := range ts {
		if tol.Key == "nvidia.com/gpu" && tol.Effect == corev1.TaintEffectNoSchedule &&
			(tol.Operator == corev1.TolerationOpExists || tol.Operator == "") {
			return true
		}
	}
	return false
}

func container(t *testing.T, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

func checkDaemonSet(t *testing.T, ds *appsv1.DaemonSet, name, claim string) {
	t.Helper()
	spec := ds.Spec.Template.Spec
	if !spec.HostPID {
		t.Errorf("DaemonSet %s: hostPID must be true (the restart command enters PID 1's namespaces)", name)
	}
	if spec.NodeSelector["nvidia.com/gpu.present"] != "true" {
		t.Errorf("DaemonSet %s: nodeSelector %v, want nvidia.com/gpu.present=true", name, spec.NodeSelector)
	}
	if !hasGPUToleration(spec.Tolerations) {
		t.Errorf("DaemonSet %s: no toleration of nvidia.com/gpu:NoSchedule", name)
	}
	var inits []string
	for _, c := range spec.InitContainers {
		inits = append(inits, c.Name)
	}
	if want := []string{"mount-store", "install", "label-node"}; !slices.Equal(inits, want) {
		t.Errorf("DaemonSet %s: init containers %v, want %v (the label comes last)", name, inits, want)
	}
	if len(spec.Containers) != 1 || !strings.HasPrefix(spec.Containers[0].Image, "registry.k8s.io/pause:") {
		t.Errorf("DaemonSet %s: want one pause container", name)
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() ||
			c.Resources.Limits.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("DaemonSet %s: container %s lacks cpu/memory requests or limits", name, c.Name)
		}
	}

	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	if v := vols["host-root"]; v.HostPath == nil || v.HostPath.Path != "/" {
		t.Errorf("DaemonSet %s: volume host-root must be hostPath /", name)
	}
	if v := vols["gpusnap-host"]; v.HostPath == nil || v.HostPath.Path != filepath.Dir(storeHost) {
		t.Errorf("DaemonSet %s: volume gpusnap-host must be hostPath %s", name, filepath.Dir(storeHost))
	}
	if v := vols["store"]; v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != claim {
		t.Errorf("DaemonSet %s: volume store must be the claim %s", name, claim)
	}

	install := container(t, spec.InitContainers, "install")
	if install.SecurityContext == nil || install.SecurityContext.Privileged == nil || !*install.SecurityContext.Privileged {
		t.Errorf("DaemonSet %s: install must be privileged", name)
	}
	if !hasMount(install, "host-root", "/host", nil) {
		t.Errorf("DaemonSet %s: install must mount host-root at /host", name)
	}
	for _, want := range []string{"--host-root=/host", handlerArg, restartArg} {
		if !slices.Contains(install.Args, want) {
			t.Errorf("DaemonSet %s: installer args %q lack %q", name, install.Args, want)
		}
	}

	mount := container(t, spec.InitContainers, "mount-store")
	bidi := corev1.MountPropagationBidirectional
	if !hasMount(mount, "gpusnap-host", "/gpusnap-host", &bidi) || !hasMount(mount, "store", "/store", nil) {
		t.Errorf("DaemonSet %s: mount-store must mount store at /store and gpusnap-host at /gpusnap-host (Bidirectional)", name)
	}
	script := strings.Join(mount.Args, "\n")
	if !strings.Contains(script, "target=/gpusnap-host/"+filepath.Base(storeHost)+"\n") ||
		!strings.Contains(script, `mount --bind /store "$target"`) {
		t.Errorf("DaemonSet %s: mount-store does not bind /store onto the handler's store %s:\n%s", name, storeHost, script)
	}

	label := container(t, spec.InitContainers, "label-node")
	if !slices.Contains(label.Args, nodeLabelKey+"=true") || !slices.Contains(label.Args, "$(NODE_NAME)") {
		t.Errorf("DaemonSet %s: label-node args %q do not set %s=true on $(NODE_NAME)", name, label.Args, nodeLabelKey)
	}
	if len(label.Env) == 0 || label.Env[0].Name != "NODE_NAME" || label.Env[0].ValueFrom == nil ||
		label.Env[0].ValueFrom.FieldRef == nil || label.Env[0].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("DaemonSet %s: label-node needs NODE_NAME from spec.nodeName", name)
	}
}

func hasMount(c corev1.Container, vol, path string, prop *corev1.MountPropagationMode) bool {
	for _, m := range c.VolumeMounts {
		if m.Name == vol && m.MountPath == path {
			if prop == nil {
				return m.MountPropagation == nil || *m.MountPropagation == corev1.MountPropagationNone
			}
			return m.MountPropagation != nil && *m.MountPropagation == *prop
		}
	}
	return false
}

func checkStore(t *testing.T, objs map[string]object, pvName, claimName string) {
	t.Helper()
	pv := get[*corev1.PersistentVolume](t, objs, "PersistentVolume", pvName)
	pvc := get[*corev1.PersistentVolumeClaim](t, objs, "PersistentVolumeClaim", claimName)
	if pv.Spec.NFS == nil || pv.Spec.NFS.Server == "" || pv.Spec.NFS.Path == "" {
		t.Errorf("PersistentVolume %s: want an nfs server and path", pvName)
	}
	if !slices.Contains(pv.Spec.AccessModes, corev1.ReadWriteMany) || !slices.Contains(pvc.Spec.AccessModes, corev1.ReadWriteMany) {
		t.Errorf("store: PersistentVolume and claim must be ReadWriteMany (every node mounts it)")
	}
	if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
		t.Errorf("PersistentVolume %s: reclaim policy %q, want Retain", pvName, pv.Spec.PersistentVolumeReclaimPolicy)
	}
	if pvc.Spec.VolumeName != pvName || pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.Name != claimName || pv.Spec.ClaimRef.Namespace != namespace {
		t.Errorf("store: PersistentVolume %s and claim %s/%s are not bound to each other", pvName, namespace, claimName)
	}
	if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "" || pv.Spec.StorageClassName != "" {
		t.Errorf("store: storageClassName must be \"\" on both, or a default StorageClass provisions another volume")
	}
}

func checkRBAC(t *testing.T, objs map[string]object, sa, role string) {
	t.Helper()
	get[*corev1.ServiceAccount](t, objs, "ServiceAccount", sa)
	cr := get[*rbacv1.ClusterRole](t, objs, "ClusterRole", role)
	crb := get[*rbacv1.ClusterRoleBinding](t, objs, "ClusterRoleBinding", role)
	ok := false
	for _, r := range cr.Rules {
		if slices.Contains(r.Resources, "nodes") && slices.Contains(r.Verbs, "patch") {
			ok = true
		}
		if slices.Contains(r.Verbs, "*") || slices.Contains(r.Resources, "*") {
			t.Errorf("ClusterRole %s: wildcard rule %v", role, r)
		}
	}
	if !ok {
		t.Errorf("ClusterRole %s: cannot patch nodes", role)
	}
	if crb.RoleRef.Name != role || len(crb.Subjects) != 1 || crb.Subjects[0].Name != sa || crb.Subjects[0].Namespace != namespace {
		t.Errorf("ClusterRoleBinding %s: does not bind %s to %s/%s", role, role, namespace, sa)
	}
	ds := get[*appsv1.DaemonSet](t, objs, "DaemonSet", "gpusnap-node")
	if ds.Spec.Template.Spec.ServiceAccountName != sa {
		t.Errorf("DaemonSet: serviceAccountName %q, want %q", ds.Spec.Template.Spec.ServiceAccountName, sa)
	}
}

func checkExample(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	spec := d.Spec.Template.Spec
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("Deployment %s: want 2 replicas", d.Name)
	}
	if spec.RuntimeClassName == nil || *spec.RuntimeClassName != handlerName {
		t.Errorf("Deployment %s: runtimeClassName must be %q", d.Name, handlerName)
	}
	if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
		t.Errorf("Deployment %s: enableServiceLinks must be false (service env vars would change the checkpoint identity)", d.Name)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("Deployment %s: want one container", d.Name)
	}
	c := spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["CONTROL_DIR"] != controlDir {
		t.Errorf("Deployment %s: CONTROL_DIR %q, want the handler's control_dir %q", d.Name, env["CONTROL_DIR"], controlDir)
	}
	if env["WEIGHTS_GIB"] == "" {
		t.Errorf("Deployment %s: no WEIGHTS_GIB", d.Name)
	}
	if gpus := c.Resources.Limits[corev1.ResourceName("nvidia.com/gpu")]; gpus.Value() != 1 {
		t.Errorf("Deployment %s: nvidia.com/gpu limit %s, want 1", d.Name, gpus.String())
	}
	p := c.ReadinessProbe
	if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/" || p.HTTPGet.Port.IntValue() != 8000 {
		t.Errorf("Deployment %s: want a readinessProbe GET / on port 8000", d.Name)
	}
	for _, m := range c.VolumeMounts {
		if m.MountPath == controlDir {
			t.Errorf("Deployment %s: a volume at %s collides with the shim's control directory", d.Name, controlDir)
		}
	}
}

// checkInstallerArgs runs the real gpusnap-install with the DaemonSet's
// arguments against an empty host root, in dry-run mode, so that a flag the
// installer does not know or a handler option the shim would refuse fails
// here rather than on a node. The binaries named in the image are left out
// (they are not on this machine) and no restart command runs.
func checkInstallerArgs(t *testing.T, args []string) {
	t.Helper()
	if testing.Short() {
		t.Log("-short: not running gpusnap-install --dry-run")
		return
	}
	bin := installerBinary(t)
	root := t.TempDir()
	full := append(slices.Clone(args), "--host-root="+root, "--shim=", "--cli=", "--criu=", "--restart-cmd=", "--dry-run")
	out, err := exec.Command(bin, full...).CombinedOutput()
	if err != nil {
		t.Fatalf("gpusnap-install %q: %v\n%s", full, err, out)
	}
	if !strings.Contains(string(out), handlerName+".toml") {
		t.Errorf("gpusnap-install --dry-run does not write the options of handler %q:\n%s", handlerName, out)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("gpusnap-install --dry-run wrote into the host root: %v", entries)
	}
}

var installerBin string

func installerBinary(t *testing.T) string {
	t.Helper()
	if installerBin != "" {
		return installerBin
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH: installer arguments not checked")
	}
	dir, err := os.MkdirTemp("", "gpusnap-install-")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "gpusnap-install")
	if out, err := exec.Command(goBin, "build", "-o", bin, "../../cmd/gpusnap-install").CombinedOutput(); err != nil {
		t.Fatalf("building gpusnap-install: %v\n%s", err, out)
	}
	installerBin = bin
	return bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if installerBin != "" {
		os.RemoveAll(filepath.Dir(installerBin))
	}
	os.Exit(code)
}

// helmTemplate renders the chart, or skips the test without helm.
func helmTemplate(t *testing.T, args ...string) []byte {
	t.Helper()
	helm, err := exec.LookPath("helm")
	if err != nil {
		t.Skip("helm is not on PATH: chart not checked (go install helm.sh/helm/v3/cmd/helm@latest, then PATH=$PATH:$(go env GOPATH)/bin)")
	}
	full := append([]string{"template", releaseName, chartDir, "--namespace", namespace}, args...)
	cmd := exec.Command(helm, full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(full, " "), err, stderr.String())
	}
	return out
}

// TestHelmChartMatchesManifests renders the chart with its defaults and
// with the example workload, decodes the output strictly and compares it
// with the plain manifests: the same kinds and names (less the Namespace,
// which Helm charts leave to the installer) and the same specs.
func TestHelmChartMatchesManifests(t *testing.T) {
	plain := byKey(t, plainManifests(t))
	delete(plain, "Namespace/"+namespace)

	for _, tc := range []struct {
		name    string
		args    []string
		example bool
	}{
		{name: "defaults"},
		{name: "example enabled", args: []string{"--set", "example.enabled=true"}, example: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chart := byKey(t, decodeAll(t, "helm template ("+tc.name+")", helmTemplate(t, tc.args...)))
			want := map[string]object{}
			for k, o := range plain {
				if o.kind == "Deployment" && !tc.example {
					continue
				}
				want[k] = o
			}
			if got, wantKeys := sortedKeys(chart), sortedKeys(want); !slices.Equal(got, wantKeys) {
				t.Fatalf("chart renders %v\nplain manifests have %v", got, wantKeys)
			}
			for k, p := range want {
				c := chart[k]
				if c.ns != p.ns && p.kind != "Deployment" {
					t.Errorf("%s: namespace %q in the chart, %q in %s", k, c.ns, p.ns, p.source)
				}
				compareSpec(t, k, p, c)
			}
			ds := get[*appsv1.DaemonSet](t, chart, "DaemonSet", "gpusnap-node")
			checkDaemonSet(t, ds, "gpusnap-node", "gpusnap-store")
			checkRuntimeClass(t, get[*nodev1.RuntimeClass](t, chart, "RuntimeClass", handlerName))
			if tc.example {
				checkExample(t, get[*appsv1.Deployment](t, chart, "Deployment", "pytorch-server"))
			}
		})
	}
}

// compareSpec compares what an object does (its spec, rules, subjects...),
// not its metadata: the chart adds Helm's labels.
func compareSpec(t *testing.T, key string, plain, chart object) {
	t.Helper()
	var a, b any
	switch p := plain.obj.(type) {
	case *appsv1.DaemonSet:
		a, b = p.Spec, chart.obj.(*appsv1.DaemonSet).Spec
	case *appsv1.Deployment:
		a, b = p.Spec, chart.obj.(*appsv1.Deployment).Spec
	case *nodev1.RuntimeClass:
		c := chart.obj.(*nodev1.RuntimeClass)
		a, b = []any{p.Handler, p.Scheduling, p.Overhead}, []any{c.Handler, c.Scheduling, c.Overhead}
	case *corev1.PersistentVolume:
		a, b = p.Spec, chart.obj.(*corev1.PersistentVolume).Spec
	case *corev1.PersistentVolumeClaim:
		a, b = p.Spec, chart.obj.(*corev1.PersistentVolumeClaim).Spec
	case *corev1.ServiceAccount:
		c := chart.obj.(*corev1.ServiceAccount)
		a, b = p.AutomountServiceAccountToken, c.AutomountServiceAccountToken
	case *rbacv1.ClusterRole:
		a, b = p.Rules, chart.obj.(*rbacv1.ClusterRole).Rules
	case *rbacv1.ClusterRoleBinding:
		c := chart.obj.(*rbacv1.ClusterRoleBinding)
		a, b = []any{p.RoleRef, p.Subjects}, []any{c.RoleRef, c.Subjects}
	default:
		t.Errorf("%s: no comparison for %T", key, plain.obj)
		return
	}
	if !equality.Semantic.DeepEqual(a, b) {
		t.Errorf("%s differs between %s (-) and the chart (+):\n%s", key, plain.source, lineDiff(a, b))
	}
}

// lineDiff shows the YAML lines of a and b that the other lacks.
func lineDiff(a, b any) string {
	ya, _ := yaml.Marshal(a)
	yb, _ := yaml.Marshal(b)
	la, lb := strings.Split(string(ya), "\n"), strings.Split(string(yb), "\n")
	count := map[string]int{}
	for _, l := range lb {
		count[l]++
	}
	var out []string
	for _, l := range la {
		if count[l] > 0 {
			count[l]--
			continue
		}
		out = append(out, "- "+l)
	}
	count = map[string]int{}
	for _, l := range la {
		count[l]++
	}
	for _, l := range lb {
		if count[l] > 0 {
			count[l]--
			continue
		}
		out = append(out, "+ "+l)
	}
	return strings.Join(out, "\n")
}

func sortedKeys(m map[string]object) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestHelmChartVariants renders the other store types and several handlers,
// decodes them strictly, and checks every --handler the installer accepts.
func TestHelmChartVariants(t *testing.T) {
	values := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(values, []byte(`handlers:
  - name: snapshot
    store: /var/lib/gpusnap/store
    restore: auto
    autoCheckpoint: on-ready
    controlDir: /run/gpusnap
    options:
      ignore_env: [POD_IP, POD_NAME]
      lock_timeout: 60s
      restore_huge_pages: true
      restore_threads: 16
  - name: snapshot-strict
    store: /var/lib/gpusnap/store/strict
    restore: required
example:
  enabled: true
  handler: snapshot-strict
  namespace: inference
`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		args       []string
		claim      string // "" when the DaemonSet mounts no store
		handlers   []string
		runtimeCls []string
	}{
		{
			name:       "two handlers",
			args:       []string{"-f", values},
			claim:      "gpusnap-store",
			handlers:   []string{handlerArg + ",ignore_env=POD_IP:POD_NAME,lock_timeout=60s,restore_huge_pages=true,restore_threads=16", "--handler=name=snapshot-strict,store=/var/lib/gpusnap/store/strict,restore=required"},
			runtimeCls: []string{"snapshot", "snapshot-strict"},
		},
		{
			name:       "existing claim",
			args:       []string{"--set", "store.type=existingClaim", "--set", "store.existingClaim=shared-store"},
			claim:      "shared-store",
			handlers:   []string{handlerArg},
			runtimeCls: []string{"snapshot"},
		},
		{
			name:       "host path",
			args:       []string{"--set", "store.type=hostPath"},
			handlers:   []string{handlerArg},
			runtimeCls: []string{"snapshot"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := byKey(t, decodeAll(t, "helm template ("+tc.name+")", helmTemplate(t, tc.args...)))
			for _, name := range tc.runtimeCls {
				checkRuntimeClass(t, get[*nodev1.RuntimeClass](t, objs, "RuntimeClass", name))
			}
			ds := get[*appsv1.DaemonSet](t, objs, "DaemonSet", "gpusnap-node")
			spec := ds.Spec.Template.Spec
			install := container(t, spec.InitContainers, "install")
			var got []string
			for _, a := range install.Args {
				if strings.HasPrefix(a, "--handler=") {
					got = append(got, a)
				}
			}
			if !slices.Equal(got, tc.handlers) {
				t.Errorf("--handler args %q, want %q", got, tc.handlers)
			}
			_, hasPV := objs["PersistentVolume/gpusnap-store"]
			var claim string
			for _, v := range spec.Volumes {
				if v.PersistentVolumeClaim != nil {
					claim = v.PersistentVolumeClaim.ClaimName
				}
			}
			if claim != tc.claim {
				t.Errorf("store claim %q, want %q", claim, tc.claim)
			}
			if hasPV != (tc.name == "two handlers") {
				t.Errorf("PersistentVolume rendered: %v", hasPV)
			}
			hasMountStore := slices.ContainsFunc(spec.InitContainers, func(c corev1.Container) bool { return c.Name == "mount-store" })
			if hasMountStore != (tc.claim != "") {
				t.Errorf("mount-store init container rendered: %v, want %v", hasMountStore, tc.claim != "")
			}
			checkInstallerArgs(t, install.Args)
		})
	}

	t.Run("store outside the mounted path is refused", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.yaml")
		if err := os.WriteFile(bad, []byte("handlers: [{name: snapshot, store: /srv/store}]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		helm, err := exec.LookPath("helm")
		if err != nil {
			t.Skip("helm is not on PATH")
		}
		out, err := exec.Command(helm, "template", releaseName, chartDir, "-f", bad).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "is not store.hostPath") {
			t.Errorf("helm template with a handler store outside store.hostPath: err %v\n%s", err, out)
		}
	})
}

// TestHelmRegistryCredentials: registryCredentialsSecret hands the Secret's
// docker config.json to the installer, read-only, which installs it for
// the handlers that name a registry; without it nothing of it renders.
func TestHelmRegistryCredentials(t *testing.T) {
	installOf := func(args ...string) (corev1.Container, []corev1.Volume) {
		objs := byKey(t, decodeAll(t, "helm template (registry)", helmTemplate(t, args...)))
		spec := get[*appsv1.DaemonSet](t, objs, "DaemonSet", "gpusnap-node").Spec.Template.Spec
		return container(t, spec.InitContainers, "install"), spec.Volumes
	}
	values := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(values, []byte(`registryCredentialsSecret: regcred
handlers:
  - name: snapshot
    store: /var/lib/gpusnap/store
    options:
      registry: registry.example:5000/checkpoints
      push: on-checkpoint
`), 0o644); err != nil {
		t.Fatal(err)
	}
	install, volumes := installOf("-f", values)
	if !slices.Contains(install.Args, "--registry-credentials=/gpusnap-registry/.dockerconfigjson") {
		t.Errorf("install args %q: no --registry-credentials", install.Args)
	}
	var mounted bool
	for _, m := range install.VolumeMounts {
		mounted = mounted || m.Name == "registry-credentials" && m.MountPath == "/gpusnap-registry" && m.ReadOnly
	}
	var secret *corev1.SecretVolumeSource
	for _, v := range volumes {
		if v.Name == "registry-credentials" {
			secret = v.Secret
		}
	}
	if !mounted || secret == nil || secret.SecretName != "regcred" || len(secret.Items) != 1 || secret.Items[0].Key != ".dockerconfigjson" {
		t.Errorf("credentials mounted %v, volume %+v", mounted, secret)
	}

	install, volumes = installOf()
	for _, a := range install.Args {
		if strings.HasPrefix(a, "--registry-credentials") {
			t.Errorf("default render passes %s", a)
		}
	}
	for _, v := range volumes {
		if v.Name == "registry-credentials" {
			t.Errorf("default render has the credentials volume")
		}
	}
}
