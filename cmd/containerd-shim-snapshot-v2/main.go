// Command containerd-shim-snapshot-v2 is the containerd runtime v2 shim for
// the io.containerd.snapshot.v2 runtime type.
package main

import (
	"context"

	"github.com/containerd/containerd/v2/pkg/shim"

	snapshotshim "github.com/gpusnap/containerd-shim-snapshot-v2/shim"
	_ "github.com/gpusnap/containerd-shim-snapshot-v2/shim/plugin"
)

func main() {
	shim.RunShim(context.Background(), snapshotshim.NewManager())
}
