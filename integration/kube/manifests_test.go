package kube

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// warnings collects the apiserver's warnings (deprecated fields and the
// like) for one request at a time.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) HandleWarningHeader(code int, agent, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.msgs
	w.msgs = nil
	return m
}

// dryRunner sends objects to the running kube-apiserver as server-side dry
// runs with strict field validation: defaulting, validation and admission
// (RuntimeClass, Pod Security, Priority, ...) run as for `kubectl apply
// --dry-run=server`, and nothing is stored.
type dryRunner struct {
	*objectClients
	warnings *warnings
	// created are the objects dry-run created (not updated), which must
	// not exist afterwards.
	created []dryRun
}

// dryRun is one object sent as a dry-run create.
type dryRun struct {
	name   string
	client dynamic.ResourceInterface
}

func newDryRunner(t *testing.T) *dryRunner {
	t.Helper()
	ctx := context.Background()
	// Namespaced manifests need their namespace to exist, for real.
	if _, err := cluster.Client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: manifestNamespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	w := &warnings{}
	config := rest.CopyConfig(cluster.Config)
	config.WarningHandler = w
	return &dryRunner{objectClients: newObjectClients(t, config), warnings: w}
}

// objectClients reach any kind of object the apiserver serves.
type objectClients struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newObjectClients(t *testing.T, config *rest.Config) *objectClients {
	t.Helper()
	dyn, err := dynamic.NewForConfig(config)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cluster.Client.Discovery()))
	return &objectClients{dyn: dyn, mapper: mapper}
}

// forObject is the client of obj's kind; namespaced kinds in obj's
// namespace, or "default" if it names none.
func (c *objectClients) forObject(obj *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := obj.GroupVersionKind()
	mapping, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("%s is not served: %w", gvk, err)
	}
	if mapping.Scope.Name() != "namespace" {
		return c.dyn.Resource(mapping.Resource), nil
	}
	ns := obj.GetNamespace()
	if ns == "" {
		ns = "default"
	}
	return c.dyn.Resource(mapping.Resource).Namespace(ns), nil
}

// run dry-runs obj in a subtest of its own. Objects that already exist
// (the RuntimeClass the test cluster uses, the namespace) are dry-run
// updated instead. Any apiserver warning fails the subtest.
func (d *dryRunner) run(t *testing.T, name string, obj *unstructured.Unstructured) {
	t.Run(name, func(t *testing.T) {
		ctx := context.Background()
		client, err := d.forObject(obj)
		if err != nil {
			t.Fatal(err)
		}
		d.warnings.take()
		_, err = client.Create(ctx, obj, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
		if apierrors.IsAlreadyExists(err) {
			existing, gerr := client.Get(ctx, obj.GetName(), metav1.GetOptions{})
			if gerr != nil {
				t.Fatal(gerr)
			}
			obj.SetResourceVersion(existing.GetResourceVersion())
			_, err = client.Update(ctx, obj, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
			t.Logf("exists already: dry-run update")
		} else if err == nil {
			d.created = append(d.created, dryRun{name: name, client: client})
		}
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		for _, msg := range d.warnings.take() {
			t.Errorf("apiserver warning: %s", msg)
		}
	})
}

// checkNothingStored fails if an object that was dry-run created exists.
func (d *dryRunner) checkNothingStored(t *testing.T, objs map[string]*unstructured.Unstructured) {
	t.Helper()
	if len(d.created) == 0 {
		t.Fatal("no object was dry-run created")
	}
	for _, c := range d.created {
		if _, err := c.client.Get(context.Background(), objs[c.name].GetName(), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the dry run stored %s: %v", c.name, err)
		}
	}
}

// manifestNamespace is the namespace of the manifests and the chart's
// release namespace.
const manifestNamespace = "gpusnap-system"

// TestManifestsServerDryRun dry-runs every document of
// contrib/kubernetes/*.yaml against the running kube-apiserver.
func TestManifestsServerDryRun(t *testing.T) {
	d := newDryRunner(t)
	files, err := filepath.Glob(filepath.Join(manifests, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", manifests, err)
	}
	sent := map[string]*unstructured.Unstructured{}
	for _, file := range files {
		docs, err := readDocuments(file)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for i, obj := range docs {
			name := fmt.Sprintf("%s#%d %s/%s", filepath.Base(file), i, obj.GetKind(), obj.GetName())
			sent[name] = obj
			d.run(t, name, obj)
		}
	}
	d.checkNothingStored(t, sent)
}

// chartDir is the Helm chart of the same objects.
const chartDir = "../../contrib/helm/gpusnap"

// TestHelmChartServerDryRun renders the Helm chart (helm template, as
// `helm install` would send it) with its defaults and with the values that
// switch templates on or off, and dry-runs every object it renders against
// the running kube-apiserver.
func TestHelmChartServerDryRun(t *testing.T) {
	d := newDryRunner(t)
	sent := map[string]*unstructured.Unstructured{}
	for _, v := range []struct {
		name string
		args []string
	}{
		{name: "defaults"},
		{name: "example", args: []string{"--set", "example.enabled=true"}},
		{name: "hostPath store", args: []string{"--set", "store.type=hostPath"}},
		{name: "existing claim", args: []string{"--set", "store.type=existingClaim", "--set", "store.existingClaim=gpusnap-store-claim"}},
		{name: "registry credentials", args: []string{"--set", "registryCredentialsSecret=gpusnap-registry"}},
	} {
		docs := helmTemplate(t, manifestNamespace, v.args...)
		for i, obj := range docs {
			name := fmt.Sprintf("%s#%d %s/%s", v.name, i, obj.GetKind(), obj.GetName())
			sent[name] = obj
			d.run(t, name, obj)
		}
	}
	d.checkNothingStored(t, sent)
}

// helmTemplate renders the chart into its objects, as `helm install`
// would send them to namespace, with more arguments of `helm template`.
func helmTemplate(t *testing.T, namespace string, more ...string) []*unstructured.Unstructured {
	t.Helper()
	helm, err := exec.LookPath("helm")
	if err != nil {
		t.Fatalf("helm is not on PATH (make deps installs it): %v", err)
	}
	args := append([]string{"template", "gpusnap", chartDir, "--namespace", namespace}, more...)
	var stderr bytes.Buffer
	cmd := exec.Command(helm, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	docs, err := decodeDocuments(out)
	if err != nil || len(docs) == 0 {
		t.Fatalf("helm %s rendered %d objects: %v", strings.Join(args, " "), len(docs), err)
	}
	return docs
}

// readDocuments splits a YAML file into its objects.
func readDocuments(file string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return decodeDocuments(data)
}

// decodeDocuments splits YAML into its objects, skipping empty documents
// (comments only).
func decodeDocuments(data []byte) ([]*unstructured.Unstructured, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []*unstructured.Unstructured
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		js, err := utilyaml.ToJSON(doc)
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(js)) == 0 || string(bytes.TrimSpace(js)) == "null" {
			continue
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(js); err != nil {
			return nil, err
		}
		out = append(out, obj)
	}
}
