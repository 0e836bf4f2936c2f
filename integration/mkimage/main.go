// Command mkimage builds an OCI image-layout tarball without a registry, for
// `ctr images import`:
//
//	mkimage -o busybox.tar -ref docker.io/library/busybox:latest -busybox /bin/busybox -- sh
//	mkimage -o app.tar -ref local/app:1 -busybox /bin/busybox -add ./app=/usr/bin/app -- /usr/bin/app
//
// Arguments after "--" become the image's entrypoint.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/images"
)

type fileList []images.File

func (l *fileList) String() string { return fmt.Sprint(*l) }

func (l *fileList) Set(v string) error {
	src, dst, ok := strings.Cut(v, "=")
	if !ok || src == "" || !strings.HasPrefix(dst, "/") {
		return fmt.Errorf("want HOSTPATH=/IMAGE/PATH, got %q", v)
	}
	*l = append(*l, images.File{Src: src, Dst: dst})
	return nil
}

func main() {
	var (
		spec images.Spec
		out  string
		adds fileList
		env  string
	)
	flag.StringVar(&out, "o", "", "output tarball")
	flag.StringVar(&spec.Ref, "ref", "", "image reference with tag")
	flag.StringVar(&spec.Busybox, "busybox", "", "static busybox to install as /bin/busybox with applet links")
	flag.Var(&adds, "add", "HOSTPATH=/IMAGE/PATH to add (repeatable)")
	flag.StringVar(&env, "env", "", "comma-separated KEY=VALUE environment")
	flag.Parse()
	spec.Files = adds
	spec.Entrypoint = flag.Args()
	if env != "" {
		spec.Env = strings.Split(env, ",")
	}
	if out == "" {
		fmt.Fprintln(os.Stderr, "mkimage: -o is required")
		os.Exit(2)
	}
	if err := write(out, spec); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func write(out string, spec images.Spec) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := images.Build(spec, f); err != nil {
		f.Close()
		os.Remove(out)
		return err
	}
	return f.Close()
}
