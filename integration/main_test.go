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
	"strings"
	"testing"

	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/images"
	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
)

const (
	busyboxRef = "docker.io/library/busybox:latest"
	pauseRef   = "registry.k8s.io/pause:3.10.2"
)

var bed *testbed.Bed

// runtimes are the two runtimes every scenario runs on: runc is the
// reference, snapshot must behave the same.
var runtimes = []string{testbed.RuncRuntime, testbed.SnapshotRuntime}

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
	build := filepath.Join(dir, "build")
	shimPath, err := buildArtifacts(build)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: build:", err)
		os.RemoveAll(dir)
		return 1
	}
	bed, err = testbed.Start(testbed.Config{Dir: filepath.Join(dir, "bed"), ShimPath: shimPath})
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: start containerd:", err)
		os.RemoveAll(dir)
		return 1
	}
	defer os.RemoveAll(dir)
	code := 1
	if err := importImages(build); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
	} else {
		code = m.Run()
	}
	left, err := bed.Stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		code = 1
	}
	if len(left) > 0 {
		fmt.Fprintf(os.Stderr, "integration: teardown left behind:\n  %s\n", strings.Join(left, "\n  "))
		code = 1
	}
	return code
}

func checkPrerequisites() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root")
	}
	for _, tool := range []string{"containerd", "ctr", "crictl", "runc", "criu", "containerd-shim-runc-v2", "script"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found in PATH", tool)
		}
	}
	return nil
}

// moduleRoot is the repository root, where `go build ./cmd/...` works.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// buildArtifacts builds the shim and the static test programs.
func buildArtifacts(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	builds := map[string]string{
		"containerd-shim-snapshot-v2": "./cmd/containerd-shim-snapshot-v2",
		"pause":                       "./integration/testapps/pause",
	}
	for out, pkg := range builds {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, out), pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgoFor(out))
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %v: %s", pkg, err, b)
		}
	}
	return filepath.Join(dir, "containerd-shim-snapshot-v2"), nil
}

// cgoFor keeps test programs static (they run inside minimal images) while
// the shim keeps cgo for the CUDA driver and NVML.
func cgoFor(binary string) string {
	if binary == "containerd-shim-snapshot-v2" {
		return "1"
	}
	return "0"
}

func importImages(dir string) error {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		busybox = "/bin/busybox"
	}
	specs := []images.Spec{
		{Ref: busyboxRef, Busybox: busybox, Cmd: []string{"sh"}},
		{Ref: pauseRef, Files: []images.File{{Src: filepath.Join(dir, "pause"), Dst: "/pause"}}, Entrypoint: []string{"/pause"}},
	}
	for i, spec := range specs {
		tarball := filepath.Join(dir, fmt.Sprintf("image-%d.tar", i))
		f, err := os.Create(tarball)
		if err != nil {
			return err
		}
		if err := images.Build(spec, f); err != nil {
			f.Close()
			return err
		}
		f.Close()
		if err := bed.Import(tarball); err != nil {
			return err
		}
	}
	return nil
}
