package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"

	"github.com/gpusnap/containerd-shim-snapshot-v2/criu"
	"github.com/gpusnap/containerd-shim-snapshot-v2/crypt"
	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
	"github.com/gpusnap/containerd-shim-snapshot-v2/prefetch"
	"github.com/gpusnap/containerd-shim-snapshot-v2/runtime"
	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// verifiedDir remembers, per node, which checkpoints were fully verified, so
// that only the first restore of a checkpoint on a node hashes every byte.
// A variable so that tests keep their results to themselves.
var verifiedDir = storage.DefaultVerifiedDir

// restorePlan is the checkpoint chosen at Create and the timings of the
// restore phases as they run.
type restorePlan struct {
	checkpoint *storage.Checkpoint
	// key decrypts an encrypted checkpoint into plain, the directory the
	// restore then reads instead of the store; both unset for a checkpoint
	// stored in the clear.
	key    *crypt.Key
	plain  string
	phases map[string]float64
	// left is what remains of restore_timeout after the phases at Create;
	// the phases at Start get that much, so the wait between Create and
	// Start (containerd's, kubelet's) does not count.
	left time.Duration
	// prefetch brings the checkpoint into the page cache from Create on.
	prefetch *prefetch.Prefetch
	// criuThreads is how many threads CRIU was asked to read pages with.
	criuThreads int
}

// startPrefetch starts reading the chosen checkpoint's files ahead of CRIU.
func (p *restorePlan) startPrefetch(readers int) {
	if readers == 0 || p.checkpoint.Manifest == nil {
		return
	}
	files := map[string]int64{}
	for _, f := range p.checkpoint.Manifest.Files {
		files[filepath.Join(p.checkpoint.Dir, filepath.FromSlash(f.Path))] = f.Size
	}
	p.prefetch = prefetch.Start(files, readers)
}

// stopPrefetch ends the prefetch (CRIU has read what it needs, or the
// restore ended otherwise) and logs what it did.
func (p *restorePlan) stopPrefetch(ctx context.Context, id string) {
	if p == nil || p.prefetch == nil {
		return
	}
	st := p.prefetch.Stop()
	log.G(ctx).WithField("id", id).WithField("bytes", st.Bytes).WithField("complete", st.Done).
		WithField("seconds", st.Duration.Seconds()).Debug("snapshot: prefetch")
}

// filesDir is where the restore reads the checkpoint's files: the store's
// directory, or the plaintext directory of an encrypted checkpoint.
func (p *restorePlan) filesDir() string {
	if p.plain != "" {
		return p.plain
	}
	return p.checkpoint.Dir
}

// imagePath is the CRIU image directory handed to runc restore. For an
// encrypted checkpoint it is filled only at Start, by the decrypt phase.
func (p *restorePlan) imagePath() string { return filepath.Join(p.filesDir(), "checkpoint") }

// timed runs one named phase and records how long it took.
func (p *restorePlan) timed(name string, f func() error) error {
	start := time.Now()
	err := f()
	p.phases[name] = time.Since(start).Seconds()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// planRestore is the whole restore-or-cold decision, taken at Create: a
// restore needs a store, a policy that allows it, a checkpoint whose identity
// matches the container, a compatible node, the key it is encrypted with
// (if it is), a signature the handler accepts (when it names trusted keys),
// and intact files. Any "no" is a cold start under restore = auto and an
// error under restore = required.
func (s *Service) planRestore(ctx context.Context, c *container) (*restorePlan, error) {
	o := c.options
	if o.Store == "" || o.Restore == options.RestoreNever {
		return nil, nil
	}
	if isSandbox(c.spec) {
		return nil, nil
	}
	if optedOut(c.spec) {
		skipRestore(ctx, c)
		return nil, nil
	}
	plan := &restorePlan{phases: map[string]float64{}}
	start := time.Now()
	vctx, cancel := context.WithTimeout(ctx, o.RestoreTimeout.Duration)
	defer cancel()
	var ck *storage.Checkpoint
	err := plan.timed("lookup", func() (err error) {
		if ck, err = findCheckpoint(c); err == nil {
			ck = cachedCopy(ctx, ck, o.CacheDir)
			plan.key, err = checkEncryption(ck, o)
		}
		return err
	})
	if err == nil {
		plan.checkpoint = ck
		plan.startPrefetch(o.PrefetchReaders)
		err = plan.timed("verify", func() error { return verifyCheckpoint(vctx, ck, o) })
	}
	if err != nil {
		plan.stopPrefetch(ctx, c.id)
		name := ""
		if ck != nil {
			name = ck.Name
		}
		return nil, declineRestore(ctx, c, err, plan.phases, name)
	}
	plan.checkpoint = ck
	if plan.key != nil {
		plan.plain = filepath.Join(o.DecryptDir, c.id)
	}
	plan.left = o.RestoreTimeout.Duration - time.Since(start)
	log.G(ctx).WithField("id", c.id).WithField("checkpoint", ck.Name).Info("snapshot: restoring from checkpoint")
	return plan, nil
}

// verifyCheckpoint is the verify phase of a restore: the checkpoint's
// signature under the handler's policy, then its files (hashed once per
// node). A refused signature is its own reason, in the handler's words; any
// other failure is a failed verification.
func verifyCheckpoint(ctx context.Context, ck *storage.Checkpoint, o options.Options) error {
	policy, err := signaturePolicy(o)
	if err != nil {
		return err
	}
	_, err = ck.VerifyCached(ctx, verifiedDir, policy, nil)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, storage.ErrUnsigned):
		return fmt.Errorf("%w and the handler requires signatures (require_signature = true)", err)
	case errors.Is(err, storage.ErrBadSignature):
		return err
	}
	return events.Because(events.ReasonVerificationFailed,
		fmt.Errorf("checkpoint %s failed verification: %w", ck.Name, timeoutReason(ctx, o, err)))
}

// OptOutAnnotation lets a pod (or any client) refuse a restore for its
// container: "never" makes it cold-start even under restore = required.
// It is the only say a pod has: stores, paths and checkpoint names come from
// the handler alone. CRI passes pod annotations to the runtime only when the
// handler lists them (pod_annotations = ["gpusnap.io/*"]).
const OptOutAnnotation = "gpusnap.io/restore"

func optedOut(spec *specs.Spec) bool { return spec.Annotations[OptOutAnnotation] == "never" }

// criContainerType is the annotation CRI puts on every container it
// creates: "sandbox" for a pod's pause container, "container" otherwise.
const criContainerType = "io.kubernetes.cri.container-type"

// isSandbox reports a pod's pause container. It runs on the pod's handler
// like the workload, but is never checkpointed or restored: it holds the
// pod's namespaces and nothing else, and under restore = required it would
// fail the pod for having no checkpoint.
func isSandbox(spec *specs.Spec) bool { return spec.Annotations[criContainerType] == "sandbox" }

// skipRestore records a cold start the container asked for.
func skipRestore(ctx context.Context, c *container) {
	reason := "the container opted out of restore (annotation " + OptOutAnnotation + " = never)"
	code := events.ReasonOptedOut
	log.G(ctx).WithField("id", c.id).Info("snapshot: " + reason)
	recordEvent(ctx, c, events.Event{Kind: events.KindRestore, Outcome: events.OutcomeColdStart, Reason: reason, ReasonCode: code})
	writeControlFile(c.controlDir, StatusFile, snapshotStatus{Decision: "cold-start", Reason: reason, At: time.Now()})
}

// findCheckpoint picks the checkpoint for a container and checks that it
// matches the container and this node; errors say which field differs.
func findCheckpoint(c *container) (*storage.Checkpoint, error) {
	store, err := storage.Open(c.options.Store)
	if err != nil {
		return nil, events.Because(events.ReasonStoreError, err)
	}
	key, fields := identity(c)
	var ck *storage.Checkpoint
	if c.options.Checkpoint == options.CheckpointAuto {
		ck, err = store.Latest(key)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, noMatch(store, fields)
		}
	} else {
		ck, err = store.Get(c.options.Checkpoint)
		if err == nil && ck.Manifest.Key != key {
			return nil, identityMismatch(ck, fields)
		}
	}
	if err != nil {
		return nil, events.Because(events.ReasonStoreError, err)
	}
	node, err := nodeFingerprint(c.options)
	if err != nil {
		return nil, err
	}
	if err := ck.Manifest.Node.Compatible(node); err != nil {
		return nil, events.Because(events.ReasonNodeMismatch, fmt.Errorf("checkpoint %s does not suit this node: %w", ck.Name, err))
	}
	if err := ck.Manifest.GPUCompatible(c.gpuNode()); err != nil {
		return nil, events.Because(events.ReasonGPUMismatch, fmt.Errorf("checkpoint %s does not suit this container's GPUs: %w", ck.Name, err))
	}
	return ck, nil
}

// noMatch explains a failed lookup by the newest checkpoint in the store:
// the first identity field that differs, with both values.
func noMatch(store *storage.Store, fields map[string]string) error {
	all, _ := store.List()
	var newest *storage.Checkpoint
	for _, ck := range all {
		if ck.Err == nil && (newest == nil || ck.Manifest.Created.After(newest.Manifest.Created)) {
			newest = ck
		}
	}
	if newest == nil {
		return events.Because(events.ReasonNoCheckpoint, fmt.Errorf("store %s holds no checkpoint", store.Root))
	}
	return events.Because(events.ReasonNoCheckpoint,
		fmt.Errorf("no checkpoint in %s matches this container; newest: %w", store.Root, identityMismatch(newest, fields)))
}

func identityMismatch(ck *storage.Checkpoint, fields map[string]string) error {
	field, had, has, _ := runtime.DiffIdentity(ck.Manifest.Identity, fields)
	return events.Because(events.ReasonIdentityMismatch, fmt.Errorf("checkpoint %s has %s = %s, this container has %s", ck.Name, field, had, has))
}

// identity is the container's identity key and its fields.
func identity(c *container) (string, map[string]string) {
	var ignoreMounts []string
	if c.options.ControlDir != "" {
		ignoreMounts = append(ignoreMounts, c.options.ControlDir)
	}
	var gpu runtime.GPUIdentity
	if gpus := c.gpuNode().GPUs; len(gpus) > 0 {
		gpu = runtime.GPUIdentity{Product: gpus[0].Product, Count: len(gpus)}
	}
	return runtime.Identity(c.spec, runtime.IdentityOptions{IgnoreEnv: c.options.IgnoreEnv, IgnoreMounts: ignoreMounts, GPU: gpu})
}

func nodeFingerprint(o options.Options) (storage.Fingerprint, error) {
	bin, err := criu.Find(o.CRIUPath)
	if err != nil {
		return storage.Fingerprint{}, err
	}
	return criu.NodeFingerprint(bin)
}

// snapshotStatus is written to the control directory after each decision.
type snapshotStatus struct {
	Decision   string `json:"decision"`
	Reason     string `json:"reason,omitempty"`
	Checkpoint string `json:"checkpoint,omitempty"`
	// From is the directory a restore read the checkpoint from: the
	// store's, or its copy in cache_dir.
	From string    `json:"from,omitempty"`
	At   time.Time `json:"at"`
	// CRIUThreads is how many threads CRIU was asked to read the restored
	// pages with (restore_threads); a CRIU without the project's patch
	// reads with one.
	CRIUThreads int                `json:"criu_threads,omitempty"`
	Phases      map[string]float64 `json:"phases_seconds,omitempty"`
}

// declineRestore records why a container is not restored; under
// restore = required that reason becomes the container's error.
func declineRestore(ctx context.Context, c *container, reason error, phases map[string]float64, checkpoint string) error {
	log.G(ctx).WithField("id", c.id).WithField("reason", reason.Error()).Warn("snapshot: not restoring")
	ev := events.Event{Kind: events.KindRestore, Outcome: events.OutcomeColdStart, Reason: reason.Error(), ReasonCode: events.CodeOf(reason),
		Checkpoint: checkpoint, Phases: phases}
	if c.options.Restore == options.RestoreRequired {
		ev.Outcome = events.OutcomeFailed
		recordEvent(ctx, c, ev)
		writeControlFile(c.controlDir, StatusFile, snapshotStatus{Decision: "failed", Reason: reason.Error(), At: time.Now()})
		return fmt.Errorf("%w: restore = required and %v", errdefs.ErrFailedPrecondition, reason)
	}
	recordEvent(ctx, c, ev)
	writeControlFile(c.controlDir, StatusFile, snapshotStatus{Decision: "cold-start", Reason: reason.Error(), At: time.Now()})
	return nil
}

// startRestored restores a planned container; when that fails it cleans up
// and cold-starts the same container (restore = auto) or fails.
func (s *Service) startRestored(ctx context.Context, c *container, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	held := holdIO(c.create) // the client keeps reading through a fallback
	defer held.release()
	rctx, cancel := context.WithTimeout(ctx, c.plan.left)
	resp, err := s.restore(rctx, c, r)
	cancel()
	c.plan.stopPrefetch(ctx, c.id)
	if err == nil {
		return resp, nil
	}
	reason := events.Because(events.ReasonRestoreFailed,
		fmt.Errorf("restore from checkpoint %s failed: %w", c.plan.checkpoint.Name, timeoutReason(rctx, c.options, err)))
	if declined := declineRestore(ctx, c, reason, c.plan.phases, c.plan.checkpoint.Name); declined != nil {
		return nil, declined
	}
	return s.coldStart(ctx, c, r)
}

// timeoutReason says so when err came from restore_timeout running out, so
// the reason names the setting instead of a killed runc.
func timeoutReason(ctx context.Context, o options.Options, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return events.Because(events.ReasonRestoreTimeout, fmt.Errorf("restore_timeout of %s exceeded: %w", o.RestoreTimeout.Duration, err))
	}
	return err
}

// The variables read by the project's CRIU patches (contrib/criu): runc
// hands the shim's environment on to CRIU. One shim serves one pod, whose
// containers share the handler, so a process-wide setting is per handler.
const (
	criuHugePagesEnv = "CRIU_RESTORE_HUGEPAGES"
	criuThreadsEnv   = "CRIU_RESTORE_THREADS"
)

// tuneCRIURestore tells the next CRIU restore whether to use huge pages and
// how many threads to read pages with, and returns that number.
func tuneCRIURestore(o options.Options) int {
	v := "0"
	if o.RestoreHugePages {
		v = "1"
	}
	os.Setenv(criuHugePagesEnv, v)
	threads := o.CRIURestoreThreads(goruntime.NumCPU())
	os.Setenv(criuThreadsEnv, strconv.Itoa(threads))
	return threads
}

// restore runs the restore phases in order, each timed; ctx carries the
// deadline from restore_timeout (runc, hence CRIU, is killed when it ends).
// An encrypted checkpoint is decrypted first and its plaintext removed when
// the restore ends, restored or not, before any cold start.
func (s *Service) restore(ctx context.Context, c *container, r *taskAPI.StartRequest) (resp *taskAPI.StartResponse, err error) {
	plan := c.plan
	plan.criuThreads = tuneCRIURestore(c.options)
	if plan.key != nil {
		defer removePlaintext(ctx, c)
		if err := plan.timed("decrypt", func() error { return decryptCheckpoint(ctx, c) }); err != nil {
			return nil, err
		}
	}
	if err := plan.timed("rootfs_diff", func() error {
		return runtime.ApplyRootfsDiff(plan.filesDir(), filepath.Join(c.bundle, "rootfs"))
	}); err != nil {
		return nil, err
	}
	if err := plan.timed("criu_restore", func() (err error) {
		start := time.Now()
		if resp, err = s.TTRPCTaskService.Start(ctx, r); err != nil {
			err = explainCRIU(err, filepath.Join(c.bundle, criuRestoreLog), start)
		}
		return err
	}); err != nil {
		return nil, err
	}
	if err := s.gpuRestore(ctx, c); err != nil {
		s.killRestored(ctx, c)
		return nil, err
	}
	c.restored = true
	c.gpuLeftovers = plan.checkpoint.Manifest.GPULeftovers
	hostname, _ := os.Hostname()
	if c.spec.Hostname != "" {
		hostname = c.spec.Hostname
	}
	done := restoreComplete{ContainerID: c.id, Hostname: hostname, RestoredAt: time.Now().UTC(),
		Checkpoint: plan.checkpoint.Name, Phases: plan.phases}
	if err := writeControlFile(c.controlDir, RestoreCompleteFile, done); err != nil {
		log.G(ctx).WithError(err).Warn("snapshot: writing restore-complete")
	}
	writeControlFile(c.controlDir, StatusFile, snapshotStatus{Decision: "restored", Checkpoint: plan.checkpoint.Name, From: plan.checkpoint.Dir, At: time.Now(),
		CRIUThreads: plan.criuThreads, Phases: plan.phases})
	recordEvent(ctx, c, events.Event{Kind: events.KindRestore, Outcome: events.OutcomeRestored, Checkpoint: plan.checkpoint.Name,
		Phases: plan.phases, BytesRead: plan.checkpoint.Size()})
	log.G(ctx).WithField("id", c.id).WithField("phases", plan.phases).Info("snapshot: restored")
	return resp, nil
}

// killRestored stops a container that CRIU restored but whose GPU state could
// not be brought back, and waits until it is gone, so that the cold start can
// replace it.
func (s *Service) killRestored(ctx context.Context, c *container) {
	s.TTRPCTaskService.Kill(ctx, &taskAPI.KillRequest{ID: c.id, Signal: 9, All: true})
	s.TTRPCTaskService.Wait(ctx, &taskAPI.WaitRequest{ID: c.id})
}

// coldStart replaces a container whose restore failed by a fresh one: the
// runc shim deletes the created-from-checkpoint container (unmounting its
// rootfs), whatever a dead CRIU left is removed, the rootfs diff is wiped
// from the writable layer, and the original request is created and started
// without a checkpoint.
func (s *Service) coldStart(ctx context.Context, c *container, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	if _, err := s.TTRPCTaskService.Delete(ctx, &taskAPI.DeleteRequest{ID: c.id}); err != nil {
		return nil, fmt.Errorf("cleaning up after a failed restore: %w", err)
	}
	if err := removeCRIULeftovers(ctx, c); err != nil {
		return nil, err
	}
	if err := clearWritableLayer(c.rootfs); err != nil {
		return nil, fmt.Errorf("cleaning up after a failed restore: %w", err)
	}
	req := proto.Clone(c.create).(*taskAPI.CreateTaskRequest)
	req.Checkpoint = ""
	if _, err := s.TTRPCTaskService.Create(ctx, req); err != nil {
		return nil, fmt.Errorf("cold start after a failed restore: %w", err)
	}
	c.plan = nil
	return s.TTRPCTaskService.Start(ctx, r)
}

// clearWritableLayer empties the overlay upper directory of a container that
// never ran, so a half-applied rootfs diff cannot leak into its cold start.
func clearWritableLayer(rootfs []*types.Mount) error {
	upper, ok := upperDir(rootfs)
	if !ok {
		return nil
	}
	entries, err := os.ReadDir(upper)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(upper, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// upperDir is the writable layer of an overlay rootfs.
func upperDir(rootfs []*types.Mount) (string, bool) {
	for _, m := range rootfs {
		if strings.Contains(m.Type, "overlay") {
			return runtime.UpperDir(m.Options)
		}
	}
	return "", false
}
