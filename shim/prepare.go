package shim

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/log"
)

// The prepare exchange: a workload that holds memory it can rebuild (a
// caching allocator's free reserve, compile workspaces) can shrink before
// each checkpoint, so the checkpoint does not carry it, and grow back after.
// It opts in by writing PrepareOnCheckpointFile; before every checkpoint the
// shim then writes CheckpointPrepareFile and waits (prepare_timeout) for
// CheckpointPreparedFile. When the checkpoint ends the shim writes
// CheckpointDoneFile in the source's control directory; a restored copy
// finds RestoreCompleteFile in its own. Either is the workload's cue to grow
// back. contrib/examples/common/snapshot_hooks.py is a workload's side.
const (
	PrepareOnCheckpointFile = "prepare-on-checkpoint"
	CheckpointPrepareFile   = "checkpoint-prepare"
	CheckpointPreparedFile  = "checkpoint-prepared"
	CheckpointDoneFile      = "checkpoint-done"
)

// wantsPrepare reports whether the container's workload asked to prepare
// before each checkpoint.
func wantsPrepare(c *container) bool {
	if c.controlDir == "" {
		return false
	}
	_, err := os.Stat(filepath.Join(c.controlDir, PrepareOnCheckpointFile))
	return err == nil
}

// prepareWorkload asks the workload to prepare for a checkpoint and waits
// for its answer, at most prepare_timeout; it reports whether the workload
// answered. A workload that does not answer in time is checkpointed as it
// is: the exchange only makes checkpoints smaller.
func prepareWorkload(ctx context.Context, c *container) bool {
	dir := c.controlDir
	for _, name := range []string{CheckpointPreparedFile, CheckpointDoneFile} {
		os.Remove(filepath.Join(dir, name))
	}
	if err := writeControlFile(dir, CheckpointPrepareFile, map[string]time.Time{"at": time.Now().UTC()}); err != nil {
		log.G(ctx).WithError(err).WithField("id", c.id).Warn("snapshot: asking the workload to prepare")
		return false
	}
	deadline := time.NewTimer(c.options.PrepareTimeout.Duration)
	defer deadline.Stop()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		if _, err := os.Stat(filepath.Join(dir, CheckpointPreparedFile)); err == nil {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			log.G(ctx).WithField("id", c.id).WithField("prepare_timeout", c.options.PrepareTimeout.Duration).
				Warn("snapshot: the workload did not answer checkpoint-prepare in time; checkpointing it as it is")
			return false
		case <-poll.C:
		}
	}
}

// checkpointDone ends the exchange in the source's control directory: the
// request is withdrawn and the workload told it may grow back.
func checkpointDone(ctx context.Context, c *container) {
	os.Remove(filepath.Join(c.controlDir, CheckpointPrepareFile))
	os.Remove(filepath.Join(c.controlDir, CheckpointPreparedFile))
	if err := writeControlFile(c.controlDir, CheckpointDoneFile, map[string]time.Time{"at": time.Now().UTC()}); err != nil {
		log.G(ctx).WithError(err).WithField("id", c.id).Warn("snapshot: telling the workload the checkpoint is done")
	}
}
