package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/process"
	"github.com/containerd/log"

	"github.com/gpusnap/containerd-shim-snapshot-v2/criu"
	"github.com/gpusnap/containerd-shim-snapshot-v2/internal/reaped"
)

// paused reports whether the container is frozen (containerd's clients
// pause a container before they ask for its checkpoint).
func (s *Service) paused(ctx context.Context, id string) bool {
	st, err := s.TTRPCTaskService.State(ctx, &taskAPI.StateRequest{ID: id})
	return err == nil && st.Status == task.Status_PAUSED
}

// frozen asks runc whether the container's processes are frozen right now,
// which after a killed CRIU can differ from what the runc shim records.
func frozen(ctx context.Context, c *container) bool {
	out, err := reaped.Output(exec.CommandContext(ctx, "runc", "--root", runcRoot(c), "state", c.id))
	if err != nil {
		return false
	}
	var st struct {
		Status string `json:"status"`
	}
	return json.Unmarshal(out, &st) == nil && st.Status == "paused"
}

func runcRoot(c *container) string { return filepath.Join(process.RuncRoot, c.namespace) }

// recoverFailedCheckpoint undoes what a CRIU that died mid-dump left behind:
// its network lock in the container's network namespace and, when the
// client had paused the container, the frozen state the client will resume.
func (s *Service) recoverFailedCheckpoint(ctx context.Context, c *container, wasPaused bool) {
	if st, err := s.TTRPCTaskService.State(ctx, &taskAPI.StateRequest{ID: c.id}); err == nil && st.Pid > 0 {
		if err := criu.UnlockNetwork(criu.ProcNetns(int(st.Pid))); err != nil {
			log.G(ctx).WithError(err).WithField("id", c.id).Error("snapshot: container may stay cut off from its network")
		}
	}
	if wasPaused && !frozen(ctx, c) {
		s.refreeze(ctx, c)
	}
}

// refreeze puts a container back into the frozen state its client left it
// in. A CRIU killed mid-dump thaws the container behind runc's back while
// the runc shim still records it as paused; the client's Resume then fails
// ("container not paused") and the container stays PAUSED for containerd
// forever. Freezing it again lets that Resume succeed.
func (s *Service) refreeze(ctx context.Context, c *container) {
	if err := runcFreezer(ctx, c, "pause"); err != nil {
		log.G(ctx).WithError(err).WithField("id", c.id).Warn("snapshot: refreezing after a failed checkpoint")
		return
	}
	log.G(ctx).WithField("id", c.id).Info("snapshot: refroze the container after a failed checkpoint so its client can resume it")
}

// runcFreezer pauses or resumes the container's cgroup with runc directly,
// behind the runc shim's back, so that its recorded state (the one the
// client will resume from) does not change.
func runcFreezer(ctx context.Context, c *container, verb string) error {
	if out, err := reaped.CombinedOutput(exec.CommandContext(ctx, "runc", "--root", runcRoot(c), verb, c.id)); err != nil {
		return fmt.Errorf("runc %s %s: %v: %s", verb, c.id, err, out)
	}
	return nil
}

// thawedFor runs f with a frozen container thawed: the CUDA driver's lock
// and restore wait for the process's own threads, so on a frozen process
// they hang. containerd's clients freeze a container before they ask for
// its checkpoint; the container is frozen again before f's result returns.
func thawedFor(ctx context.Context, c *container, frozenNow bool, f func() error) error {
	if !frozenNow {
		return f()
	}
	if err := runcFreezer(ctx, c, "resume"); err != nil {
		return err
	}
	ferr := f()
	if err := runcFreezer(ctx, c, "pause"); err != nil {
		return errors.Join(ferr, err)
	}
	return ferr
}
