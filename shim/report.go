package shim

import (
	"cmp"
	"context"
	"os"
	"time"

	"github.com/containerd/log"

	"github.com/gpusnap/containerd-shim-snapshot-v2/criu"
	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
)

// outcome is one restore decision or one checkpoint, as report tells it.
type outcome struct {
	kind    string // events.KindRestore or events.KindCheckpoint
	outcome string // one of events.RestoreOutcomes or events.CheckpointOutcomes
	// reason is why a restore was declined or a checkpoint failed: its
	// words for people, its code (events.CodeOf) for metrics.
	reason     error
	checkpoint string
	// from is the directory a restore read the checkpoint from.
	from string
	// criu is how a restore's CRIU was asked to read pages back.
	criu   criuTuning
	phases phaseTimes
	// criuStats are CRIU's own measurements of its dump or restore.
	criuStats criu.Stats
	// bytes is the size of the checkpoint read or written.
	bytes int64
	// fields are more for the log line.
	fields log.Fields
}

// report tells one outcome everywhere it is told, once: the node's event
// log (gpusnap status and metrics), the container's status file (the
// workload and operators) and containerd's log.
func report(ctx context.Context, c *container, o outcome) {
	ev := events.Event{Kind: o.kind, Outcome: o.outcome, Checkpoint: o.checkpoint, Phases: o.phases, CRIUStats: o.criuStats}
	st := snapshotStatus{Decision: o.outcome, Checkpoint: o.checkpoint, From: o.from, At: time.Now(), CRIUThreads: o.criu.threads, CRIUHugePages: o.criu.hugePages, CRIUPopulate: o.criu.populate,
		Phases: o.phases, CRIUStats: o.criuStats}
	if o.kind == events.KindRestore {
		st.Timeline = c.timeline
	}
	logger := log.G(ctx).WithField("id", c.id).WithFields(o.fields)
	if o.reason != nil {
		ev.Reason, ev.ReasonCode = o.reason.Error(), events.CodeOf(o.reason)
		st.Reason = ev.Reason
		logger = logger.WithField("reason", ev.Reason)
	}
	if o.kind == events.KindRestore {
		ev.BytesRead = o.bytes
	} else {
		ev.BytesWritten = o.bytes
	}
	recordEvent(ctx, c, ev)
	writeControlFile(c.controlDir, StatusFile, st)
	switch {
	case o.outcome == events.OutcomeRestored:
		logger.WithField("phases", map[string]float64(o.phases)).Info("snapshot: restored")
	case o.outcome == events.OutcomeCheckpointed:
		logger.WithField("checkpoint", o.checkpoint).Info("snapshot: checkpoint published")
	case o.outcome == events.OutcomeCheckpointFailed:
		logger.Error("snapshot: checkpoint failed")
	case ev.ReasonCode == events.ReasonOptedOut: // asked for: no warning
		logger.Info("snapshot: not restoring")
	default:
		logger.Warn("snapshot: not restoring")
	}
}

// snapshotStatus is written to the control directory after each decision.
type snapshotStatus struct {
	Decision   string `json:"decision"`
	Reason     string `json:"reason,omitempty"`
	Checkpoint string `json:"checkpoint,omitempty"`
	// From is the directory a restore read the checkpoint from: the
	// store's, or its copy in cache_dir.
	From string    `json:"from,omitempty"`
	At   time.Time `json:"at"`
	// CRIUThreads is how many threads CRIU was asked to read the restored
	// pages with (restore_threads); a CRIU without the project's patch
	// reads with one.
	CRIUThreads int `json:"criu_threads,omitempty"`
	// CRIUHugePages and CRIUPopulate say whether CRIU was asked to restore
	// into huge pages (restore_huge_pages) and to populate each run of
	// pages before reading into it (restore_populate).
	CRIUHugePages bool               `json:"criu_huge_pages,omitempty"`
	CRIUPopulate  bool               `json:"criu_populate,omitempty"`
	Phases        map[string]float64 `json:"phases_seconds,omitempty"`
	// CRIUStats are CRIU's own measurements of the restore (criu.Stats).
	CRIUStats map[string]float64 `json:"criu_stats,omitempty"`
	// Timeline is when, before At, the shim's process started and got
	// the container's Create and Start (container.mark), so that the time
	// outside the shim's phases (containerd, CRI's sandbox and network,
	// the wait between Create and Start) can be told apart from its own.
	Timeline map[string]time.Time `json:"timeline,omitempty"`
}

// phaseTimes are the seconds each timed phase took (names from package
// phases), as the status file, the node event and the manifest carry them.
type phaseTimes map[string]float64

// time runs one named phase and records how long it took; f's error is
// returned as it is.
func (p phaseTimes) time(name string, f func() error) error {
	start := time.Now()
	err := f()
	p[name] = time.Since(start).Seconds()
	return err
}

// criuStats reads CRIU's own measurements of the dump or restore that just
// ran in workDir. Without them the records only lack them: a failure is
// logged, not returned.
func criuStats(ctx context.Context, read func(workDir string) (criu.Stats, error), workDir string) criu.Stats {
	st, err := read(workDir)
	if err != nil {
		log.G(ctx).WithError(err).Warn("snapshot: CRIU's statistics")
	}
	return st
}

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
