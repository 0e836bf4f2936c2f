package events

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// TestCodeOf picks the code from the marks and the store's typed errors in
// an error, the way the shim wraps them (shim/restore.go: the find and
// verify steps mark their causes, startRestored marks a failed restore,
// timeoutReason a deadline), whatever the words say.
func TestCodeOf(t *testing.T) {
	const ck = "0ae3c1d2e4f5a6b7-g000001"
	node := storage.Fingerprint{Arch: "amd64", Kernel: "6.8.0-45-generic", CRIUVersion: "4.2.1", CgroupVersion: 2}
	newer := node
	newer.Kernel = "6.18.44"
	nodeErr := node.Compatible(newer)
	store, err := storage.Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	_, pinnedMissing := store.Get(ck)
	corrupt := fmt.Errorf("verify %s: %w: %w", ck, storage.ErrCorrupt, errors.New("spec.dump: missing"))
	timeout := Because(ReasonRestoreTimeout, fmt.Errorf("restore_timeout of %s exceeded: %w", 5*time.Minute, context.DeadlineExceeded))
	untrusted := fmt.Errorf("open store /s: %w: owned by uid 1000", storage.ErrUntrusted)
	identity := Because(ReasonIdentityMismatch, errors.New("checkpoint "+ck+" has env = [A=1], this container has [A=2]"))
	failed := func(err error) error {
		return Because(ReasonRestoreFailed, fmt.Errorf("restore from checkpoint %s failed: %w", ck, err))
	}
	verification := func(err error) error {
		return Because(ReasonVerificationFailed, fmt.Errorf("checkpoint %s failed verification: %w", ck, err))
	}
	lookup := func(err error) error { return fmt.Errorf("find: %w", err) }

	tests := []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"opted out", Because(ReasonOptedOut, errors.New("the container opted out")), ReasonOptedOut},
		{"empty store", lookup(Because(ReasonNoCheckpoint, errors.New("store /s holds no checkpoint"))), ReasonNoCheckpoint},
		{"no match names the newest", lookup(Because(ReasonNoCheckpoint, fmt.Errorf("no checkpoint in /s matches; newest: %w", identity))), ReasonNoCheckpoint},
		{"pinned, missing", lookup(Because(ReasonStoreError, pinnedMissing)), ReasonNoCheckpoint},
		{"pinned, other identity", lookup(identity), ReasonIdentityMismatch},
		{"node", lookup(Because(ReasonNodeMismatch, nodeErr)), ReasonNodeMismatch},
		{"gpus", lookup(Because(ReasonGPUMismatch, errors.New("gpu_count"))), ReasonGPUMismatch},
		{"store", lookup(Because(ReasonStoreError, errors.New("read store /s: permission denied"))), ReasonStoreError},
		{"invalid manifest", fmt.Errorf("x: %w", storage.ErrManifest), ReasonStoreError},
		{"untrusted store beats store error", lookup(Because(ReasonStoreError, untrusted)), ReasonUntrustedStore},
		{"unmarked", lookup(errors.New("CRIU not found")), ReasonOther},
		{"corrupt", verification(corrupt), ReasonVerificationFailed},
		{"bare corrupt", corrupt, ReasonVerificationFailed},
		{"timeout beats verification", verification(timeout), ReasonRestoreTimeout},
		{"untrusted beats verification", verification(untrusted), ReasonUntrustedStore},
		{"unsigned", fmt.Errorf("checkpoint %s is %w and the handler requires signatures", ck, storage.ErrUnsigned), ReasonUnsigned},
		{"bad signature", fmt.Errorf("signature of checkpoint %s: %w", ck, storage.ErrBadSignature), ReasonBadSignature},
		{"key", Because(ReasonKeyError, errors.New("trusted key /k: no such file")), ReasonKeyError},
		{"wrong key", Because(ReasonWrongKey, errors.New("encrypted with key a, this handler's is b")), ReasonWrongKey},
		{"restore", failed(errors.New("criu_restore: exit status 1")), ReasonRestoreFailed},
		{"restore beats what broke inside", failed(untrusted), ReasonRestoreFailed},
		{"timeout beats restore", failed(timeout), ReasonRestoreTimeout},
		{"decrypt", failed(fmt.Errorf("decrypt: %w", Because(ReasonDecryptFailed, errors.New("failed authentication")))), ReasonDecryptFailed},
		{"timeout beats decrypt", failed(Because(ReasonRestoreTimeout, Because(ReasonDecryptFailed, context.DeadlineExceeded))), ReasonRestoreTimeout},
		{"joined", errors.Join(errors.New("a"), Because(ReasonKeyError, errors.New("b"))), ReasonKeyError},
		{"checkpoint", errors.New("pausing for the checkpoint: container not running"), ReasonOther},
	}
	for _, tt := range tests {
		got := CodeOf(tt.err)
		if got != tt.want {
			t.Errorf("%s: CodeOf(%v) = %q, want %q", tt.name, tt.err, got, tt.want)
		}
		if got != "" && !slices.Contains(ReasonCodes, got) {
			t.Errorf("%s: CodeOf = %q, which is not in ReasonCodes", tt.name, got)
		}
	}
}

// TestReasonKeepsWords: a mark changes neither the message nor what the
// error wraps.
func TestReasonKeepsWords(t *testing.T) {
	inner := fmt.Errorf("x: %w", storage.ErrNotFound)
	err := Because(ReasonStoreError, inner)
	if err.Error() != inner.Error() || !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Because = %q, wraps ErrNotFound %v", err, errors.Is(err, storage.ErrNotFound))
	}
	if Because(ReasonOther, nil) != nil {
		t.Error("Because(code, nil) is not nil")
	}
}

func TestEventCode(t *testing.T) {
	for _, tt := range []struct {
		e    Event
		want string
	}{
		{Event{}, ""},
		{Event{Reason: "x", ReasonCode: ReasonWrongKey}, ReasonWrongKey},
		// Written without a code (never by Record): the words are not parsed.
		{Event{Reason: "store /s holds no checkpoint"}, ReasonOther},
	} {
		if got := tt.e.Code(); got != tt.want {
			t.Errorf("%+v.Code() = %q, want %q", tt.e, got, tt.want)
		}
	}
}
