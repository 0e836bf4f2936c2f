package storage

import (
	"errors"
	"strings"
	"testing"

	"github.com/gpusnap/containerd-shim-snapshot-v2/cudackpt"
)

func TestGPUCompatible(t *testing.T) {
	h100 := GPU{UUID: cudackpt.UUID{0xa}, Product: "NVIDIA H100 80GB HBM3", MemoryBytes: 80 << 30}
	other := GPU{UUID: cudackpt.UUID{0xb}, Product: "NVIDIA H100 80GB HBM3", MemoryBytes: 80 << 30}
	m := &Manifest{GPUs: []GPU{h100}, DriverVersion: "580.159.04"}
	cases := []struct {
		name  string
		m     *Manifest
		node  GPUNode
		field string // "" = compatible
	}{
		{"same GPU", m, GPUNode{[]GPU{h100}, "580.159.04"}, ""},
		{"other GPU of the product, newer driver", m, GPUNode{[]GPU{other}, "580.200.01"}, ""},
		{"no GPUs recorded", &Manifest{}, GPUNode{}, ""},
		{"no GPU on node", m, GPUNode{nil, "580.159.04"}, "gpu_count"},
		{"two GPUs given", m, GPUNode{[]GPU{h100, other}, "580.159.04"}, "gpu_count"},
		{"other product", m, GPUNode{[]GPU{{UUID: cudackpt.UUID{0xc}, Product: "NVIDIA A100-SXM4-80GB", MemoryBytes: 80 << 30}}, "580.159.04"}, "gpus[0].product"},
		{"less memory", m, GPUNode{[]GPU{{UUID: cudackpt.UUID{0xc}, Product: h100.Product, MemoryBytes: 40 << 30}}, "580.159.04"}, "gpus[0].memory_bytes"},
		{"older driver", m, GPUNode{[]GPU{h100}, "570.86.10"}, "driver_version"},
		{"driver unknown", m, GPUNode{[]GPU{h100}, ""}, "driver_version"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.m.GPUCompatible(tc.node)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("want compatible, got %v", err)
				}
				return
			}
			var mm *MismatchError
			if !errors.As(err, &mm) || mm.Field != tc.field {
				t.Fatalf("want mismatch on %s, got %v", tc.field, err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("message %q does not name %s", err, tc.field)
			}
		})
	}
}
