package shim

import (
	"context"
	"errors"
	"fmt"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"

	"github.com/gpusnap/containerd-shim-snapshot-v2/cudackpt"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// gpuDriverPresent reports whether this node has a CUDA driver to talk to.
func gpuDriverPresent() bool {
	_, err := cudackpt.Load("")
	return err == nil
}

// noGPU is the rollback of a container without CUDA processes.
func noGPU() error { return nil }

// gpuCheckpoint moves the CUDA state of every CUDA process of the container
// into host memory, locking all of them before checkpointing any, so that
// CRIU can dump them. The returned rollback puts the state back on the GPU
// and unlocks (leave-running, or any later failure). A node without a CUDA
// driver has nothing to do.
func (s *Service) gpuCheckpoint(ctx context.Context, c *container) (rollback func() error, gpus storage.GPUNode, err error) {
	drv, pids, err := s.cudaProcesses(ctx, c)
	if err != nil || len(pids) == 0 {
		return noGPU, gpus, err
	}
	rollback, err = cudackpt.CheckpointAll(ctx, drv, pids, c.options.LockTimeout.Duration)
	if err != nil {
		return noGPU, gpus, fmt.Errorf("checkpointing the GPU state: %w", err)
	}
	log.G(ctx).WithField("id", c.id).WithField("pids", pids).Info("snapshot: GPU state checkpointed")
	return rollback, c.gpuNode(), nil
}

// gpuRestore puts the GPU state of a CRIU-restored container back, onto the
// GPUs this container was given (source UUIDs from the manifest mapped in
// order), restoring all processes in parallel, then unlocking them; the two
// steps are timed as the phases cuda_restore and cuda_unlock.
func (s *Service) gpuRestore(ctx context.Context, c *container) error {
	var drv *cudackpt.Driver
	var pids []int
	err := c.plan.timed("cuda_restore", func() (err error) {
		if drv, pids, err = s.cudaProcesses(ctx, c); err != nil || len(pids) == 0 {
			return err
		}
		pairs, err := gpuPairs(c.plan.checkpoint.Manifest.GPUs, c.gpuNode().GPUs)
		if err != nil {
			return err
		}
		return cudackpt.RestoreEach(ctx, drv, pids, pairs)
	})
	if err != nil || len(pids) == 0 {
		return err
	}
	return c.plan.timed("cuda_unlock", func() error { return cudackpt.UnlockAll(drv, pids) })
}

// cudaProcesses lists the container's processes whose CUDA state the driver
// can read; nil without a driver.
func (s *Service) cudaProcesses(ctx context.Context, c *container) (*cudackpt.Driver, []int, error) {
	drv, err := cudackpt.Load("")
	if errors.Is(err, cudackpt.ErrNoDriver) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	resp, err := s.TTRPCTaskService.Pids(ctx, &taskAPI.PidsRequest{ID: c.id})
	if err != nil {
		return nil, nil, fmt.Errorf("listing the container's processes: %w", err)
	}
	pids := make([]int, 0, len(resp.Processes))
	for _, p := range resp.Processes {
		pids = append(pids, int(p.Pid))
	}
	cuda, err := cudackpt.FindCUDAProcesses(drv, pids)
	return drv, cuda, err
}

// containerGPUs are the GPUs the container was given, as NVML describes
// them, and the node's driver version; empty where NVML is absent.
func containerGPUs(c *container) storage.GPUNode {
	inventory, driver, err := cudackpt.Inventory()
	if err != nil {
		return storage.GPUNode{}
	}
	node := storage.GPUNode{DriverVersion: driver.Version}
	visible, err := cudackpt.VisibleDevices(c.spec, inventory)
	if err != nil {
		return node
	}
	for _, g := range visible {
		node.GPUs = append(node.GPUs, storage.GPU{UUID: g.UUID.String(), Product: g.Name, MemoryBytes: g.MemoryBytes})
	}
	return node
}

// gpuPairs maps checkpointed GPUs to the container's, in order; with either
// side unknown the driver restores onto the original GPUs.
func gpuPairs(source, target []storage.GPU) ([]cudackpt.GPUPair, error) {
	if len(source) == 0 || len(target) == 0 {
		return nil, nil
	}
	from, err := uuids(source)
	if err != nil {
		return nil, err
	}
	to, err := uuids(target)
	if err != nil {
		return nil, err
	}
	return cudackpt.MapGPUs(from, to)
}

func uuids(gpus []storage.GPU) ([]cudackpt.UUID, error) {
	out := make([]cudackpt.UUID, len(gpus))
	for i, g := range gpus {
		u, err := cudackpt.ParseUUID(g.UUID)
		if err != nil {
			return nil, err
		}
		out[i] = u
	}
	return out, nil
}

// exitsAfterCheckpoint reports whether the client asked the checkpoint to
// stop the container (ctr t checkpoint --exit): then there is nothing to
// put back on the GPU.
func exitsAfterCheckpoint(r *taskAPI.CheckpointTaskRequest) bool {
	opts := checkpointOptions(r)
	return opts != nil && opts.Exit
}

// checkpointOptions are the runc checkpoint options of a request; nil when
// it has none (CRI sends none) or they are of another kind.
func checkpointOptions(r *taskAPI.CheckpointTaskRequest) *runcoptions.CheckpointOptions {
	if r.Options == nil {
		return nil
	}
	v, err := typeurl.UnmarshalAny(r.Options)
	if err != nil {
		return nil
	}
	opts, _ := v.(*runcoptions.CheckpointOptions)
	return opts
}
