package cudackpt

import (
	"encoding/json"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestUUID(t *testing.T) {
	const s = "GPU-0123abcd-4567-89ef-0123-456789abcdef"
	u, err := ParseUUID(s)
	if err != nil {
		t.Fatal(err)
	}
	if u.String() != s || u[0] != 0x01 || u[15] != 0xef {
		t.Fatalf("round trip: %s %x", u, u[:])
	}
	if v, err := ParseUUID(strings.ToUpper(s[4:])); err != nil || v != u {
		t.Fatalf("without prefix, upper case: %v %v", v, err)
	}
	b, _ := json.Marshal(GPUPair{Old: u, New: u})
	var p GPUPair
	if err := json.Unmarshal(b, &p); err != nil || p.Old != u || !strings.Contains(string(b), s) {
		t.Fatalf("json %s: %v", b, err)
	}
	for _, bad := range []string{"", "GPU-123", "MIG-0123abcd-4567-89ef-0123-456789abcdef", "GPU-0123abcd-4567-89ef-0123-456789abcdeg"} {
		if _, err := ParseUUID(bad); err == nil {
			t.Errorf("ParseUUID(%q) accepted", bad)
		}
	}
}

func TestMapGPUs(t *testing.T) {
	a, b, c := mustUUID(t, gpuA), mustUUID(t, gpuB), mustUUID(t, gpuC)
	for _, tc := range []struct {
		name           string
		source, target []UUID
		want           []GPUPair
		err            string
	}{
		{"none", nil, nil, []GPUPair{}, ""},
		{"same GPU", []UUID{a}, []UUID{a}, []GPUPair{{a, a}}, ""},
		{"in order", []UUID{a, b}, []UUID{c, a}, []GPUPair{{a, c}, {b, a}}, ""},
		{"fewer GPUs", []UUID{a, b}, []UUID{c}, nil, "checkpoint was taken on 2 GPU(s) but the container has 1"},
		{"more GPUs", nil, []UUID{c}, nil, "taken on 0 GPU(s) but the container has 1"},
		{"duplicate", []UUID{a, a}, []UUID{b, c}, nil, "lists GPU " + gpuA + " twice"},
	} {
		got, err := MapGPUs(tc.source, tc.target)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("%s: got %v, %v", tc.name, got, err)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: pair %d is %v, want %v", tc.name, i, got[i], tc.want[i])
			}
		}
	}
}

func TestVisibleDevices(t *testing.T) {
	inv := []GPU{
		{Index: 0, Minor: 0, UUID: mustUUID(t, gpuA)},
		{Index: 1, Minor: 2, UUID: mustUUID(t, gpuB)}, // minor need not equal index
		{Index: 2, Minor: 1, UUID: mustUUID(t, gpuC)},
	}
	env := func(kv ...string) *specs.Spec { return &specs.Spec{Process: &specs.Process{Env: kv}} }
	cdi := func(kv ...string) *specs.Spec {
		s := &specs.Spec{Annotations: map[string]string{}}
		for i := 0; i < len(kv); i += 2 {
			s.Annotations[kv[i]] = kv[i+1]
		}
		return s
	}
	nodes := func(paths ...string) *specs.Spec {
		s := &specs.Spec{Linux: &specs.Linux{}, Process: &specs.Process{Env: []string{"NVIDIA_VISIBLE_DEVICES=all"}}}
		for _, p := range paths {
			s.Linux.Devices = append(s.Linux.Devices, specs.LinuxDevice{Path: p, Type: "c", Major: 195})
		}
		return s
	}
	for _, tc := range []struct {
		name string
		spec *specs.Spec
		want []int // indices
		err  string
	}{
		{"nil spec", nil, nil, ""},
		{"nothing", env("PATH=/bin"), nil, ""},
		{"env all", env("NVIDIA_VISIBLE_DEVICES=all"), []int{0, 1, 2}, ""},
		{"env none", env("NVIDIA_VISIBLE_DEVICES=none"), nil, ""},
		{"env void", env("NVIDIA_VISIBLE_DEVICES=void"), nil, ""},
		{"env empty", env("NVIDIA_VISIBLE_DEVICES="), nil, ""},
		{"env indices sorted", env("NVIDIA_VISIBLE_DEVICES=2,0"), []int{0, 2}, ""},
		{"env uuid", env("NVIDIA_VISIBLE_DEVICES=" + gpuB), []int{1}, ""},
		{"env last wins", env("NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_VISIBLE_DEVICES=1"), []int{1}, ""},
		{"env duplicates", env("NVIDIA_VISIBLE_DEVICES=1," + gpuB), []int{1}, ""},
		{"env unknown index", env("NVIDIA_VISIBLE_DEVICES=7"), nil, `NVIDIA_VISIBLE_DEVICES: GPU "7" is not on this node`},
		{"env MIG", env("NVIDIA_VISIBLE_DEVICES=0:1"), nil, "MIG devices cannot be checkpointed"},
		{"cdi index", cdi("cdi.k8s.io/nvidia-device-plugin_uuid", "nvidia.com/gpu=1"), []int{1}, ""},
		{"cdi uuids", cdi("cdi.k8s.io/x", "nvidia.com/gpu="+gpuC+",nvidia.com/gpu="+gpuA), []int{0, 2}, ""},
		{"cdi all", cdi("cdi.k8s.io/x", "nvidia.com/gpu=all"), []int{0, 1, 2}, ""},
		{"cdi other vendor", cdi("cdi.k8s.io/x", "vendor.com/fpga=0"), nil, ""},
		{"cdi other key", cdi("example.com/x", "nvidia.com/gpu=0"), nil, ""},
		{"cdi unknown", cdi("cdi.k8s.io/x", "nvidia.com/gpu=9"), nil, `CDI annotations: GPU "9" is not on this node`},
		{"device nodes by minor", nodes("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia2"), []int{1}, ""},
		{"device nodes win over env", nodes("/dev/nvidia0", "/dev/nvidia1"), []int{0, 2}, ""},
		{"device node unknown", nodes("/dev/nvidia5"), nil, `device nodes: GPU "/dev/nvidia5" is not on this node`},
		{"only control nodes", nodes("/dev/nvidiactl"), []int{0, 1, 2}, ""}, // falls through to env=all
	} {
		got, err := VisibleDevices(tc.spec, inv)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		var idx []int
		for _, g := range got {
			idx = append(idx, g.Index)
		}
		if len(idx) != len(tc.want) || (len(idx) > 0 && !equal(idx, tc.want)) {
			t.Errorf("%s: got %v, want %v", tc.name, idx, tc.want)
		}
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
