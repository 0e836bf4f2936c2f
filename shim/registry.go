package shim

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/log"

	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
	"github.com/gpusnap/containerd-shim-snapshot-v2/phases"
	"github.com/gpusnap/containerd-shim-snapshot-v2/registry"
	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// The handler's registry (options registry, push, pull; docs/registry.md):
// every checkpoint the handler publishes is pushed in the background, and a
// Create that finds no match in the store pulls the newest of its identity
// into the store first (pull = on-demand, within restore_timeout) or for
// the next container (pull = background). Each transfer is a node event.

// Bounds of background transfers, which no RPC waits for.
const (
	pushAttempts          = 3
	pushRetryWait         = 10 * time.Second
	backgroundTransferMax = time.Hour
)

// transfers are the pushes and background pulls still running in this
// shim: Shutdown waits for them, so a shim whose last container was
// deleted stays until they end rather than cut them.
var transfers sync.WaitGroup

func openRegistry(ctx context.Context, o options.Options) (*registry.Remote, error) {
	return registry.Open(ctx, o.Registry, registry.Config{HostsDir: o.RegistryHostsDir, Credentials: o.RegistryCredentials})
}

// wantsPull reports whether planning a restore looks in the registry.
func wantsPull(c *container) bool {
	return c.options.Registry != "" && c.options.Pull != options.PullOff
}

// pullIfMissing is the pull phase of planning a restore: when neither the
// store nor an earlier pull holds the checkpoint the find phase would take,
// the registry's newest of the container's identity (or the pinned
// checkpoint) is pulled into pullTarget, now or, under pull = background,
// for the next container while this one cold-starts. A registry without
// one is no error: the find phase then says there is no checkpoint.
func pullIfMissing(ctx context.Context, c *container) error {
	key, _ := containerIdentity(c)
	if held(c, key) {
		return nil
	}
	store, err := pullTarget(c)
	if err != nil {
		return events.Because(events.ReasonStoreError, err)
	}
	remote, err := openRegistry(ctx, c.options)
	if err != nil {
		return events.Because(events.ReasonRegistryError, err)
	}
	tag := c.options.Checkpoint
	if tag == options.CheckpointAuto {
		if tag, err = remote.Newest(ctx, key); errors.Is(err, storage.ErrNotFound) {
			return nil
		} else if err != nil {
			return pullError(ctx, c, err)
		}
	}
	if c.options.Pull == options.PullBackground {
		transfers.Add(1)
		go func() {
			defer transfers.Done()
			bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), backgroundTransferMax)
			defer cancel()
			pull(bg, c, remote, tag, store)
		}()
		// This container cold-starts, and says why.
		return events.Because(events.ReasonNoCheckpoint, fmt.Errorf("no checkpoint of this container on the node; "+
			"pulling %s from %s in the background for the next one (pull = %q)", tag, c.options.Registry, c.options.Pull))
	}
	_, err = pull(ctx, c, remote, tag, store)
	return err
}

// held reports whether the store, or an earlier pull, holds what the find
// phase would take. A store that cannot be read holds nothing here: the
// find phase reports it.
func held(c *container, key string) bool {
	if store, err := storage.Open(c.options.Store); err == nil {
		if _, err := lookup(store, key, c.options.Checkpoint); err == nil {
			return true
		}
	}
	_, err := lookupPulled(c, key)
	return err == nil
}

// pullTarget is where pulls land: the node-local cache_dir when the handler
// has one (the store may be a shared, read-only file system), else the
// store.
func pullTarget(c *container) (*storage.Store, error) {
	if c.options.CacheDir != "" {
		return storage.Open(c.options.CacheDir)
	}
	return storage.Open(c.options.Store)
}

// pull brings checkpoint tag into store and records the transfer. Pulls of
// one checkpoint into one store by several containers are done once (the
// others wait: registry.Pull); an interrupted pull is resumed by the next.
func pull(ctx context.Context, c *container, remote *registry.Remote, tag string, store *storage.Store) (*storage.Checkpoint, error) {
	times := phaseTimes{}
	var ck *storage.Checkpoint
	err := times.time(phases.Pull, func() (err error) {
		ck, err = remote.Pull(ctx, tag, store, registry.Options{})
		return err
	})
	ev := events.Event{Kind: events.KindTransfer, Outcome: events.OutcomePulled, Checkpoint: tag, Phases: times}
	if err != nil {
		err = pullError(ctx, c, err)
		ev.Outcome, ev.Reason, ev.ReasonCode = events.OutcomePullFailed, err.Error(), events.CodeOf(err)
	} else {
		ev.BytesRead = ck.Size()
		log.G(ctx).WithField("id", c.id).WithField("checkpoint", tag).WithField("seconds", times[phases.Pull]).Info("snapshot: pulled from the registry")
		rememberPulled(ctx, c, ck)
	}
	recordEvent(ctx, c, ev)
	return ck, err
}

// rememberPulled records the pulled checkpoint's files as verified on this
// node: the pull hashed every byte against the manifest before the copy
// became visible, so the restore's verify phase need not hash them again.
// Its signature is still checked there, under the handler's policy.
func rememberPulled(ctx context.Context, c *container, ck *storage.Checkpoint) {
	policy, err := signaturePolicy(c.options)
	if err == nil {
		err = ck.RememberVerified(verifiedDir, policy)
	}
	if err != nil {
		log.G(ctx).WithError(err).WithField("checkpoint", ck.Name).Warn("snapshot: remembering the pulled checkpoint as verified")
	}
}

// pullError marks a failed pull with its reason: restore_timeout running
// out is a pull timeout, anything else the registry's fault (a corrupt
// blob keeps its own code, verification-failed: see events.CodeOf).
func pullError(ctx context.Context, c *container, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return events.Because(events.ReasonPullTimeout,
			fmt.Errorf("restore_timeout (%s) ran out pulling from %s: %w", c.options.RestoreTimeout.Duration, c.options.Registry, err))
	}
	return events.Because(events.ReasonRegistryError, err)
}

// pushLater pushes a checkpoint just published, in the background, when
// the handler asks for it (push = on-checkpoint): the workload never waits
// for the registry. Failed attempts are retried; the outcome is an event.
func pushLater(ctx context.Context, c *container, ck *storage.Checkpoint) {
	if c.options.Registry == "" || c.options.Push != options.PushOnCheckpoint {
		return
	}
	transfers.Add(1)
	go func() {
		defer transfers.Done()
		bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), backgroundTransferMax)
		defer cancel()
		push(bg, c, ck)
	}()
}

// push uploads ck, up to pushAttempts times, and records the outcome.
func push(ctx context.Context, c *container, ck *storage.Checkpoint) {
	logger := log.G(ctx).WithField("id", c.id).WithField("checkpoint", ck.Name).WithField("registry", c.options.Registry)
	times := phaseTimes{}
	var (
		res *registry.PushResult
		err error
	)
	for attempt := 1; attempt <= pushAttempts; attempt++ {
		err = times.time(phases.Push, func() error {
			remote, err := openRegistry(ctx, c.options)
			if err == nil {
				res, err = remote.Push(ctx, ck, registry.Options{})
			}
			return err
		})
		if err == nil || attempt == pushAttempts || ctx.Err() != nil {
			break
		}
		logger.WithError(err).WithField("attempt", attempt).Warn("snapshot: push failed; retrying")
		select {
		case <-ctx.Done():
		case <-time.After(pushRetryWait):
		}
	}
	ev := events.Event{Kind: events.KindTransfer, Outcome: events.OutcomePushed, Checkpoint: ck.Name, Phases: times}
	if err != nil {
		err = events.Because(events.ReasonRegistryError, fmt.Errorf("push to %s: %w", c.options.Registry, err))
		ev.Outcome, ev.Reason, ev.ReasonCode = events.OutcomePushFailed, err.Error(), events.CodeOf(err)
		logger.WithError(err).Error("snapshot: push failed")
	} else {
		ev.BytesWritten = res.Uploaded
		logger.WithField("ref", res.Ref).WithField("uploaded", res.Uploaded).WithField("seconds", times[phases.Push]).Info("snapshot: pushed")
	}
	recordEvent(ctx, c, ev)
}
