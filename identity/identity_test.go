package identity

import (
	"regexp"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// podSpec is the spec CRI would give the "server" container of pod podName.
func podSpec(podName, podUID string) *specs.Spec {
	kubelet := "/var/lib/kubelet/pods/" + podUID
	sandbox := "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/" + podName
	return &specs.Spec{
		Hostname: podName,
		Root:     &specs.Root{Path: "rootfs"},
		Process: &specs.Process{
			Args: []string{"python", "-m", "server", "--port=8000"},
			Env: []string{
				"PATH=/usr/local/bin:/usr/bin:/bin",
				"HOSTNAME=" + podName,
				"MODEL=llama-8b",
				"POD_NAME=" + podName,
				"POD_IP=10.0.0." + podUID[:1],
				"NVIDIA_VISIBLE_DEVICES=GPU-" + podUID,
			},
			Cwd:  "/app",
			User: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{44, 4}},
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs"},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts"},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue"},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs"},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup"},
			{Destination: "/etc/hosts", Type: "bind", Source: kubelet + "/etc-hosts"},
			{Destination: "/dev/termination-log", Type: "bind", Source: kubelet + "/containers/server/" + podName},
			{Destination: "/etc/hostname", Type: "bind", Source: sandbox + "/hostname"},
			{Destination: "/etc/resolv.conf", Type: "bind", Source: sandbox + "/resolv.conf"},
			{Destination: "/dev/shm", Type: "bind", Source: "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/" + podName + "/shm"},
			{Destination: "/models", Type: "bind", Source: kubelet + "/volumes/kubernetes.io~empty-dir/models"},
			{Destination: "/var/run/secrets/kubernetes.io/serviceaccount", Type: "bind", Source: kubelet + "/volumes/kubernetes.io~projected/kube-api-access-" + podName},
			{Destination: "/run/gpusnap", Type: "bind", Source: "/run/gpusnap/" + podName},
		},
		Annotations: map[string]string{
			"io.kubernetes.cri.image-name":     "registry.local/llm-server:v1",
			"io.kubernetes.cri.sandbox-id":     podUID,
			"io.kubernetes.cri.sandbox-name":   podName,
			"io.kubernetes.cri.container-type": "container",
		},
	}
}

var testIdentityOptions = Options{
	IgnoreEnv:    []string{"POD_*"},
	IgnoreMounts: []string{"/run/gpusnap"},
	GPU:          GPU{Product: "NVIDIA H100 80GB HBM3", Count: 1},
}

func TestIdentitySameWorkloadInAnotherPod(t *testing.T) {
	key, fields := Of(podSpec("llm-0", "1111"), testIdentityOptions)
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(key) {
		t.Fatalf("key %q is not a hex sha256", key)
	}
	want := map[string]string{
		FieldImage:  "registry.local/llm-server:v1",
		FieldArgs:   `["python","-m","server","--port=8000"]`,
		FieldEnv:    `["MODEL=llama-8b","PATH=/usr/local/bin:/usr/bin:/bin"]`,
		FieldCwd:    "/app",
		FieldUser:   "1000:1000:4,44",
		FieldMounts: `["/models"]`,
		FieldGPUs:   "1 x NVIDIA H100 80GB HBM3",
	}
	if field, a, b, differs := Diff(want, fields); differs || len(fields) != len(want) {
		t.Fatalf("fields %v: %s is %q, want %q", fields, field, b, a)
	}
	if Key(fields) != key {
		t.Fatal("Key(fields) differs from the key Of returned")
	}

	same := map[string]func(*specs.Spec){
		"other pod, hostname, ids, mount sources": func(s *specs.Spec) { *s = *podSpec("llm-7", "9999") },
		"env order": func(s *specs.Spec) {
			e := s.Process.Env
			e[0], e[2] = e[2], e[0]
		},
		"mount order": func(s *specs.Spec) {
			m := s.Mounts
			m[0], m[len(m)-1] = m[len(m)-1], m[0]
		},
		"mount destination spelling": func(s *specs.Spec) { s.Mounts[11].Destination = "/models/" },
		"additional gid order":       func(s *specs.Spec) { s.Process.User.AdditionalGids = []uint32{4, 44, 4} },
		"no control dir mount":       func(s *specs.Spec) { s.Mounts = s.Mounts[:len(s.Mounts)-1] },
		"mount below control dir": func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/run/gpusnap/extra", Source: "/x"})
		},
		"rootfs path and annotations": func(s *specs.Spec) {
			s.Root.Path = "/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs"
			s.Annotations["io.kubernetes.cri.container-name"] = "server"
		},
	}
	for name, mutate := range same {
		t.Run("same/"+name, func(t *testing.T) {
			spec := podSpec("llm-0", "1111")
			mutate(spec)
			k, f := Of(spec, testIdentityOptions)
			if field, a, b, differs := Diff(fields, f); differs || k != key {
				t.Fatalf("key changed: %s %q -> %q", field, a, b)
			}
		})
	}

	different := []struct {
		name   string
		field  string
		mutate func(*specs.Spec, *Options)
	}{
		{"image", FieldImage, func(s *specs.Spec, _ *Options) {
			s.Annotations["io.kubernetes.cri.image-name"] = "registry.local/llm-server:v2"
		}},
		{"args", FieldArgs, func(s *specs.Spec, _ *Options) { s.Process.Args[3] = "--port=9000" }},
		{"args split differently", FieldArgs, func(s *specs.Spec, _ *Options) {
			s.Process.Args = []string{"python", "-m server", "--port=8000"}
		}},
		{"env value", FieldEnv, func(s *specs.Spec, _ *Options) { s.Process.Env[2] = "MODEL=llama-70b" }},
		{"env added", FieldEnv, func(s *specs.Spec, _ *Options) {
			s.Process.Env = append(s.Process.Env, "CUDA_VISIBLE_DEVICES=1")
		}},
		{"env no longer ignored", FieldEnv, func(_ *specs.Spec, o *Options) { o.IgnoreEnv = nil }},
		{"cwd", FieldCwd, func(s *specs.Spec, _ *Options) { s.Process.Cwd = "/" }},
		{"uid", FieldUser, func(s *specs.Spec, _ *Options) { s.Process.User.UID = 0 }},
		{"additional gids", FieldUser, func(s *specs.Spec, _ *Options) { s.Process.User.AdditionalGids = nil }},
		{"mount destination", FieldMounts, func(s *specs.Spec, _ *Options) { s.Mounts[11].Destination = "/weights" }},
		{"mount added", FieldMounts, func(s *specs.Spec, _ *Options) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/cache", Source: "/x"})
		}},
		{"gpu product", FieldGPUs, func(_ *specs.Spec, o *Options) { o.GPU.Product = "NVIDIA A100-SXM4-80GB" }},
		{"gpu count", FieldGPUs, func(_ *specs.Spec, o *Options) { o.GPU.Count = 2 }},
		{"no gpu", FieldGPUs, func(_ *specs.Spec, o *Options) { o.GPU = GPU{} }},
	}
	for _, tc := range different {
		t.Run("different/"+tc.name, func(t *testing.T) {
			spec, o := podSpec("llm-0", "1111"), testIdentityOptions
			tc.mutate(spec, &o)
			k, f := Of(spec, o)
			if k == key {
				t.Fatal("key did not change")
			}
			field, a, b, differs := Diff(fields, f)
			if !differs || field != tc.field {
				t.Fatalf("Diff = %q (%q -> %q, %v), want field %q", field, a, b, differs, tc.field)
			}
			if a != fields[field] || b != f[field] {
				t.Fatalf("Diff values %q, %q; want %q, %q", a, b, fields[field], f[field])
			}
		})
	}
}

func TestIdentityWithoutCRI(t *testing.T) {
	// ctr: no image annotation, no process is an odd but valid spec.
	spec := &specs.Spec{Process: &specs.Process{Args: []string{"sh"}, Cwd: "/"}}
	key, fields := Of(spec, Options{})
	if fields[FieldImage] != "" || fields[FieldGPUs] != "" || fields[FieldMounts] != "[]" || fields[FieldEnv] != "[]" {
		t.Fatalf("fields = %v", fields)
	}
	spec.Annotations = map[string]string{"io.containerd.image.name": "docker.io/library/busybox:latest"}
	k2, f2 := Of(spec, Options{})
	if k2 == key || f2[FieldImage] != "docker.io/library/busybox:latest" {
		t.Fatalf("containerd image annotation ignored: %v", f2)
	}
	if _, f := Of(&specs.Spec{}, Options{}); f[FieldArgs] != "" || f[FieldUser] != "" {
		t.Fatalf("spec without process: %v", f)
	}
}

func TestDiff(t *testing.T) {
	a := map[string]string{FieldArgs: "x", FieldEnv: "1", FieldGPUs: "1 x A"}
	for _, tc := range []struct {
		name  string
		b     map[string]string
		field string
	}{
		{"equal", map[string]string{FieldArgs: "x", FieldEnv: "1", FieldGPUs: "1 x A"}, ""},
		{"first in fixed order wins", map[string]string{FieldArgs: "x", FieldEnv: "2", FieldGPUs: "2 x A"}, FieldEnv},
		{"missing counts as empty", map[string]string{FieldArgs: "x", FieldEnv: "1"}, FieldGPUs},
		{"unknown field after known ones", map[string]string{FieldArgs: "x", FieldEnv: "1", FieldGPUs: "1 x A", "zz": "v"}, "zz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			field, _, _, differs := Diff(a, tc.b)
			if field != tc.field || differs != (tc.field != "") {
				t.Fatalf("Diff = %q, %v; want %q", field, differs, tc.field)
			}
		})
	}
}
