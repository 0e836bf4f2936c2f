package storage

import (
	"errors"
	"testing"
)

func TestCompatible(t *testing.T) {
	base := Fingerprint{Arch: "amd64", Kernel: "6.8.0-45-generic", CRIUVersion: "4.1.1", CgroupVersion: 2}
	with := func(edit func(*Fingerprint)) Fingerprint {
		f := base
		edit(&f)
		return f
	}
	tests := []struct {
		name       string
		checkpoint Fingerprint
		node       Fingerprint
		want       string // "" means compatible
	}{
		{"same", base, base, ""},
		{"newer criu on node", base, with(func(f *Fingerprint) { f.CRIUVersion = "4.10" }), ""},
		{"kernel patch differs", base, with(func(f *Fingerprint) { f.Kernel = "6.8.12" }), ""},
		{"arch", base, with(func(f *Fingerprint) { f.Arch = "arm64" }),
			"arch: checkpoint has amd64, node has arm64 (must be equal)"},
		{"cgroup", base, with(func(f *Fingerprint) { f.CgroupVersion = 1 }),
			"cgroup_version: checkpoint has 2, node has 1 (must be equal)"},
		{"older criu on node", with(func(f *Fingerprint) { f.CRIUVersion = "4.2.1" }), base,
			"criu_version: checkpoint has 4.2.1, node has 4.1.1 (node must be the same or newer)"},
		{"criu unknown on node", base, with(func(f *Fingerprint) { f.CRIUVersion = "" }),
			"criu_version: checkpoint has 4.1.1, node has unknown (node must be the same or newer)"},
		{"kernel minor", base, with(func(f *Fingerprint) { f.Kernel = "6.9.0" }),
			"kernel: checkpoint has 6.8.0-45-generic, node has 6.9.0 (major.minor must match)"},
		{"kernel not recorded", with(func(f *Fingerprint) { f.Kernel = "" }), base,
			"kernel: checkpoint has unknown, node has 6.8.0-45-generic (major.minor must match)"},
		{"odd kernel strings", with(func(f *Fingerprint) { f.Kernel = "custom" }), with(func(f *Fingerprint) { f.Kernel = "other" }),
			"kernel: checkpoint has custom, node has other (major.minor must match)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.checkpoint.Compatible(tt.node)
			if tt.want == "" {
				if err != nil {
					t.Errorf("Compatible: %v", err)
				}
				return
			}
			var mismatch *MismatchError
			if !errors.As(err, &mismatch) || err.Error() != tt.want {
				t.Errorf("Compatible = %v, want *MismatchError %q", err, tt.want)
			}
		})
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"4.1.1", "4.1.1", 0},
		{"4.1", "4.1.0", 0},
		{"4.10", "4.9", 1},
		{"3.19", "4.0", -1},
		{"4.2.1", "4.1.1", 1},
		{"4.1-rc1", "4.1", 0},
		{"", "0", 0},
		{"1.2.3", "1.2.3.1", -1},
	}
	for _, tt := range tests {
		if got := CompareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := CompareVersions(tt.b, tt.a); got != -tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}
