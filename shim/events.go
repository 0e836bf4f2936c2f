package shim

import (
	"cmp"
	"context"
	"os"

	"github.com/containerd/log"

	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
)

// eventsDir is the node-level record of restores and checkpoints that
// `gpusnap status` lists and `gpusnap metrics` serves; SNAPSHOT_EVENTS_DIR in
// containerd's environment (which shims inherit) moves it, for test beds.
func eventsDir() string { return cmp.Or(os.Getenv("SNAPSHOT_EVENTS_DIR"), events.DefaultDir) }

// recordEvent appends one restore or checkpoint event for the node's
// metrics. It never fails the container: a node whose event log cannot be
// written still restores, and says so in containerd's log.
func recordEvent(ctx context.Context, c *container, e events.Event) {
	e.ContainerID, e.Namespace = c.id, c.namespace
	if err := events.Record(eventsDir(), e); err != nil {
		log.G(ctx).WithError(err).Warn("snapshot: recording event")
	}
}
