package shim

import (
	"context"
	"errors"
	"fmt"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"

	"github.com/gpusnap/containerd-shim-snapshot-v2/criu"
	"github.com/gpusnap/containerd-shim-snapshot-v2/cudackpt"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// gpuDriverPresent reports whether this node has a CUDA driver to talk to.
func gpuDriverPresent() bool {
	_, err := loadDriver()
	return err == nil
}

// noGPU is the rollback of a container without CUDA processes.
func noGPU() error { return nil }

// gpuCheckpoint moves the CUDA state of every CUDA process of the container
// into host memory, locking all of them before checkpointing any, so that
// CRIU can dump them. The returned rollback puts the state back on the GPU
// and unlocks (leave-running, or any later failure). A node without a CUDA
// driver has nothing to do.
//
// Processes without CUDA state that still hold the GPU's device files are
// judged first, before anything is locked (see gpuLeftovers): leftovers
// inherited from a CUDA parent are returned for CRIU to leave out, anything
// else refuses the checkpoint with the process and the files named.
func (s *Service) gpuCheckpoint(ctx context.Context, c *container) (rollback func() error, gpus storage.GPUNode, leftovers []int, err error) {
	drv, all, pids, err := s.cudaProcesses(ctx, c)
	if err != nil || drv == nil {
		return noGPU, gpus, nil, err
	}
	if leftovers, err = gpuLeftovers(c, all, pids); err != nil {
		return noGPU, gpus, nil, err
	}
	if len(pids) == 0 {
		return noGPU, gpus, leftovers, nil
	}
	rollback, err = cudackpt.CheckpointAll(ctx, drv, pids, c.options.LockTimeout.Duration)
	if err != nil {
		return noGPU, gpus, nil, fmt.Errorf("checkpointing the GPU state: %w", err)
	}
	log.G(ctx).WithField("id", c.id).WithField("pids", pids).WithField("leftovers", leftovers).Info("snapshot: GPU state checkpointed")
	return rollback, c.gpuNode(), leftovers, nil
}

// gpuLeftovers finds the container's processes that hold the GPU driver's
// device files without CUDA state the driver can checkpoint. The driver's
// checkpoint leaves their files in place and CRIU cannot dump those. A
// process whose device files all came from a CUDA process through fork()
// (torch.compile's worker pool, forked after its parent initialised CUDA)
// can never use them, so CRIU is asked (contrib/criu's --inherited-devices)
// to leave its device mappings out and reopen its device files by path;
// their pids are returned. Any other holder (a live NVML handle, a device
// opened by hand) refuses the checkpoint, naming the process and what it
// holds, as does a node CRIU without that patch.
func gpuLeftovers(c *container, all, cuda []int) ([]int, error) {
	holders, err := cudackpt.FindDeviceHolders(all, cuda, c.gpuLeftovers)
	if err != nil {
		return nil, err
	}
	if len(holders) == 0 {
		c.gpuLeftovers = nil // the leftovers have exited: none to name in this checkpoint
		return nil, nil
	}
	var pids, nspids []int
	for _, h := range holders {
		if !h.Inherited {
			return nil, fmt.Errorf("checkpoint refused: %s but has no CUDA state the driver can checkpoint, "+
				"and did not inherit them from a CUDA process (an NVML handle or a device opened by hand?): "+
				"CRIU cannot dump its device files; close them before the checkpoint: %w", h, ErrGPUDeviceHeld)
		}
		pids, nspids = append(pids, h.PID), append(nspids, h.NSPID)
	}
	bin, err := criu.Find(c.options.CRIUPath)
	if err != nil {
		return nil, err
	}
	if ok, err := criu.HasPatch(bin, criu.PatchInheritedDevices); err != nil || !ok {
		return nil, errors.Join(err, fmt.Errorf("checkpoint refused: %s (inherited from a CUDA process), and %s lacks "+
			"contrib/criu/0003-inherited-devices.patch, which leaves such leftovers out: %w", holders[0], bin, ErrGPUDeviceHeld))
	}
	c.gpuLeftovers = nspids
	return pids, nil
}

// ErrGPUDeviceHeld marks a checkpoint refused because a process without
// CUDA state holds the GPU's device files in a way CRIU cannot dump.
var ErrGPUDeviceHeld = errors.New("GPU device files held without CUDA state")

// gpuRestore puts the GPU state of a CRIU-restored container back, onto the
// GPUs this container was given (source UUIDs from the manifest mapped in
// order), restoring all processes in parallel; it returns the driver and
// the CUDA processes, which stay locked until the caller unlocks them.
func (s *Service) gpuRestore(ctx context.Context, c *container, plan *restorePlan) (drv *cudackpt.Driver, pids []int, err error) {
	if drv, _, pids, err = s.cudaProcesses(ctx, c); err != nil || len(pids) == 0 {
		return drv, pids, err
	}
	pairs, err := gpuPairs(plan.checkpoint.Manifest.GPUs, c.gpuNode().GPUs)
	if err != nil {
		return drv, pids, err
	}
	return drv, pids, cudackpt.RestoreEach(ctx, drv, pids, pairs)
}

// loadDriver loads the node's CUDA driver; a variable so that tests stand
// for a node without one.
var loadDriver = func() (*cudackpt.Driver, error) { return cudackpt.Load("") }

// cudaProcesses lists the container's processes (all) and those whose CUDA
// state the driver can read (cuda); a nil driver without one.
func (s *Service) cudaProcesses(ctx context.Context, c *container) (drv *cudackpt.Driver, all, cuda []int, err error) {
	drv, err = loadDriver()
	if errors.Is(err, cudackpt.ErrNoDriver) {
		return nil, nil, nil, nil
	}
	if err != nil {
		return nil, nil, nil, err
	}
	resp, err := s.TTRPCTaskService.Pids(ctx, &taskAPI.PidsRequest{ID: c.id})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("listing the container's processes: %w", err)
	}
	all = make([]int, 0, len(resp.Processes))
	for _, p := range resp.Processes {
		all = append(all, int(p.Pid))
	}
	cuda, err = cudackpt.FindCUDAProcesses(drv, all)
	return drv, all, cuda, err
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
		node.GPUs = append(node.GPUs, storage.GPU{UUID: g.UUID, Product: g.Name, MemoryBytes: g.MemoryBytes})
	}
	return node
}

// gpuPairs maps checkpointed GPUs to the container's, in order; with either
// side unknown the driver restores onto the original GPUs.
func gpuPairs(source, target []storage.GPU) ([]cudackpt.GPUPair, error) {
	if len(source) == 0 || len(target) == 0 {
		return nil, nil
	}
	return cudackpt.MapGPUs(uuids(source), uuids(target))
}

func uuids(gpus []storage.GPU) []cudackpt.UUID {
	out := make([]cudackpt.UUID, len(gpus))
	for i, g := range gpus {
		out[i] = g.UUID
	}
	return out
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
