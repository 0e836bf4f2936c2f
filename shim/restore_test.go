package shim

import (
	"testing"

	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
)

// TestCRIUTuningFor: with the handler's defaults, a GPU container's
// checkpoint restores into huge pages without populating, a CPU-only one
// into 4 KiB pages populated first, both with one thread per CPU up to 16.
func TestCRIUTuningFor(t *testing.T) {
	o := options.Default()
	if got, want := criuTuningFor(o, true, 32), (criuTuning{threads: 16, hugePages: true}); got != want {
		t.Errorf("GPU checkpoint, defaults: %+v, want %+v", got, want)
	}
	if got, want := criuTuningFor(o, false, 2), (criuTuning{threads: 2, populate: true}); got != want {
		t.Errorf("CPU-only checkpoint, defaults: %+v, want %+v", got, want)
	}
}
