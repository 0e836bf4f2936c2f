package cudackpt

import (
	"errors"
	"testing"
)

// On a node without the NVIDIA driver Inventory must say so plainly; on a
// GPU node it must list at least one GPU with its identity.
func TestInventory(t *testing.T) {
	gpus, info, err := Inventory()
	if errors.Is(err, ErrNoDriver) {
		t.Logf("no NVML here: %v", err)
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if info.Version == "" || info.CUDA == 0 || len(gpus) == 0 {
		t.Fatalf("driver %+v, gpus %+v", info, gpus)
	}
	for _, g := range gpus {
		if g.UUID.IsZero() || g.Name == "" || g.MemoryBytes == 0 {
			t.Errorf("incomplete GPU %+v", g)
		}
		t.Logf("GPU %d (minor %d): %s %s, %d MiB, persistence %v", g.Index, g.Minor, g.UUID, g.Name, g.MemoryBytes>>20, g.Persistence)
	}
	t.Logf("driver %s, CUDA %s", info.Version, info.CUDA)
}
