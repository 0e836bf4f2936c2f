package cudackpt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// API is the part of the driver that the checkpoint and restore flows use.
// *Driver implements it; tests use a fake.
type API interface {
	State(pid int) (ProcessState, error)
	Lock(pid int, timeout time.Duration) error
	Checkpoint(pid int) error
	Restore(pid int, pairs []GPUPair) error
	Unlock(pid int) error
}

// FindCUDAProcesses returns, in order, the pids whose checkpoint state the
// driver can read: the container's CUDA processes. Pids without CUDA, and
// pids that exited meanwhile, are skipped; any other error is returned,
// since checkpointing a container while missing one of its CUDA processes
// would produce a broken image.
func FindCUDAProcesses(api API, pids []int) ([]int, error) {
	var found []int
	for _, pid := range pids {
		if _, err := api.State(pid); err != nil {
			if IsNotCUDAProcess(err) || !processExists(pid) {
				continue
			}
			return nil, stepError("get state of", pid, err)
		}
		found = append(found, pid)
	}
	return found, nil
}

// CheckpointAll moves the GPU state of pids to host memory: it locks every
// pid (concurrently, each bounded by lockTimeout) before it checkpoints any,
// so no process can still be talking to a peer that is already frozen.
// Checkpoints also run concurrently (one per GPU is the common case).
//
// On failure everything done so far is undone (checkpointed pids restored
// and unlocked, locked pids unlocked) and the error names the pid and step,
// joined with any rollback failure. On success the returned rollback puts
// the GPU state back in place (Restore onto the same GPUs, then Unlock): the
// shim calls it to leave the container running, or when a later step of the
// checkpoint fails. Only the first call acts; later calls return its result.
func CheckpointAll(ctx context.Context, api API, pids []int, lockTimeout time.Duration) (rollback func() error, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	locked, err := each(pids, func(pid int) error {
		return stepError("lock", pid, api.Lock(pid, lockTimeout))
	})
	if err == nil {
		err = ctx.Err() // cancelled while locking: undo rather than go on
	}
	if err != nil {
		return nil, errors.Join(err, unlockAll(api, locked))
	}

	done, err := each(pids, func(pid int) error {
		return stepError("checkpoint", pid, api.Checkpoint(pid))
	})
	if err != nil {
		notDone := minus(pids, done)
		return nil, errors.Join(err, restoreAll(api, done, nil), unlockAll(api, notDone))
	}

	var once sync.Once
	var rollbackErr error
	return func() error {
		once.Do(func() { rollbackErr = restoreAll(api, pids, nil) })
		return rollbackErr
	}, nil
}

// RestoreAll brings the GPU state of checkpointed pids back onto the GPUs
// given by pairs (nil: the GPUs they were checkpointed on), restoring them
// concurrently, and unlocks them once all are restored. If any restore
// fails, none is unlocked: the container is about to be torn down, and
// letting half of a multi-process job run against a missing peer helps
// nobody. Cancelling ctx stops before the restore starts; the driver calls
// themselves cannot be interrupted.
func RestoreAll(ctx context.Context, api API, pids []int, pairs []GPUPair) error {
	if err := RestoreEach(ctx, api, pids, pairs); err != nil {
		return err
	}
	return UnlockAll(api, pids)
}

// RestoreEach is the first half of RestoreAll: it restores the GPU state of
// every pid concurrently and leaves them locked. Callers that time the two
// halves separately call UnlockAll once it succeeds.
func RestoreEach(ctx context.Context, api API, pids []int, pairs []GPUPair) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := each(pids, func(pid int) error {
		return stepError("restore", pid, api.Restore(pid, pairs))
	})
	return err
}

// UnlockAll lets restored pids run again (concurrently) and joins the
// errors of those that could not be unlocked.
func UnlockAll(api API, pids []int) error { return unlockAll(api, pids) }

// restoreAll restores (without remapping) and unlocks pids, as rollback.
func restoreAll(api API, pids []int, pairs []GPUPair) error {
	restored, err := each(pids, func(pid int) error {
		return stepError("restore", pid, api.Restore(pid, pairs))
	})
	return errors.Join(err, unlockAll(api, restored))
}

func unlockAll(api API, pids []int) error {
	_, err := each(pids, func(pid int) error {
		return stepError("unlock", pid, api.Unlock(pid))
	})
	return err
}

// each runs fn for every pid concurrently. It returns the pids for which fn
// succeeded, in input order, and the joined errors of the others.
func each(pids []int, fn func(pid int) error) (ok []int, err error) {
	errs := make([]error, len(pids))
	var wg sync.WaitGroup
	for i, pid := range pids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(pid)
		}()
	}
	wg.Wait()
	for i, pid := range pids {
		if errs[i] == nil {
			ok = append(ok, pid)
		}
	}
	return ok, errors.Join(errs...)
}

// minus returns the pids of all that are not in some, in order.
func minus(all, some []int) []int {
	skip := make(map[int]bool, len(some))
	for _, pid := range some {
		skip[pid] = true
	}
	var rest []int
	for _, pid := range all {
		if !skip[pid] {
			rest = append(rest, pid)
		}
	}
	return rest
}

// stepError makes err name the step and pid, unless it already does (a
// driver *Error names its entry point and pid).
func stepError(step string, pid int, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) && e.PID == pid {
		return err
	}
	return fmt.Errorf("cuda %s pid %d: %w", step, pid, err)
}

// processExists reports whether pid is still alive (or a zombie).
func processExists(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) != syscall.ESRCH
}
