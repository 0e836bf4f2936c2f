package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/images"
)

// Image references the bed imports.
const (
	BusyboxRef = "docker.io/library/busybox:latest"
	PauseRef   = "registry.k8s.io/pause:3.10.2"
	// StatefulRef is the checkpoint/restore workload (integration/testapps/stateful).
	StatefulRef = "docker.io/library/stateful:test"
	// StatefulControlDir is where the stateful image expects its control directory.
	StatefulControlDir = "/run/snapshot"
)

// Program is a Go program built for the bed: a package path and the name of
// the binary it becomes.
// CLIBinary is the operator CLI that Prepare builds next to the shim, in
// <dir>/build.
const CLIBinary = "gpusnap"

type Program struct {
	Name, Package string
	CGO           bool
}

// Prepare builds the shim and the pause program into dir/build, starts a bed
// in dir/bed with the given options for the `snapshot` handler and any more
// handlers (name to options) and containerd environment, and imports the busybox and
// pause images. It is what tests, benchmarks and the demo share.
func Prepare(dir, shimOptions string, handlers map[string]string, env ...string) (*Bed, error) {
	build := filepath.Join(dir, "build")
	programs := []Program{
		{Name: ShimBinary, Package: "./cmd/containerd-shim-snapshot-v2", CGO: true},
		{Name: "pause", Package: "./integration/testapps/pause"},
		{Name: "stateful", Package: "./integration/testapps/stateful"},
		{Name: CLIBinary, Package: "./cmd/gpusnap", CGO: true},
	}
	if err := Build(build, programs...); err != nil {
		return nil, err
	}
	bed, err := Start(Config{Dir: filepath.Join(dir, "bed"), ShimPath: filepath.Join(build, ShimBinary), ShimOptions: shimOptions, Handlers: handlers, Env: env})
	if err != nil {
		return nil, err
	}
	if err := bed.ImportImages(build); err != nil {
		bed.Stop()
		return nil, err
	}
	return bed, nil
}

// ImportImages builds the busybox, pause and stateful images, from the
// programs Prepare built into build, and imports them.
func (b *Bed) ImportImages(build string) error {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		busybox = "/bin/busybox"
	}
	specs := []images.Spec{
		{Ref: BusyboxRef, Busybox: busybox, Cmd: []string{"sh"}},
		{Ref: PauseRef, Files: []images.File{{Src: filepath.Join(build, "pause"), Dst: "/pause"}}, Entrypoint: []string{"/pause"}},
		{Ref: StatefulRef, Busybox: busybox, Entrypoint: []string{"/usr/bin/stateful"},
			Files: []images.File{{Src: filepath.Join(build, "stateful"), Dst: "/usr/bin/stateful"}},
			// CRIU cannot dump MPTCP sockets, which Go listeners use by default.
			Env: []string{"CONTROL_DIR=" + StatefulControlDir, "GODEBUG=multipathtcp=0"}},
	}
	for _, spec := range specs {
		if err := b.BuildImage(spec); err != nil {
			return err
		}
	}
	return nil
}

// Build compiles programs of this module into dir. Programs without cgo are
// static, so they run inside minimal images.
func Build(dir string, programs ...Program) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	for _, p := range programs {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, p.Name), p.Package)
		cmd.Dir = root
		cgo := "0"
		if p.CGO {
			cgo = "1"
		}
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v: %s", p.Package, err, out)
		}
	}
	return nil
}

// BuildImage builds an OCI tarball from spec in the bed's directory and
// imports it.
func (b *Bed) BuildImage(spec images.Spec) error {
	tarball := filepath.Join(b.Dir, "image.tar")
	f, err := os.Create(tarball)
	if err != nil {
		return err
	}
	defer os.Remove(tarball)
	if err := images.Build(spec, f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return b.Import(tarball)
}

// moduleRoot is the repository root, where `go build ./cmd/...` works.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the shim's Go module")
	}
	return filepath.Dir(mod), nil
}

// Netns creates a named network namespace with loopback up, the way CRI
// hands pods a namespace by path, and returns its path and its removal.
func Netns(name string) (string, func(), error) {
	for _, args := range [][]string{{"netns", "add", name}, {"-n", name, "link", "set", "lo", "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			exec.Command("ip", "netns", "delete", name).Run()
			return "", nil, fmt.Errorf("ip %v: %v: %s", args, err, out)
		}
	}
	madeNetns.Store(name, true)
	return "/run/netns/" + name, func() { exec.Command("ip", "netns", "delete", name).Run() }, nil
}

// madeNetns holds the names Netns created in this process. Test beds of
// other processes (a second suite running beside this one) make theirs
// with the same prefix; a bed must neither report nor remove those.
var madeNetns sync.Map

// ownsNetns reports whether network namespace ns, new since the bed
// started, belongs to this bed: made here by Netns, or made by this bed's
// containerd for a CRI pod (any name other than Netns's prefix).
func (b *Bed) ownsNetns(ns string) bool {
	if b.netnsBefore[ns] {
		return false
	}
	if _, mine := madeNetns.Load(ns); mine {
		return true
	}
	return !strings.HasPrefix(ns, NetnsPrefix)
}

// NetnsPrefix starts the name of every namespace the tests make with Netns.
const NetnsPrefix = "snaptest-"
