package kube

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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

// TestManifestsServerDryRun sends every document of contrib/kubernetes/*.yaml
// to the running kube-apiserver as a server-side dry run with strict field
// validation: defaulting, validation and admission (RuntimeClass, Pod
// Security, Priority, ...) run as for `kubectl apply --dry-run=server`, and
// nothing is stored. Objects that already exist (the RuntimeClass the test
// cluster uses, the namespace) are dry-run updated instead.
func TestManifestsServerDryRun(t *testing.T) {
	ctx := context.Background()
	// Namespaced manifests need their namespace to exist, for real.
	if _, err := cluster.Client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "gpusnap-system"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	w := &warnings{}
	config := rest.CopyConfig(cluster.Config)
	config.WarningHandler = w
	dyn, err := dynamic.NewForConfig(config)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cluster.Client.Discovery()))

	files, err := filepath.Glob(filepath.Join(manifests, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", manifests, err)
	}
	for _, file := range files {
		docs, err := readDocuments(file)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for i, obj := range docs {
			name := fmt.Sprintf("%s#%d %s/%s", filepath.Base(file), i, obj.GetKind(), obj.GetName())
			t.Run(name, func(t *testing.T) {
				gvk := obj.GroupVersionKind()
				mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
				if err != nil {
					t.Fatalf("%s is not served: %v", gvk, err)
				}
				var client dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
				if mapping.Scope.Name() == "namespace" {
					ns := obj.GetNamespace()
					if ns == "" {
						ns = "default"
					}
					client = dyn.Resource(mapping.Resource).Namespace(ns)
				}
				w.take()
				_, err = client.Create(ctx, obj, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
				if apierrors.IsAlreadyExists(err) {
					existing, gerr := client.Get(ctx, obj.GetName(), metav1.GetOptions{})
					if gerr != nil {
						t.Fatal(gerr)
					}
					obj.SetResourceVersion(existing.GetResourceVersion())
					_, err = client.Update(ctx, obj, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
					t.Logf("exists already: dry-run update")
				}
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				for _, msg := range w.take() {
					t.Errorf("apiserver warning: %s", msg)
				}
			})
		}
	}
	// Nothing was stored.
	if _, err := cluster.Client.AppsV1().DaemonSets("gpusnap-system").Get(ctx, "gpusnap-node", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the dry run stored the DaemonSet: %v", err)
	}
}

// readDocuments splits a YAML file into its objects, skipping empty
// documents (comments only).
func readDocuments(file string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
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
