// Package images builds OCI image-layout tarballs from local files, so that
// the test bed needs no registry: `ctr images import` loads the result.
//
// An image is one uncompressed layer holding an optional static busybox (with
// a symlink per applet) plus any files the caller adds, such as a test
// program built with CGO_ENABLED=0.
package images

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"sort"
	"strings"
	"time"
)

// File is one file copied from the host into the image.
type File struct {
	Src  string // host path
	Dst  string // absolute path in the image
	Mode int64  // 0 keeps the host file's permission bits
}

// Spec describes an image to build.
type Spec struct {
	Ref        string   // full reference, e.g. docker.io/library/busybox:latest
	Busybox    string   // host path of a static busybox; empty for none
	Files      []File   // extra files
	Entrypoint []string // image config entrypoint
	Cmd        []string // image config cmd
	Env        []string // extra environment, after PATH
}

// epoch is the fixed mtime of every entry, so equal inputs give equal digests.
var epoch = time.Unix(0, 0)

// Build writes the OCI layout tarball of spec to w.
func Build(spec Spec, w io.Writer) error {
	if spec.Ref == "" || !strings.Contains(spec.Ref, ":") {
		return fmt.Errorf("image reference %q must include a tag", spec.Ref)
	}
	layer, err := buildLayer(spec)
	if err != nil {
		return err
	}
	layerDigest := digest(layer)
	config, err := json.Marshal(imageConfig(spec, layerDigest))
	if err != nil {
		return err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor("application/vnd.oci.image.config.v1+json", config),
		"layers":        []any{descriptor("application/vnd.oci.image.layer.v1.tar", layer)},
	})
	if err != nil {
		return err
	}
	md := descriptor("application/vnd.oci.image.manifest.v1+json", manifest)
	md["annotations"] = map[string]string{
		"io.containerd.image.name":          spec.Ref,
		"org.opencontainers.image.ref.name": spec.Ref[strings.LastIndex(spec.Ref, ":")+1:],
	}
	md["platform"] = map[string]string{"os": "linux", "architecture": "amd64"}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []any{md},
	})
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	entries := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"blobs/sha256/" + hexOf(layer), layer},
		{"blobs/sha256/" + hexOf(config), config},
		{"blobs/sha256/" + hexOf(manifest), manifest},
		{"index.json", index},
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch}); err != nil {
			return err
		}
	}
	for _, e := range entries {
		if err := writeFile(tw, e.name, 0o644, e.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

func imageConfig(spec Spec, layerDigest string) map[string]any {
	env := append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, spec.Env...)
	return map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      epoch.UTC().Format(time.RFC3339),
		"config":       map[string]any{"Env": env, "Entrypoint": spec.Entrypoint, "Cmd": spec.Cmd, "WorkingDir": "/"},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	}
}

// buildLayer makes the image's single layer: a minimal root plus files.
func buildLayer(spec Spec) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]int64{"bin": 0o755, "dev": 0o755, "etc": 0o755, "proc": 0o555, "sys": 0o555,
		"root": 0o700, "tmp": 0o1777, "run": 0o755, "var": 0o755, "usr": 0o755, "usr/bin": 0o755}
	for _, f := range spec.Files {
		for d := path.Dir(strings.TrimPrefix(f.Dst, "/")); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := dirs[d]; !ok {
				dirs[d] = 0o755
			}
		}
	}
	names := make([]string, 0, len(dirs))
	for d := range dirs {
		names = append(names, d)
	}
	sort.Strings(names)
	for _, d := range names {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: dirs[d], ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	etc := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	}
	for _, name := range []string{"etc/group", "etc/passwd"} {
		if err := writeFile(tw, name, 0o644, []byte(etc[name])); err != nil {
			return nil, err
		}
	}
	if spec.Busybox != "" {
		if err := addBusybox(tw, spec.Busybox); err != nil {
			return nil, err
		}
	}
	for _, f := range spec.Files {
		if err := addHostFile(tw, f); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// addBusybox adds /bin/busybox and one symlink per applet it lists.
func addBusybox(tw *tar.Writer, bin string) error {
	if err := addHostFile(tw, File{Src: bin, Dst: "/bin/busybox", Mode: 0o755}); err != nil {
		return err
	}
	out, err := exec.Command(bin, "--list").Output()
	if err != nil {
		return fmt.Errorf("listing busybox applets of %s: %w", bin, err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" {
			continue
		}
		hdr := &tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777, ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
	}
	return nil
}

func addHostFile(tw *tar.Writer, f File) error {
	if !path.IsAbs(f.Dst) {
		return fmt.Errorf("image path %q must be absolute", f.Dst)
	}
	data, err := os.ReadFile(f.Src)
	if err != nil {
		return fmt.Errorf("adding %s to image: %w", f.Src, err)
	}
	mode := f.Mode
	if mode == 0 {
		st, err := os.Stat(f.Src)
		if err != nil {
			return err
		}
		mode = int64(st.Mode().Perm())
	}
	return writeFile(tw, strings.TrimPrefix(f.Dst, "/"), mode, data)
}

func writeFile(tw *tar.Writer, name string, mode int64, data []byte) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

func descriptor(mediaType string, data []byte) map[string]any {
	return map[string]any{"mediaType": mediaType, "digest": digest(data), "size": len(data)}
}

func hexOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func digest(data []byte) string { return "sha256:" + hexOf(data) }
