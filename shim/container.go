package shim

import (
	"context"
	"sync"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"

	"github.com/gpusnap/containerd-shim-snapshot-v2/identity"
	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// container is what the shim remembers about one container between RPCs.
type container struct {
	id         string
	namespace  string
	bundle     string
	options    options.Options
	spec       *specs.Spec
	rootfs     []*types.Mount
	controlDir string
	// create is the original request, kept so that a failed restore can
	// fall back to a cold start of the same container.
	create *taskAPI.CreateTaskRequest
	// plan is the checkpoint chosen at Create; nil means cold start.
	plan *restorePlan
	// restored is set once a restore succeeded.
	restored  bool
	stopWatch func()
	// gpuLeftovers are the container PIDs of processes found to hold
	// inherited GPU device files (cudackpt.FindDeviceHolders): at this
	// container's last checkpoint, or in the checkpoint it was restored from.
	gpuLeftovers []int
	// gpus caches containerGPUs: NVML is asked once per container.
	gpus     storage.GPUNode
	gpusOnce sync.Once
	// timeline holds when the shim started and got this container's RPCs
	// (mark); written by Create and Start only, read by their reports.
	timeline map[string]time.Time
}

// The moments a restore's timeline records.
const (
	markShimStarted = "shim_started" // the shim's process (for CRI, the pod's sandbox's)
	markCreate      = "create"       // Create received
	markCreated     = "created"      // Create answered by runc: the plan is made, the task exists
	markStart       = "start"        // Start received
)

// shimStarted is when this shim's process started.
var shimStarted = time.Now()

// mark records that moment name happened now.
func (c *container) mark(name string) {
	c.timeline[name] = time.Now()
}

// gpuNode is the container's GPUs and the node's driver version, read from
// NVML on first use; empty on nodes without NVML.
func (c *container) gpuNode() storage.GPUNode {
	c.gpusOnce.Do(func() { c.gpus = containerGPUs(c) })
	return c.gpus
}

// newContainer records a container and adds its control directory mount to
// the bundle's spec before runc sees it.
func newContainer(ctx context.Context, r *taskAPI.CreateTaskRequest, opts options.Options) (*container, error) {
	ns, _ := namespaces.Namespace(ctx)
	spec, err := readSpec(r.Bundle)
	if err != nil {
		return nil, err
	}
	c := &container{id: r.ID, namespace: ns, bundle: r.Bundle, options: opts, spec: spec, rootfs: r.Rootfs,
		create: proto.Clone(r).(*taskAPI.CreateTaskRequest), timeline: map[string]time.Time{markShimStarted: shimStarted}}
	changed, err := addCRIUConfig(spec, r.Bundle)
	if err != nil {
		return nil, err
	}
	if opts.ControlDir != "" {
		if c.controlDir, err = addControlDir(spec, r.ID, opts.ControlDir); err != nil {
			return nil, err
		}
		changed = true
	}
	if changed {
		if err := writeSpec(r.Bundle, spec); err != nil {
			removeControlDir(ctx, r.ID)
			return nil, err
		}
	}
	return c, nil
}

// containerIdentity is the container's identity key and its fields.
func containerIdentity(c *container) (string, map[string]string) {
	var ignoreMounts []string
	if c.options.ControlDir != "" {
		ignoreMounts = append(ignoreMounts, c.options.ControlDir)
	}
	var gpu identity.GPU
	if gpus := c.gpuNode().GPUs; len(gpus) > 0 {
		gpu = identity.GPU{Product: gpus[0].Product, Count: len(gpus)}
	}
	return identity.Of(c.spec, identity.Options{IgnoreEnv: c.options.IgnoreEnv, IgnoreMounts: ignoreMounts, GPU: gpu})
}
