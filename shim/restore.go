package shim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/log"

	"github.com/gpusnap/containerd-shim-snapshot-v2/criu"
	"github.com/gpusnap/containerd-shim-snapshot-v2/cudackpt"
	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
	"github.com/gpusnap/containerd-shim-snapshot-v2/phases"
	"github.com/gpusnap/containerd-shim-snapshot-v2/rootfs"
	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
)

// restoreRun is one restore at Start: the plan chosen at Create, the Start
// request, and what one phase hands on to the next.
type restoreRun struct {
	s    *Service
	c    *container
	plan *restorePlan
	req  *taskAPI.StartRequest
	resp *taskAPI.StartResponse
	// created is set once CRIU restored the processes: a later failure
	// kills them before the fallback replaces the container.
	created bool
	// drv and cuda are the driver and the restored CUDA processes.
	drv  *cudackpt.Driver
	cuda []int
	// criuStats are CRIU's own measurements of its restore.
	criuStats criu.Stats
}

// restoreStep is one timed phase of a restore; skip, when set, leaves it out
// (untimed) for this run.
type restoreStep struct {
	name string
	skip func(r *restoreRun) bool
	run  func(ctx context.Context, r *restoreRun) error
}

// restoreSteps are the phases of a restore, in the order they run.
var restoreSteps = []restoreStep{
	// An encrypted checkpoint is decrypted into the plaintext directory.
	{phases.Decrypt, func(r *restoreRun) bool { return r.plan.key == nil }, func(ctx context.Context, r *restoreRun) error {
		return decryptCheckpoint(ctx, r.c.bundle, r.plan)
	}},
	// The writable layer comes back before any process does.
	{phases.RootfsDiff, nil, func(_ context.Context, r *restoreRun) error {
		return rootfs.ApplyDiff(r.plan.filesDir(), filepath.Join(r.c.bundle, "rootfs"))
	}},
	// runc restore: CRIU brings the processes back from plan.imagePath().
	{phases.CRIURestore, nil, func(ctx context.Context, r *restoreRun) (err error) {
		start := time.Now()
		stop := watchCRIUOrphans(ctx, r.c)
		r.resp, err = r.s.TTRPCTaskService.Start(ctx, r.req)
		killed := stop()
		if err != nil {
			if len(killed) > 0 {
				err = fmt.Errorf("CRIU died while restoring (the shim killed the %d processes it left, so that runc returned): %w", len(killed), err)
			}
			return explainCRIU(err, filepath.Join(r.c.bundle, criuRestoreLog), start)
		}
		r.created = true
		r.criuStats = criuStats(ctx, criu.ReadRestoreStats, filepath.Join(r.c.bundle, criuWorkLink))
		return nil
	}},
	// The GPU state goes back onto the container's GPUs, process by
	// process in parallel.
	{phases.CUDARestore, nil, func(ctx context.Context, r *restoreRun) (err error) {
		r.drv, r.cuda, err = r.s.gpuRestore(ctx, r.c, r.plan)
		return err
	}},
	// Then the restored CUDA processes are unlocked, all at once.
	{phases.CUDAUnlock, func(r *restoreRun) bool { return len(r.cuda) == 0 }, func(_ context.Context, r *restoreRun) error {
		return cudackpt.UnlockAll(r.drv, r.cuda)
	}},
}

// restore runs restoreSteps in order, each timed into the plan; ctx carries
// the deadline from restore_timeout (runc, hence CRIU, is killed when it
// ends). The plaintext of an encrypted checkpoint is removed when the
// restore ends, restored or not, before any cold start; processes CRIU
// restored are killed when a later phase fails.
func (s *Service) restore(ctx context.Context, c *container, plan *restorePlan, req *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	// A checkpoint of a container given GPUs lists them (gpuCheckpoint).
	plan.criu = tuneCRIURestore(c.options, len(plan.checkpoint.Manifest.GPUs) > 0)
	if plan.key != nil {
		defer removePlaintext(ctx, c.id, c.bundle, plan)
	}
	r := &restoreRun{s: s, c: c, plan: plan, req: req}
	for _, step := range restoreSteps {
		if step.skip != nil && step.skip(r) {
			continue
		}
		if err := plan.phases.time(step.name, func() error { return step.run(ctx, r) }); err != nil {
			// Past restore_timeout too: what runs must go before the cold start.
			err = s.stopFailedRestore(context.WithoutCancel(ctx), r, err)
			return nil, fmt.Errorf("%s: %w", step.name, err)
		}
	}
	c.restored = true
	c.gpuLeftovers = plan.checkpoint.Manifest.GPULeftovers
	hostname, _ := os.Hostname()
	if c.spec.Hostname != "" {
		hostname = c.spec.Hostname
	}
	done := restoreComplete{ContainerID: c.id, Hostname: hostname, RestoredAt: time.Now().UTC(),
		Checkpoint: plan.checkpoint.Name, Phases: plan.phases}
	if err := writeControlFile(c.controlDir, RestoreCompleteFile, done); err != nil {
		log.G(ctx).WithError(err).Warn("snapshot: writing restore-complete")
	}
	report(ctx, c, outcome{kind: events.KindRestore, outcome: events.OutcomeRestored, checkpoint: plan.checkpoint.Name,
		from: plan.checkpoint.Dir, criu: plan.criu, phases: plan.phases, criuStats: r.criuStats, bytes: plan.checkpoint.Size()})
	return r.resp, nil
}

// The variables read by the project's CRIU patches (contrib/criu): runc
// hands the shim's environment on to CRIU. One shim serves one pod, whose
// containers share the handler, so a process-wide setting is per handler.
const (
	criuHugePagesEnv = "CRIU_RESTORE_HUGEPAGES"
	criuThreadsEnv   = "CRIU_RESTORE_THREADS"
	criuPopulateEnv  = "CRIU_RESTORE_POPULATE"
)

// criuTuning is how the next CRIU restore reads pages back: with how many
// threads, into huge pages or not, populating each run first or not.
type criuTuning struct {
	threads   int
	hugePages bool
	populate  bool
}

// criuTuningFor applies the handler's options to a restore, of a
// checkpoint of a container given GPUs when gpu is set, on a node of cpus
// CPUs.
func criuTuningFor(o options.Options, gpu bool, cpus int) criuTuning {
	huge := o.CRIURestoreHugePages(gpu)
	return criuTuning{threads: o.CRIURestoreThreads(cpus), hugePages: huge, populate: o.CRIURestorePopulate(huge)}
}

// tuneCRIURestore tells the next CRIU restore how to read pages back (the
// project's CRIU patches read the environment runc hands on) and returns
// what it told.
func tuneCRIURestore(o options.Options, gpu bool) criuTuning {
	t := criuTuningFor(o, gpu, runtime.NumCPU())
	os.Setenv(criuHugePagesEnv, flag(t.hugePages))
	os.Setenv(criuThreadsEnv, strconv.Itoa(t.threads))
	os.Setenv(criuPopulateEnv, flag(t.populate))
	return t
}

// flag is a boolean as the CRIU patches read it.
func flag(on bool) string {
	if on {
		return "1"
	}
	return "0"
}
