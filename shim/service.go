package shim

import (
	"context"
	"fmt"
	"sync"

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

// container is what the shim remembers about one container between RPCs.
type container struct {
	id      string
	bundle  string
	options options.Options
}

// NewService wraps the runc shim's task service.
func NewService(runc taskAPI.TTRPCTaskService) *Service {
	return &Service{TTRPCTaskService: runc, containers: map[string]*container{}}
}

// RegisterTTRPC registers this service, not the embedded one, so that the
// intercepted RPCs are reached.
func (s *Service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

// Create reads the handler's options, hands the runc shim only what it
// understands, and records the container for Start, Checkpoint and Delete.
func (s *Service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	opts, runcOpts, err := readOptions(r.Options)
	if err != nil {
		log.G(ctx).WithError(err).WithField("id", r.ID).Error("rejecting container: bad runtime options")
		return nil, errgrpc.ToGRPC(err)
	}
	r.Options = runcOpts
	resp, err := s.TTRPCTaskService.Create(ctx, r)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.containers[r.ID] = &container{id: r.ID, bundle: r.Bundle, options: opts}
	s.mu.Unlock()
	return resp, nil
}

// Start starts the container's init process or an exec.
func (s *Service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	return s.TTRPCTaskService.Start(ctx, r)
}

// Checkpoint checkpoints the container into the directory containerd gives.
func (s *Service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return s.TTRPCTaskService.Checkpoint(ctx, r)
}

// Delete deletes a process or the container, and forgets the container.
func (s *Service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	resp, err := s.TTRPCTaskService.Delete(ctx, r)
	if err == nil && r.ExecID == "" {
		s.mu.Lock()
		delete(s.containers, r.ID)
		s.mu.Unlock()
		removeControlDir(ctx, r.ID)
	}
	return resp, err
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
			errdefs.ErrInvalidArgument, anyOpts.GetTypeUrl(), RuntimeName)
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
