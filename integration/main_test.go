// Package integration tests the shim end to end: a private containerd with
// the real runc shim and this shim side by side, driven by the real ctr and
// crictl clients. Every test runs the same scenario on both runtimes and
// compares what the clients see.
package integration

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
	"github.com/gpusnap/containerd-shim-snapshot-v2/cudackpt"
	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
)

const busyboxRef = testbed.BusyboxRef

var bed *testbed.Bed

// runtimes are the two runtimes every scenario runs on: runc is the
// reference, snapshot must behave the same.
var runtimes = []string{testbed.RuncRuntime, containerdconfig.RuntimeType}

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("integration: skipped in -short mode")
		os.Exit(0)
	}
	if err := checkPrerequisites(); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err, "(run `make deps` first)")
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("/var/tmp", "snapshot-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := runWithBed(m, dir)
	os.Exit(code)
}

func runWithBed(m *testing.M, dir string) int {
	defer os.RemoveAll(dir)
	// Start from a fresh machine's /run/netns (a plain directory): the bed
	// must make it a mount point itself (testbed.ShareNetnsDir), or CRI
	// pods' namespaces are left mounted at teardown.
	if err := testbed.UnmountEmptyNetnsDir(); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	lib, err := buildFakeCUDA(filepath.Join(dir, "fakecuda"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: fake libcuda:", err)
		return 1
	}
	eventsDir = filepath.Join(dir, "events")
	cliPath = filepath.Join(dir, "build", testbed.CLIBinary)
	bed, err = testbed.Prepare(dir, "", criHandlerOptions(filepath.Join(dir, "stores")), "SNAPSHOT_LIBCUDA="+lib,
		"CRIU_CALL_LOG="+filepath.Join(fakeCUDAState, "calls.log"), "SNAPSHOT_EVENTS_DIR="+eventsDir,
		cudackpt.EnvDeviceMajors+"="+standInDeviceMajor)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: preparing the test bed:", err)
		return 1
	}
	code := m.Run()
	left, err := bed.Stop()
	return testbed.ReportLeftovers("integration: teardown", left, err, code)
}

func checkPrerequisites() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root")
	}
	for _, tool := range []string{"containerd", "ctr", "crictl", "runc", "criu", "containerd-shim-runc-v2", "script", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found in PATH", tool)
		}
	}
	return nil
}
