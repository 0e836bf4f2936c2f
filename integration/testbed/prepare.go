package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/images"
)

// Image references the bed imports.
const (
	BusyboxRef = "docker.io/library/busybox:latest"
	PauseRef   = "registry.k8s.io/pause:3.10.2"
)

// Program is a Go program built for the bed: a package path and the name of
// the binary it becomes.
type Program struct {
	Name, Package string
	CGO           bool
}

// Prepare builds the shim and the pause program into dir/build, starts a bed
// in dir/bed with the given options for the `snapshot` handler and any more
// handlers (name to options), and imports the busybox and
// pause images. It is what tests, benchmarks and the demo share.
func Prepare(dir, shimOptions string, handlers map[string]string) (*Bed, error) {
	build := filepath.Join(dir, "build")
	programs := []Program{
		{Name: ShimBinary, Package: "./cmd/containerd-shim-snapshot-v2", CGO: true},
		{Name: "pause", Package: "./integration/testapps/pause"},
	}
	if err := Build(build, programs...); err != nil {
		return nil, err
	}
	bed, err := Start(Config{Dir: filepath.Join(dir, "bed"), ShimPath: filepath.Join(build, ShimBinary), ShimOptions: shimOptions, Handlers: handlers})
	if err != nil {
		return nil, err
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		busybox = "/bin/busybox"
	}
	specs := []images.Spec{
		{Ref: BusyboxRef, Busybox: busybox, Cmd: []string{"sh"}},
		{Ref: PauseRef, Files: []images.File{{Src: filepath.Join(build, "pause"), Dst: "/pause"}}, Entrypoint: []string{"/pause"}},
	}
	for _, spec := range specs {
		if err := bed.BuildImage(spec); err != nil {
			bed.Stop()
			return nil, err
		}
	}
	return bed, nil
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
