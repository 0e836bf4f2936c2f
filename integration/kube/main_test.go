// Package kube runs the shim under a real single-node Kubernetes: etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler and a kubelet
// (built by `make deps-k8s`) on a private containerd test bed
// (integration/testbed). Pods select the shim through
// the RuntimeClass of contrib/kubernetes, as they would on a cluster; the
// kubelet drives containerd's CRI, which starts this shim.
//
// It has its own bed, so it never runs inside the main integration
// package's: both use the bed's fixed CNI bridge. It runs only when
// SNAPSHOT_KUBE=1 (`make test-kube` sets it), so that `go test
// ./integration/...` does not start a second bed next to the first.
package kube

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
	"github.com/gpusnap/containerd-shim-snapshot-v2/internal/testregistry"
)

var (
	cluster *Cluster
	// store is the snapshot handler's checkpoint store.
	store string
	// reg is the registry the handlers pushHandler and pullHandler share
	// (registry_test.go).
	reg *testregistry.Registry
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("kube: skipped in -short mode")
		os.Exit(0)
	}
	if os.Getenv("SNAPSHOT_KUBE") != "1" {
		fmt.Println("kube: skipped: set SNAPSHOT_KUBE=1 (make test-kube)")
		os.Exit(0)
	}
	if err := checkPrerequisites(); err != nil {
		fmt.Fprintln(os.Stderr, "kube:", err, "(run `make deps deps-k8s` first)")
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("/var/tmp", "snapshot-kube-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := runWithCluster(m, dir)
	os.Exit(code)
}

func runWithCluster(m *testing.M, dir string) (code int) {
	defer os.RemoveAll(dir)
	var err error
	store = filepath.Join(dir, "store")
	options := fmt.Sprintf("store = %q\ncontrol_dir = %q\nauto_checkpoint = \"on-ready\"\n", store, testbed.StatefulControlDir)
	var stopRegistry func()
	if reg, stopRegistry, err = testregistry.Run(filepath.Join(dir, "registry")); err != nil {
		fmt.Fprintln(os.Stderr, "kube: starting the registry:", err)
		return 1
	}
	defer stopRegistry()
	bed, err := testbed.Prepare(dir, options, registryHandlers(dir))
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube: preparing the test bed:", err)
		return 1
	}
	defer func() {
		left, err := bed.Stop()
		code = testbed.ReportLeftovers("kube: test bed", left, err, code)
	}()
	cluster, err = StartCluster(filepath.Join(dir, "kube"), bed)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube: starting the cluster:", err)
		return 1
	}
	code = m.Run()
	if code != 0 {
		cluster.printLogs()
	}
	left, err := cluster.Stop()
	return testbed.ReportLeftovers("kube: the cluster", left, err, code)
}

func checkPrerequisites() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root")
	}
	for _, tool := range []string{"containerd", "ctr", "crictl", "runc", "criu", "containerd-shim-runc-v2", "go",
		"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found in PATH", tool)
		}
	}
	return nil
}
