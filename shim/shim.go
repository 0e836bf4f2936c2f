// Package shim is the snapshot shim's task service and manager.
//
// The shim is containerd's runc shim with four interception points: Create
// (read the handler's options, decide restore or cold start), Start (restore
// instead of running the entrypoint), Checkpoint (write to the store) and
// Delete (forget per-container state). Every other RPC goes straight to the
// runc shim's task service, so the cold path behaves exactly like runc.
package shim

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/api/types"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	"google.golang.org/protobuf/proto"

	runcmanager "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	"github.com/containerd/containerd/v2/pkg/shim"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
)

// manager starts and stops shim processes. The runc shim's manager already
// groups containers of one pod into one shim, re-executes this binary as the
// shim server and cleans up with runc on delete; we reuse it unchanged.
type manager struct {
	shim.Shim
}

// NewManager returns the shim manager for the snapshot runtime.
func NewManager() shim.Shim {
	return manager{Shim: runcmanager.NewShimManager(containerdconfig.RuntimeType)}
}

// Stop is the out-of-process `delete` containerd runs when a shim died:
// besides runc's clean-up it removes the container's control directory and
// the plaintext of a checkpoint it was decrypting. The container's bundle
// is found as runc's manager finds it: the directory named id beside the
// working directory containerd runs the delete in.
func (m manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	if cwd, err := os.Getwd(); err == nil {
		removePlaintextOf(ctx, filepath.Join(filepath.Dir(cwd), id))
	}
	status, err := m.Shim.Stop(ctx, id)
	removeControlDir(ctx, id)
	return status, err
}

// Info answers `containerd-shim-snapshot-v2 -info`, which containerd runs to
// learn a handler's features. It validates the handler's own options (so a
// broken options file shows up at daemon start) and asks the runc manager
// for runc's features, handing it only runc options.
func (m manager) Info(ctx context.Context, optionsR io.Reader) (*types.RuntimeInfo, error) {
	data, err := io.ReadAll(optionsR)
	if err != nil {
		return nil, fmt.Errorf("reading runtime options: %w", err)
	}
	if len(data) > 0 {
		var anyOpts ptypes.Any
		if err := proto.Unmarshal(data, &anyOpts); err != nil {
			return nil, fmt.Errorf("decoding runtime options: %w", err)
		}
		_, runcOpts, err := readOptions(&anyOpts)
		if err != nil {
			return nil, err
		}
		if runcOpts == nil {
			data = nil
		}
	}
	return m.Shim.Info(ctx, bytes.NewReader(data))
}
