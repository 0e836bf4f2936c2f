package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/log"

	"github.com/gpusnap/containerd-shim-snapshot-v2/criu"
	"github.com/gpusnap/containerd-shim-snapshot-v2/crypt"
	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
	"github.com/gpusnap/containerd-shim-snapshot-v2/phases"
	"github.com/gpusnap/containerd-shim-snapshot-v2/rootfs"
	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// specDumpFile is the container's OCI spec in a checkpoint, named as in the
// Kubernetes checkpoint archive layout.
const specDumpFile = "spec.dump"

// restoreFiles are what a restore needs besides CRIU's images. They are
// written next to the images, top level, into the directory containerd gives
// the Checkpoint RPC (so the checkpoint containerd archives from it is
// complete), and kept at the top of a store's checkpoint, beside the
// checkpoint/ directory of images, as containerd's RestoreFromPath expects.
var restoreFiles = []string{rootfs.DiffFile, rootfs.DeletedFilesFile, rootfs.OpaqueDirsFile, specDumpFile}

// checkpointReported runs the checkpoint flow for a Checkpoint RPC and,
// when the handler names a store, reports the outcome.
func (s *Service) checkpointReported(ctx context.Context, c *container, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	times := phaseTimes{}
	resp, pub, err := s.checkpoint(ctx, c, r, times)
	if c.options.Store != "" {
		reportCheckpoint(ctx, c, pub, times, err)
	}
	return resp, err
}

// reportCheckpoint reports a failed checkpoint, or one published to the
// store; a checkpoint another writer published first is not reported.
func reportCheckpoint(ctx context.Context, c *container, pub *published, times phaseTimes, err error) {
	o := outcome{kind: events.KindCheckpoint, outcome: events.OutcomeCheckpointFailed, reason: err, phases: times}
	if pub != nil {
		o.checkpoint = pub.ck.Name
	}
	if err == nil {
		if pub == nil {
			return
		}
		o.outcome, o.bytes, o.fields = events.OutcomeCheckpointed, pub.ck.Size(), pub.fields
		o.criuStats = pub.ck.Manifest.CRIUStats
	}
	report(ctx, c, o)
}

// checkpoint runs the checkpoint flow for one of this shim's containers,
// each phase timed into times: the prepare exchange, the GPU state to host
// memory, CRIU's dump, the restore files, and the store. CUDA processes are
// locked and their GPU state moved to host memory first; unless the
// container exits with the checkpoint, the GPU state is put back afterwards,
// also when anything failed, so the workload keeps serving.
func (s *Service) checkpoint(ctx context.Context, c *container, r *taskAPI.CheckpointTaskRequest, times phaseTimes) (*ptypes.Empty, *published, error) {
	pp, err := loadPublishPrereqs(c.options)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint refused: %w", err)
	}
	wasPaused := s.paused(ctx, r.ID)
	prepare := wantsPrepare(c)
	if prepare {
		defer checkpointDone(ctx, c) // after the GPU state is back
	}
	// The prepare exchange and the CUDA steps need the container's
	// processes running.
	thaw := wasPaused && (prepare || gpuDriverPresent())
	var (
		rollback  = noGPU
		gpus      storage.GPUNode
		leftovers []int
	)
	err = thawedFor(ctx, c, thaw, func() (err error) {
		if prepare {
			times.time(phases.Prepare, func() error { prepareWorkload(ctx, c); return nil })
		}
		return times.time(phases.CUDACheckpoint, func() (err error) {
			rollback, gpus, leftovers, err = s.gpuCheckpoint(ctx, c)
			return err
		})
	})
	if err != nil {
		return nil, nil, err
	}
	var (
		resp      *ptypes.Empty
		dumpStats criu.Stats
	)
	err = times.time(phases.CRIUDump, func() (err error) {
		start := time.Now()
		if err = prepareCRIUConfigForDump(c, r, leftovers); err != nil {
			return fmt.Errorf("writing the CRIU configuration: %w", err)
		}
		work, removeWork, err := keepDumpWorkDir(c, r)
		if err != nil {
			return fmt.Errorf("preparing CRIU's work directory: %w", err)
		}
		defer removeWork()
		if resp, err = s.TTRPCTaskService.Checkpoint(ctx, r); err != nil {
			err = explainCRIU(err, filepath.Join(c.bundle, criuDumpLog), start)
			s.recoverFailedCheckpoint(ctx, c, wasPaused)
		} else if work != "" {
			dumpStats = criuStats(ctx, criu.ReadDumpStats, work)
		}
		return err
	})
	if err == nil {
		err = addRestoreFiles(c, r.Path, times)
	}
	var pub *published
	if err == nil && c.options.Store != "" {
		pub, err = s.publish(ctx, c, r.Path, gpus, pp, times, dumpStats)
	}
	if err != nil || !exitsAfterCheckpoint(r) {
		if rbErr := thawedFor(ctx, c, thaw, rollback); rbErr != nil {
			err = errors.Join(err, fmt.Errorf("putting the GPU state back: %w", rbErr))
		}
	}
	return resp, pub, err
}

// addRestoreFiles writes the rootfs diff and the spec into dir, timing the
// diff. The container is still frozen (or stopped) while this runs, so the
// diff matches CRIU's dump.
func addRestoreFiles(c *container, dir string, times phaseTimes) error {
	if upper, ok := upperDir(c.rootfs); ok {
		if err := times.time(phases.RootfsDiff, func() error { return rootfs.CaptureDiff(upper, dir) }); err != nil {
			return fmt.Errorf("capturing the writable layer: %w", err)
		}
	}
	return copyFile(filepath.Join(c.bundle, "config.json"), filepath.Join(dir, specDumpFile))
}

// publishPrereqs is what a checkpoint needs from the node and the handler:
// the node's fingerprint (which requires a usable CRIU) and, with a store,
// the signing and encryption keys. They are loaded before anything is
// frozen, checkpointed on the GPU or dumped, so a missing CRIU or a bad key
// fails the checkpoint while the container is untouched.
type publishPrereqs struct {
	node   storage.Fingerprint
	signer *storage.SigningKey
	enc    *crypt.Key
}

func loadPublishPrereqs(o options.Options) (pp publishPrereqs, err error) {
	if pp.node, err = nodeFingerprint(o); err != nil {
		return pp, err
	}
	if o.Store == "" {
		return pp, nil
	}
	if pp.signer, err = signingKey(o); err != nil {
		return pp, err
	}
	pp.enc, err = encryptionKey(o)
	return pp, err
}

// publish puts a finished checkpoint (the directory containerd gave the
// Checkpoint RPC, completed by addRestoreFiles) into the handler's store with
// a manifest, signed when the handler has a signing key, and publishes it
// atomically. Files are hard-linked when the store shares the file system,
// so no bytes move; with an encryption key each file is instead encrypted
// into the staging directory (phase "encrypt"), so the store never holds a
// plaintext byte, not even before the rename that publishes it. A
// checkpoint of an identity another writer published first is kept as
// theirs: no error, and nothing published.
func (s *Service) publish(ctx context.Context, c *container, dir string, gpus storage.GPUNode, pp publishPrereqs, times phaseTimes, dumpStats criu.Stats) (*published, error) {
	signer, enc := pp.signer, pp.enc
	store, err := storage.Open(c.options.Store)
	if err != nil {
		return nil, events.Because(events.ReasonStoreError, err)
	}
	st, err := store.Stage()
	if err != nil {
		return nil, events.Because(events.ReasonStoreError, err)
	}
	defer st.Abort()
	phase, place := phases.CopyImages, linkOrCopy
	if enc != nil {
		phase, place = phases.Encrypt, encryptInto(enc, st.Dir())
	}
	if err := times.time(phase, func() error {
		if err := placeDir(dir, filepath.Join(st.Dir(), "checkpoint"), restoreFiles, place); err != nil {
			return err
		}
		return placeRestoreFiles(dir, st.Dir(), place)
	}); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", phase, err)
	}
	key, fields := containerIdentity(c)
	m := &storage.Manifest{Key: key, Identity: fields, Node: pp.node, Phases: maps.Clone(times), CRIUStats: dumpStats, GPUs: gpus.GPUs, DriverVersion: gpus.DriverVersion,
		GPULeftovers: c.gpuLeftovers, Source: storage.Source{ContainerID: c.id, Namespace: c.namespace, Hostname: c.spec.Hostname}}
	if enc != nil {
		m.Encryption = &storage.Encryption{Algorithm: crypt.Algorithm, KeyID: enc.ID}
	}
	var ck *storage.Checkpoint
	err = times.time(phases.Publish, func() (err error) {
		ck, err = st.PublishSigned(m, signer)
		return err
	})
	if errors.Is(err, storage.ErrExists) {
		log.G(ctx).WithField("id", c.id).Info("snapshot: another writer published this identity first; keeping theirs")
		return nil, nil
	}
	if err != nil {
		return nil, events.Because(events.ReasonStoreError, err)
	}
	policy, err := signaturePolicy(c.options)
	if err == nil {
		err = ck.RememberVerified(verifiedDir, policy)
	}
	if err != nil {
		log.G(ctx).WithError(err).Warn("snapshot: remembering the new checkpoint as verified")
	}
	pushLater(ctx, c, ck)
	pub := &published{ck: ck, fields: log.Fields{}}
	if signer != nil {
		pub.fields["signed_by"] = signer.ID
	}
	if enc != nil {
		pub.fields["encrypted_with"] = enc.ID
	}
	return pub, nil
}

// published is a checkpoint this shim put into the store, and how.
type published struct {
	ck *storage.Checkpoint
	// fields name the keys it was signed and encrypted with, for the log.
	fields log.Fields
}

// placeFunc puts the file from at to: linked, copied or encrypted.
type placeFunc func(from, to string) error

// encryptInto encrypts files into the staging directory root, each under
// its path there, which is the path a restore decrypts it under.
func encryptInto(key *crypt.Key, root string) placeFunc {
	return func(from, to string) error {
		name, err := filepath.Rel(root, to)
		if err != nil {
			return err
		}
		return key.EncryptFile(from, to, filepath.ToSlash(name))
	}
}

// placeRestoreFiles puts the restore files present in src at the top of dst.
func placeRestoreFiles(src, dst string, place placeFunc) error {
	for _, name := range restoreFiles {
		from := filepath.Join(src, name)
		if _, err := os.Lstat(from); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := place(from, filepath.Join(dst, name)); err != nil {
			return err
		}
	}
	return nil
}

// placeDir puts every regular file of src, except those named in skip,
// into dst.
func placeDir(src, dst string, skip []string, place placeFunc) error {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || slices.Contains(skip, e.Name()) {
			continue
		}
		if err := place(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// linkOrCopy hard-links from to to when both are on one file system (no
// bytes move) and copies otherwise.
func linkOrCopy(from, to string) error {
	if err := os.Link(from, to); err == nil {
		return nil
	}
	return copyFile(from, to)
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
	if c.options.AutoCheckpoint != options.AutoCheckpointOnReady || c.restored || c.controlDir == "" || isSandbox(c.spec) {
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
		key, _ := containerIdentity(c)
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
	times := phaseTimes{}
	pub, err := s.pausedCheckpoint(ctx, c, dir, times)
	reportCheckpoint(ctx, c, pub, times, err) // a failure leaves the container running
}

// pausedCheckpoint checkpoints a running container, leaving it running, the
// way containerd's client does: paused around the Checkpoint RPC, so that the
// writable layer captured after CRIU's dump still matches the dump.
func (s *Service) pausedCheckpoint(ctx context.Context, c *container, dir string, times phaseTimes) (*published, error) {
	if _, err := s.TTRPCTaskService.Pause(ctx, &taskAPI.PauseRequest{ID: c.id}); err != nil {
		return nil, fmt.Errorf("pausing for the checkpoint: %w", err)
	}
	_, pub, err := s.checkpoint(ctx, c, &taskAPI.CheckpointTaskRequest{ID: c.id, Path: dir}, times)
	if _, rerr := s.TTRPCTaskService.Resume(ctx, &taskAPI.ResumeRequest{ID: c.id}); rerr != nil {
		err = errors.Join(err, fmt.Errorf("resuming after the checkpoint: %w", rerr))
	}
	return pub, err
}
