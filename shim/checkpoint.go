package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/log"

	"github.com/gpusnap/containerd-shim-snapshot-v2/runtime"
	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// publish copies a finished CRIU dump (the directory containerd gave the
// Checkpoint RPC) into the handler's store with the rootfs diff, the spec and
// a manifest, and publishes it atomically. The container is still frozen by
// containerd's client while this runs, so the rootfs diff matches the dump.
func (s *Service) publish(ctx context.Context, c *container, imageDir string, gpus storage.GPUNode) error {
	store, err := storage.Open(c.options.Store)
	if err != nil {
		return err
	}
	st, err := store.Stage()
	if err != nil {
		return err
	}
	defer st.Abort()
	phases := map[string]float64{}
	timed := func(name string, f func() error) error {
		start := time.Now()
		err := f()
		phases[name] = time.Since(start).Seconds()
		if err != nil {
			return fmt.Errorf("checkpoint %s: %w", name, err)
		}
		return nil
	}
	if err := timed("copy_images", func() error { return linkOrCopyDir(imageDir, filepath.Join(st.Dir(), "checkpoint")) }); err != nil {
		return err
	}
	if upper, ok := upperDir(c.rootfs); ok {
		if err := timed("rootfs_diff", func() error { return runtime.CaptureRootfsDiff(upper, st.Dir()) }); err != nil {
			return err
		}
	}
	if err := copyFile(filepath.Join(c.bundle, "config.json"), filepath.Join(st.Dir(), "spec.dump")); err != nil {
		return err
	}
	node, err := nodeFingerprint(c.options)
	if err != nil {
		return err
	}
	key, fields := identity(c)
	m := &storage.Manifest{Key: key, Identity: fields, Node: node, Phases: phases, GPUs: gpus.GPUs, DriverVersion: gpus.DriverVersion,
		Source: storage.Source{ContainerID: c.id, Namespace: c.namespace, Hostname: c.spec.Hostname}}
	ck, err := st.Publish(m)
	if errors.Is(err, storage.ErrExists) {
		log.G(ctx).WithField("id", c.id).Info("snapshot: another writer published this identity first; keeping theirs")
		return nil
	}
	if err != nil {
		return err
	}
	if err := ck.RememberVerified(verifiedDir); err != nil {
		log.G(ctx).WithError(err).Warn("snapshot: remembering the new checkpoint as verified")
	}
	writeControlFile(c.controlDir, StatusFile, snapshotStatus{Decision: "checkpointed", Checkpoint: ck.Name, At: time.Now(), Phases: phases})
	log.G(ctx).WithField("id", c.id).WithField("checkpoint", ck.Name).Info("snapshot: checkpoint published")
	return nil
}

// linkOrCopyDir puts every regular file of src into dst: hard links when
// both are on one file system (no bytes move), copies otherwise.
func linkOrCopyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		from, to := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		if err := os.Link(from, to); err == nil {
			continue
		}
		if err := copyFile(from, to); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// watchReady starts the on-ready policy for a cold-started container: once
// the workload writes ready-for-checkpoint, the shim checkpoints it, leaving
// it running, unless the store already holds a checkpoint of its identity.
func (s *Service) watchReady(c *container) {
	if c.options.AutoCheckpoint != options.AutoCheckpointOnReady || c.restored || c.controlDir == "" {
		return
	}
	ctx, cancel := context.WithCancel(namespaces.WithNamespace(context.Background(), c.namespace))
	c.stopWatch = cancel
	go func() {
		ticker := time.NewTicker(100 * time.Millisecond)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
			if _, err := os.Stat(filepath.Join(c.controlDir, ReadyFile)); err == nil {
				s.autoCheckpoint(ctx, c)
				return
			}
		}
	}()
}

func (s *Service) autoCheckpoint(ctx context.Context, c *container) {
	logger := log.G(ctx).WithField("id", c.id)
	if store, err := storage.Open(c.options.Store); err == nil {
		key, _ := identity(c)
		if ck, err := store.Latest(key); err == nil {
			logger.WithField("checkpoint", ck.Name).Info("snapshot: ready, but a checkpoint of this identity exists")
			return
		}
	}
	dir, err := os.MkdirTemp(c.bundle, "auto-checkpoint-")
	if err != nil {
		logger.WithError(err).Error("snapshot: auto checkpoint")
		return
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(ctx, c.options.CheckpointTimeout.Duration)
	defer cancel()
	if _, err := s.Checkpoint(ctx, &taskAPI.CheckpointTaskRequest{ID: c.id, Path: dir}); err != nil {
		logger.WithError(err).Error("snapshot: auto checkpoint failed; the container keeps running")
		writeControlFile(c.controlDir, StatusFile, snapshotStatus{Decision: "checkpoint-failed", Reason: err.Error(), At: time.Now()})
	}
}
