package shim

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gpusnap/containerd-shim-snapshot-v2/criu"
	"github.com/gpusnap/containerd-shim-snapshot-v2/crypt"
	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
	"github.com/gpusnap/containerd-shim-snapshot-v2/identity"
	"github.com/gpusnap/containerd-shim-snapshot-v2/phases"
	"github.com/gpusnap/containerd-shim-snapshot-v2/prefetch"
	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// verifiedDir remembers, per node, which checkpoints were fully verified, so
// that only the first restore of a checkpoint on a node hashes every byte.
// A variable so that tests keep their results to themselves.
var verifiedDir = storage.DefaultVerifiedDir

// restorePlan is the checkpoint chosen at Create and the timings of the
// restore phases as they run. It is handed to the restore at Start.
type restorePlan struct {
	checkpoint *storage.Checkpoint
	// key decrypts an encrypted checkpoint into plain, the directory the
	// restore then reads instead of the store; both unset for a checkpoint
	// stored in the clear.
	key    *crypt.Key
	plain  string
	phases phaseTimes
	// left is what remains of restore_timeout after the phases at Create;
	// the phases at Start get that much, so the wait between Create and
	// Start (containerd's, kubelet's) does not count.
	left time.Duration
	// prefetch brings the checkpoint into the page cache from Create on.
	prefetch *prefetch.Prefetch
	// criu is how CRIU was asked to read pages back.
	criu criuTuning
}

// restoreWish is what the handler's options and the container say before
// any checkpoint is looked at.
type restoreWish int

const (
	// noRestore: no store, restore = never, or a pod's sandbox. A plain
	// cold start, not reported.
	noRestore restoreWish = iota
	// optOut: the container refused (OptOutAnnotation). A reported cold
	// start, even under restore = required.
	optOut
	// tryRestore: plan a restore; what fails falls back (see fallback).
	tryRestore
)

func wishOf(o options.Options, spec *specs.Spec) restoreWish {
	switch {
	case o.Store == "" || o.Restore == options.RestoreNever || isSandbox(spec):
		return noRestore
	case optedOut(spec):
		return optOut
	}
	return tryRestore
}

// errOptedOut is the reason of a cold start the container asked for.
var errOptedOut = events.Because(events.ReasonOptedOut,
	errors.New("the container opted out of restore (annotation "+OptOutAnnotation+" = never)"))

// planRestore is the whole restore-or-cold decision, taken at Create: a
// restore needs a store, a policy that allows it, and each of planSteps to
// pass. Any "no" is a cold start under restore = auto and an error under
// restore = required (see fallback). A nil plan without an error is a cold
// start.
func planRestore(ctx context.Context, c *container) (*restorePlan, error) {
	switch wishOf(c.options, c.spec) {
	case noRestore:
		return nil, nil
	case optOut:
		report(ctx, c, outcome{kind: events.KindRestore, outcome: events.OutcomeColdStart, reason: errOptedOut})
		return nil, nil
	}
	plan, err := makePlan(ctx, c, planSteps)
	if err != nil {
		return nil, declineRestore(ctx, c, plan, err)
	}
	log.G(ctx).WithField("id", c.id).WithField("checkpoint", plan.checkpoint.Name).Info("snapshot: restoring from checkpoint")
	return plan, nil
}

// planStep is one timed step of planning a restore; it fills in the plan.
// skip, when set, leaves it out (untimed) for this container.
type planStep struct {
	name string
	skip func(c *container) bool
	run  func(ctx context.Context, c *container, p *restorePlan) error
}

// planSteps are what a checkpoint must pass to be restored, in order: with
// a registry, a pull into the store when it has no match; one whose
// identity matches the container on a node that suits it, its copy
// in cache_dir if any, the key it is encrypted with (if it is), and a
// signature the handler accepts and intact files.
var planSteps = []planStep{
	{phases.Pull, func(c *container) bool { return !wantsPull(c) }, func(ctx context.Context, c *container, _ *restorePlan) error {
		return pullIfMissing(ctx, c)
	}},
	{phases.Find, nil, func(_ context.Context, c *container, p *restorePlan) (err error) {
		p.checkpoint, err = findCheckpoint(c)
		return err
	}},
	{phases.Cache, nil, func(ctx context.Context, c *container, p *restorePlan) error {
		p.checkpoint = cachedCopy(ctx, p.checkpoint, c.options.CacheDir)
		return nil
	}},
	{phases.Key, nil, func(_ context.Context, c *container, p *restorePlan) (err error) {
		p.key, err = checkEncryption(p.checkpoint, c.options)
		return err
	}},
	{phases.Verify, nil, func(ctx context.Context, c *container, p *restorePlan) error {
		p.startPrefetch(c.options.PrefetchReaders) // the page cache fills while the files are hashed
		return verifyCheckpoint(ctx, p.checkpoint, c.options)
	}},
}

// makePlan runs the steps in order, each timed, within restore_timeout. The
// plan is returned also with an error, for its phases and checkpoint.
func makePlan(ctx context.Context, c *container, steps []planStep) (*restorePlan, error) {
	o := c.options
	plan := &restorePlan{phases: phaseTimes{}}
	start := time.Now()
	vctx, cancel := context.WithTimeout(ctx, o.RestoreTimeout.Duration)
	defer cancel()
	for _, step := range steps {
		if step.skip != nil && step.skip(c) {
			continue
		}
		if err := plan.phases.time(step.name, func() error { return step.run(vctx, c, plan) }); err != nil {
			plan.stopPrefetch(ctx, c.id)
			return plan, fmt.Errorf("%s: %w", step.name, err)
		}
	}
	if plan.key != nil {
		plan.plain = filepath.Join(o.DecryptDir, c.id)
	}
	plan.left = o.RestoreTimeout.Duration - time.Since(start)
	return plan, nil
}

// checkpointName is the plan's checkpoint, "" before one was found.
func (p *restorePlan) checkpointName() string {
	if p == nil || p.checkpoint == nil {
		return ""
	}
	return p.checkpoint.Name
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

// lookup is what a restore takes from s: the newest checkpoint of key, or
// the pinned one.
func lookup(s *storage.Store, key, pinned string) (*storage.Checkpoint, error) {
	if pinned == options.CheckpointAuto {
		return s.Latest(key)
	}
	return s.Get(pinned)
}

// lookupPulled looks where the handler's registry pulls land when that is
// cache_dir rather than the store (pullTarget).
func lookupPulled(c *container, key string) (*storage.Checkpoint, error) {
	if c.options.Registry == "" || c.options.CacheDir == "" {
		return nil, storage.ErrNotFound
	}
	cache, err := storage.Open(c.options.CacheDir)
	if err != nil {
		return nil, err
	}
	return lookup(cache, key, c.options.Checkpoint)
}

// findCheckpoint picks the checkpoint for a container and checks that it
// matches the container and this node; errors say which field differs.
func findCheckpoint(c *container) (*storage.Checkpoint, error) {
	store, err := storage.Open(c.options.Store)
	if err != nil {
		return nil, events.Because(events.ReasonStoreError, err)
	}
	key, fields := containerIdentity(c)
	ck, err := lookup(store, key, c.options.Checkpoint)
	if errors.Is(err, storage.ErrNotFound) {
		if pulled, perr := lookupPulled(c, key); perr == nil {
			ck, err = pulled, nil
		}
	}
	switch {
	case errors.Is(err, storage.ErrNotFound) && c.options.Checkpoint == options.CheckpointAuto:
		return nil, noMatch(store, fields)
	case err != nil:
		return nil, events.Because(events.ReasonStoreError, err)
	case ck.Manifest.Key != key:
		return nil, identityMismatch(ck, fields)
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
	field, had, has, _ := identity.Diff(ck.Manifest.Identity, fields)
	return events.Because(events.ReasonIdentityMismatch, fmt.Errorf("checkpoint %s has %s = %s, this container has %s", ck.Name, field, had, has))
}

func nodeFingerprint(o options.Options) (storage.Fingerprint, error) {
	bin, err := criu.Find(o.CRIUPath)
	if err != nil {
		return storage.Fingerprint{}, err
	}
	return criu.NodeFingerprint(bin)
}
