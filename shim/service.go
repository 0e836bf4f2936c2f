package shim

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
	"github.com/gpusnap/containerd-shim-snapshot-v2/internal/reaped"
	"github.com/gpusnap/containerd-shim-snapshot-v2/rootfs"
	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
)

var _ shim.TTRPCService = (*Service)(nil)

// Service is the snapshot shim's task service. It embeds the runc shim's
// task service: every RPC it does not define is the runc shim's own.
type Service struct {
	taskAPI.TTRPCTaskService

	mu         sync.Mutex
	containers map[string]*container
}

// NewService wraps the runc shim's task service. The shim reaps every
// child, so the commands the service runs go through its reaper.
func NewService(runc taskAPI.TTRPCTaskService) *Service {
	reaped.UseReaper()
	return &Service{TTRPCTaskService: runc, containers: map[string]*container{}}
}

// RegisterTTRPC registers this service, not the embedded one, so that the
// intercepted RPCs are reached.
func (s *Service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

// Create reads the handler's options, mounts the control directory, decides
// between restore and cold start, and hands the runc shim only what it
// understands.
func (s *Service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	opts, runcOpts, err := readOptions(r.Options)
	if err != nil {
		log.G(ctx).WithError(err).WithField("id", r.ID).Error("rejecting container: bad runtime options")
		return nil, errgrpc.ToGRPC(err)
	}
	r.Options = runcOpts
	received := time.Now()
	useCRIU(opts.CRIUPath)
	c, err := newContainer(ctx, r, opts)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	c.timeline[markCreate] = received
	if r.Checkpoint == "" {
		plan, err := planRestore(ctx, c)
		if err != nil {
			removeControlDir(ctx, c.id)
			return nil, errgrpc.ToGRPC(err)
		}
		if plan != nil {
			c.plan = plan
			r.Checkpoint = plan.imagePath()
		}
	}
	resp, err := s.TTRPCTaskService.Create(ctx, r)
	if err != nil {
		removeControlDir(ctx, c.id)
		return nil, err
	}
	c.mark(markCreated)
	s.mu.Lock()
	s.containers[r.ID] = c
	s.mu.Unlock()
	return resp, nil
}

// Start starts the container's init process or an exec; for a container
// with a restore plan it restores instead, falling back as configured.
func (s *Service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	c := s.container(r.ID)
	if r.ExecID != "" || c == nil {
		return s.TTRPCTaskService.Start(ctx, r)
	}
	c.mark(markStart)
	var (
		resp *taskAPI.StartResponse
		err  error
	)
	// A restore runs to its end (restored, or cleaned up and cold-started)
	// even when containerd goes away meanwhile: ttrpc cancels a request
	// whose connection closed, and a restore cut there would leave a
	// half-created task for the restarted containerd. restore_timeout still
	// bounds it.
	switch {
	case c.plan != nil:
		resp, err = s.startRestored(context.WithoutCancel(ctx), c, c.plan, r)
	case c.create.Checkpoint != "":
		resp, err = s.startExplicitCheckpoint(context.WithoutCancel(ctx), c, r)
	default:
		resp, err = s.TTRPCTaskService.Start(ctx, r)
	}
	if err == nil {
		s.watchReady(c)
	}
	return resp, err
}

// Checkpoint checkpoints the container into the directory containerd gives
// and, when the handler names a store, publishes it there. CUDA processes
// are locked and their GPU state moved to host memory first; unless the
// container exits with the checkpoint, the GPU state is put back afterwards,
// also when anything failed, so the workload keeps serving.
func (s *Service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	c := s.container(r.ID)
	if c == nil {
		return s.TTRPCTaskService.Checkpoint(ctx, r)
	}
	resp, err := s.checkpointReported(ctx, c, r)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return resp, nil
}

// Delete deletes a process or the container, and forgets the container.
func (s *Service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	resp, err := s.TTRPCTaskService.Delete(ctx, r)
	if err == nil && r.ExecID == "" {
		s.mu.Lock()
		c := s.containers[r.ID]
		delete(s.containers, r.ID)
		s.mu.Unlock()
		if c != nil && c.stopWatch != nil {
			c.stopWatch()
		}
		if c != nil {
			c.plan.stopPrefetch(ctx, r.ID) // created, never started
		}
		if c != nil && c.plan != nil && !c.restored {
			// A restore that failed under restore = required: containerd
			// deletes the task, and what a dead CRIU left goes with it.
			if err := removeCRIULeftovers(ctx, c); err != nil {
				log.G(ctx).WithError(err).WithField("id", r.ID).Error("snapshot: a failed restore left something behind")
			}
		}
		removeControlDir(ctx, r.ID)
	}
	return resp, err
}

// Shutdown lets the runc shim end the process once no container is left,
// after this shim's background transfers (pushes, background pulls) end:
// containerd does not wait for them (it moves on after its own shutdown
// timeout), so a shim whose last container was deleted stays until they
// end, at most backgroundTransferMax, rather than cut them.
func (s *Service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	empty := len(s.containers) == 0
	s.mu.Unlock()
	if empty {
		transfers.Wait()
	}
	return s.TTRPCTaskService.Shutdown(ctx, r)
}

// startExplicitCheckpoint restores a checkpoint the client named
// (ctr c restore --live): the writable layer comes back from the rootfs diff
// that this shim's Checkpoint put next to CRIU's images, when the checkpoint
// has one (a client that restored the layer itself gets the same files
// again), then runc restores the processes.
func (s *Service) startExplicitCheckpoint(ctx context.Context, c *container, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	if err := rootfs.ApplyDiff(c.create.Checkpoint, filepath.Join(c.bundle, "rootfs")); err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("applying the checkpoint's writable layer: %w", err))
	}
	tuneCRIURestore(c.options, len(c.gpuNode().GPUs) > 0)
	return s.TTRPCTaskService.Start(ctx, r)
}

func (s *Service) container(id string) *container {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.containers[id]
}

// readOptions splits the task's runtime options into the shim's own options
// (from runtimeoptions' ConfigPath or ConfigBody, as CRI and `ctr
// --runtime-config-path` send them) and the runc options passed on unchanged.
func readOptions(anyOpts *ptypes.Any) (options.Options, *ptypes.Any, error) {
	if anyOpts.GetTypeUrl() == "" {
		return options.Default(), nil, nil
	}
	v, err := typeurl.UnmarshalAny(anyOpts)
	if err != nil {
		return options.Options{}, nil, fmt.Errorf("%w: runtime options of type %q: %v", errdefs.ErrInvalidArgument, anyOpts.GetTypeUrl(), err)
	}
	switch o := v.(type) {
	case *runcoptions.Options:
		return options.Default(), anyOpts, nil
	case *runtimeoptions.Options:
		opts, err := optionsFrom(o)
		if err != nil {
			return options.Options{}, nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
		}
		return opts, nil, nil
	default:
		return options.Options{}, nil, fmt.Errorf("%w: runtime options of type %q are not understood by %s",
			errdefs.ErrInvalidArgument, anyOpts.GetTypeUrl(), containerdconfig.RuntimeType)
	}
}

func optionsFrom(o *runtimeoptions.Options) (options.Options, error) {
	switch {
	case o.ConfigPath != "":
		return options.Load(o.ConfigPath)
	case len(o.ConfigBody) > 0:
		return options.Parse(o.ConfigBody, "inline ConfigBody")
	default:
		return options.Default(), nil
	}
}
