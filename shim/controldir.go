package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// controlRoot holds one host directory per container, bind-mounted at the
// handler's control_dir inside it: the workload's side of the contract.
const controlRoot = "/run/containerd-shim-snapshot"

// Sentinel files in the control directory.
const (
	// ReadyFile is written by the workload when it is warm: under
	// auto_checkpoint = on-ready the shim then checkpoints it.
	ReadyFile = "ready-for-checkpoint"
	// RestoreCompleteFile is written by the shim after every restore.
	RestoreCompleteFile = "restore-complete"
	// StatusFile is written by the shim: the last restore decision or
	// checkpoint outcome, in plain words, for the workload and for operators.
	StatusFile = "snapshot-status"
)

func controlDirFor(id string) string { return filepath.Join(controlRoot, id) }

// addControlDir creates the container's control directory and adds its bind
// mount to the spec (the caller writes the spec back to the bundle).
func addControlDir(spec *specs.Spec, id, dest string) (string, error) {
	dir := controlDirFor(id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating control directory: %w", err)
	}
	spec.Mounts = append(spec.Mounts, specs.Mount{
		Destination: dest, Type: "bind", Source: dir, Options: []string{"rbind", "rw"},
	})
	return dir, nil
}

// removeControlDir removes a container's control directory on the host.
func removeControlDir(ctx context.Context, id string) {
	if err := os.RemoveAll(controlDirFor(id)); err != nil {
		log.G(ctx).WithError(err).WithField("id", id).Warn("removing control directory")
	}
}

// restoreComplete is what the workload finds in restore-complete.
type restoreComplete struct {
	ContainerID string             `json:"container_id"`
	Hostname    string             `json:"hostname"`
	RestoredAt  time.Time          `json:"restored_at"`
	Checkpoint  string             `json:"checkpoint"`
	Phases      map[string]float64 `json:"phases_seconds"`
}

// writeControlFile writes a control file atomically (the workload may be
// polling for it).
func writeControlFile(dir, name string, v any) error {
	if dir == "" {
		return nil
	}
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}
