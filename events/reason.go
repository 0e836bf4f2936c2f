package events

import (
	"errors"

	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// Reason codes: short, stable labels for why a restore was not done (or a
// checkpoint failed), few enough to be a metrics label.
const (
	ReasonNoCheckpoint       = "no-checkpoint"
	ReasonIdentityMismatch   = "identity-mismatch"
	ReasonNodeMismatch       = "node-mismatch"
	ReasonGPUMismatch        = "gpu-mismatch"
	ReasonVerificationFailed = "verification-failed"
	ReasonRestoreTimeout     = "restore-timeout"
	ReasonPullTimeout        = "pull-timeout"   // restore_timeout ran out while pulling from the registry
	ReasonRegistryError      = "registry-error" // the registry could not be reached, refused, or served something unusable
	ReasonRestoreFailed      = "restore-failed"
	ReasonStoreError         = "store-error"
	ReasonUntrustedStore     = "untrusted-store"
	ReasonUnsigned           = "unsigned"
	ReasonBadSignature       = "bad-signature"
	ReasonKeyError           = "key-error"
	ReasonWrongKey           = "wrong-key"
	ReasonDecryptFailed      = "decrypt-failed"
	ReasonOptedOut           = "opted-out"
	ReasonOther              = "other"
)

// ReasonCodes are every code CodeOf returns, in the order CodeOf tries
// them, "other" last.
var ReasonCodes = []string{
	ReasonOptedOut, ReasonPullTimeout, ReasonRestoreTimeout, ReasonDecryptFailed, ReasonRestoreFailed, ReasonUntrustedStore,
	ReasonUnsigned, ReasonBadSignature, ReasonKeyError, ReasonWrongKey, ReasonVerificationFailed, ReasonRegistryError,
	ReasonGPUMismatch, ReasonNodeMismatch, ReasonNoCheckpoint, ReasonIdentityMismatch, ReasonStoreError, ReasonOther,
}

// Reason marks an error with the code of the cause it stands for. The words
// (Error) are for people and may change; the code is for machines and may
// not. The shim marks each decline and failure where it knows the cause.
type Reason struct {
	Code string
	Err  error
}

// Because marks err with code; nil stays nil.
func Because(code string, err error) error {
	if err == nil {
		return nil
	}
	return &Reason{Code: code, Err: err}
}

func (r *Reason) Error() string { return r.Err.Error() }
func (r *Reason) Unwrap() error { return r.Err }

// Is makes errors.Is(err, &Reason{Code: c}) true for an err that carries
// code c anywhere in its chain.
func (r *Reason) Is(target error) bool {
	t, ok := target.(*Reason)
	return ok && t.Err == nil && t.Code == r.Code
}

// storageCauses are the store's own typed errors, which carry their code
// wherever they are wrapped.
var storageCauses = map[string]error{
	ReasonUntrustedStore:     storage.ErrUntrusted,
	ReasonUnsigned:           storage.ErrUnsigned,
	ReasonBadSignature:       storage.ErrBadSignature,
	ReasonVerificationFailed: storage.ErrCorrupt,
	ReasonNoCheckpoint:       storage.ErrNotFound,
	ReasonStoreError:         storage.ErrManifest,
}

// CodeOf is the reason code of err: the first of ReasonCodes that err
// carries, as a Reason mark or as the store's typed error. The order puts
// causes before the steps they broke: restore_timeout running out during
// verification is a timeout, not a failed verification; an untrusted store
// found while verifying is an untrusted store; and a failed lookup that
// names the newest checkpoint's differing identity is no checkpoint of this
// identity, not a mismatch of a pinned one. An error with no known cause is
// "other"; nil is "".
func CodeOf(err error) string {
	if err == nil {
		return ""
	}
	for _, code := range ReasonCodes[:len(ReasonCodes)-1] {
		if errors.Is(err, &Reason{Code: code}) {
			return code
		}
		if cause, ok := storageCauses[code]; ok && errors.Is(err, cause) {
			return code
		}
	}
	return ReasonOther
}

// Code is the event's reason code: ReasonCode, or "other" for an event with
// a Reason and no code. Record has filled ReasonCode since events were
// first written, so only an event written by other means lacks one; its
// text is not parsed.
func (e Event) Code() string {
	if e.ReasonCode == "" && e.Reason != "" {
		return ReasonOther
	}
	return e.ReasonCode
}
