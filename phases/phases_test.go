package phases

import (
	"slices"
	"testing"
)

func TestSorted(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   []string
		want []string
	}{
		{"restore", []string{CUDAUnlock, Verify, CRIURestore, Find, Key, RootfsDiff, Decrypt, Cache, CUDARestore},
			[]string{Find, Cache, Key, Verify, Decrypt, RootfsDiff, CRIURestore, CUDARestore, CUDAUnlock}},
		{"checkpoint", []string{Encrypt, RootfsDiff, CRIUDump, Prepare, CUDACheckpoint},
			[]string{Prepare, CUDACheckpoint, CRIUDump, RootfsDiff, Encrypt}},
		{"older restore", []string{CRIURestore, Verify, Lookup}, []string{Lookup, Verify, CRIURestore}},
		{"unknown last, by name", []string{"zz", CRIUDump, "aa"}, []string{CRIUDump, "aa", "zz"}},
	} {
		p := map[string]float64{}
		for _, n := range tt.in {
			p[n] = 1
		}
		if got := Sorted(p); !slices.Equal(got, tt.want) {
			t.Errorf("%s: Sorted = %v, want %v", tt.name, got, tt.want)
		}
	}
}
