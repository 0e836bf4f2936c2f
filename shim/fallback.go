package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"google.golang.org/protobuf/proto"

	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
	"github.com/gpusnap/containerd-shim-snapshot-v2/rootfs"
	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
)

// fallback is the rule for a restore that cannot be done, at Create or at
// Start: under restore = required the container fails with the reason;
// otherwise it cold-starts and the reason is reported.
func fallback(o options.Options) string {
	if o.Restore == options.RestoreRequired {
		return events.OutcomeFailed
	}
	return events.OutcomeColdStart
}

// declineRestore reports why a container is not restored, with what the
// plan got to; under restore = required that reason becomes the
// container's error.
func declineRestore(ctx context.Context, c *container, plan *restorePlan, reason error) error {
	o := outcome{kind: events.KindRestore, outcome: fallback(c.options), reason: reason, checkpoint: plan.checkpointName()}
	if plan != nil {
		o.phases = plan.phases
	}
	report(ctx, c, o)
	if o.outcome == events.OutcomeFailed {
		return fmt.Errorf("%w: restore = required and %v", errdefs.ErrFailedPrecondition, reason)
	}
	return nil
}

// startRestored restores a planned container; when that fails it cleans up
// and cold-starts the same container (restore = auto) or fails.
func (s *Service) startRestored(ctx context.Context, c *container, plan *restorePlan, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	held := holdIO(c.create) // the client keeps reading through a fallback
	defer held.release()
	rctx, cancel := context.WithTimeout(ctx, plan.left)
	resp, err := s.restore(rctx, c, plan, r)
	cancel()
	plan.stopPrefetch(ctx, c.id)
	if err == nil {
		return resp, nil
	}
	reason := events.Because(events.ReasonRestoreFailed,
		fmt.Errorf("restore from checkpoint %s failed: %w", plan.checkpoint.Name, timeoutReason(rctx, c.options, err)))
	if declined := declineRestore(ctx, c, plan, reason); declined != nil {
		return nil, declined
	}
	return s.coldStart(ctx, c, r)
}

// timeoutReason says so when err came from restore_timeout running out, so
// the reason names the setting instead of a killed runc.
func timeoutReason(ctx context.Context, o options.Options, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return events.Because(events.ReasonRestoreTimeout, fmt.Errorf("restore_timeout of %s exceeded: %w", o.RestoreTimeout.Duration, err))
	}
	return err
}

// killRestored stops a container that CRIU restored but whose GPU state could
// not be brought back, and waits until it is gone, so that the cold start can
// replace it.
func (s *Service) killRestored(ctx context.Context, c *container) {
	s.TTRPCTaskService.Kill(ctx, &taskAPI.KillRequest{ID: c.id, Signal: 9, All: true})
	s.TTRPCTaskService.Wait(ctx, &taskAPI.WaitRequest{ID: c.id})
}

// stopFailedRestore kills what a failed restore left running, before the
// cold start or containerd's Delete, and returns the restore's error, saying
// what it killed. Processes runc knows (the GPU phases failed after CRIU)
// are killed through runc. When runc's restore itself failed, CRIU may
// still have resumed the restored tree before it died (seen in CI with CRIU
// killed 0.3 s into a restore): runc's state then says running, the runc
// shim's says created, and runc delete refuses the container; those
// processes are killed through the container's cgroup.
func (s *Service) stopFailedRestore(ctx context.Context, r *restoreRun, err error) error {
	if r.created {
		s.killRestored(ctx, r.c)
		return err
	}
	pids, killErr := killCgroup(ctx, r.c)
	if killErr != nil {
		log.G(ctx).WithError(killErr).WithField("id", r.c.id).Error("snapshot: killing what a failed restore left running")
	}
	if len(pids) > 0 {
		return fmt.Errorf("%w (the shim killed the %d processes left running in the container's cgroup)", err, len(pids))
	}
	return err
}

// coldStart replaces a container whose restore failed by a fresh one: the
// runc shim deletes the created-from-checkpoint container (unmounting its
// rootfs), whatever a dead CRIU left is removed, the rootfs diff is wiped
// from the writable layer, and the original request is created and started
// without a checkpoint. The plan is dropped: Delete has nothing of it left
// to clean up.
func (s *Service) coldStart(ctx context.Context, c *container, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	if _, err := s.TTRPCTaskService.Delete(ctx, &taskAPI.DeleteRequest{ID: c.id}); err != nil {
		return nil, fmt.Errorf("cleaning up after a failed restore: %w", err)
	}
	if err := removeCRIULeftovers(ctx, c); err != nil {
		return nil, err
	}
	if err := clearWritableLayer(c.rootfs); err != nil {
		return nil, fmt.Errorf("cleaning up after a failed restore: %w", err)
	}
	req := proto.Clone(c.create).(*taskAPI.CreateTaskRequest)
	req.Checkpoint = ""
	if _, err := s.TTRPCTaskService.Create(ctx, req); err != nil {
		return nil, fmt.Errorf("cold start after a failed restore: %w", err)
	}
	c.plan = nil
	return s.TTRPCTaskService.Start(ctx, r)
}

// clearWritableLayer empties the overlay upper directory of a container that
// never ran, so a half-applied rootfs diff cannot leak into its cold start.
func clearWritableLayer(mounts []*types.Mount) error {
	upper, ok := upperDir(mounts)
	if !ok {
		return nil
	}
	entries, err := os.ReadDir(upper)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(upper, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// upperDir is the writable layer of an overlay rootfs.
func upperDir(mounts []*types.Mount) (string, bool) {
	for _, m := range mounts {
		if strings.Contains(m.Type, "overlay") {
			return rootfs.UpperDir(m.Options)
		}
	}
	return "", false
}
