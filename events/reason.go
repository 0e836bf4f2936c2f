package events

import (
	"regexp"
	"strings"
)

// Reason codes: short, stable labels for why a restore was not done, few
// enough to be a metrics label.
const (
	ReasonNoCheckpoint       = "no-checkpoint"
	ReasonIdentityMismatch   = "identity-mismatch"
	ReasonNodeMismatch       = "node-mismatch"
	ReasonGPUMismatch        = "gpu-mismatch"
	ReasonVerificationFailed = "verification-failed"
	ReasonRestoreTimeout     = "restore-timeout"
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

// ReasonCodes are every code ReasonCode returns.
var ReasonCodes = []string{
	ReasonNoCheckpoint, ReasonIdentityMismatch, ReasonNodeMismatch, ReasonGPUMismatch,
	ReasonVerificationFailed, ReasonRestoreTimeout, ReasonRestoreFailed, ReasonStoreError, ReasonUntrustedStore,
	ReasonUnsigned, ReasonBadSignature, ReasonKeyError, ReasonWrongKey, ReasonDecryptFailed, ReasonOptedOut, ReasonOther,
}

// identityDiff is how the shim names a differing identity field:
// "checkpoint <name> has <field> = <value>, this container has <value>".
var identityDiff = regexp.MustCompile(`\bhas [^ =]+ = `)

// reasonRules are tried in order; the first whose test matches wins. The
// order puts causes before the steps they broke: restore_timeout running
// out during verification is a timeout, not a corrupt checkpoint, and the
// "newest: checkpoint ... has env = ..." that explains an empty lookup is
// no checkpoint of this identity, not a mismatch of a pinned one.
var reasonRules = []struct {
	code string
	test func(string) bool
}{
	// shim: skipRestore, the container's gpusnap.io/restore = never.
	{ReasonOptedOut, containsAny("opted out of restore")},
	// shim: timeoutReason, in verify or in the restore at Start.
	{ReasonRestoreTimeout, containsAny("restore_timeout of")},
	// shim: startRestored, the decrypt phase: "restore from checkpoint
	// <name> failed: decrypt: decrypting <file>: chunk <i> of <n>: failed
	// authentication ..." (or an I/O error writing decrypt_dir).
	{ReasonDecryptFailed, containsAny("failed: decrypt: ")},
	// shim: startRestored, "restore from checkpoint <name> failed: <phase>: ...".
	{ReasonRestoreFailed, containsAny("restore from checkpoint")},
	// storage.ErrUntrusted, from opening the store or from verification.
	{ReasonUntrustedStore, containsAny("untrusted store path")},
	// shim: verifyCheckpoint, storage.ErrUnsigned under require_signature:
	// "checkpoint <name> is not signed and the handler requires signatures".
	{ReasonUnsigned, containsAny("is not signed")},
	// storage.ErrBadSignature: "signature of checkpoint <name> does not
	// verify with any trusted key (<ids>)" or "... is malformed: ...".
	{ReasonBadSignature, containsAny("signature of checkpoint")},
	// storage: LoadSigningKey, LoadTrustedKeys, LoadEncryptionKey ("signing
	// key <path>: ...", "trusted key <path>: ...", "encryption key <path>:
	// ..."; the options make every key path absolute).
	{ReasonKeyError, containsAny("signing key /", "trusted key /", "encryption key /")},
	// shim: checkEncryption, "checkpoint <name> is encrypted with key <id>,
	// this handler's encryption_key is <id> (<path>)" or "... and this
	// handler has no encryption_key".
	{ReasonWrongKey, containsAny("this handler's encryption_key is", "this handler has no encryption_key")},
	// shim: planRestore's verify phase, "checkpoint <name> failed verification: ...".
	{ReasonVerificationFailed, containsAny("failed verification", corruptText)},
	// shim: findCheckpoint, storage.Manifest.GPUCompatible.
	{ReasonGPUMismatch, containsAny("does not suit this container's gpus")},
	// shim: findCheckpoint, storage.Fingerprint.Compatible.
	{ReasonNodeMismatch, containsAny("does not suit this node")},
	// shim: noMatch ("store <dir> holds no checkpoint", "no checkpoint in
	// <dir> matches this container; newest: ..."); storage.ErrNotFound for
	// a pinned checkpoint name that is not in the store.
	{ReasonNoCheckpoint, containsAny("holds no checkpoint", "matches this container",
		"no checkpoint of this identity", "checkpoint not found")},
	// shim: identityMismatch, a pinned checkpoint of another identity.
	{ReasonIdentityMismatch, identityDiff.MatchString},
	// storage: opening, reading or publishing into the store, manifests.
	{ReasonStoreError, containsAny("open store", "read store", "invalid manifest", "latest checkpoint",
		"stage checkpoint", "publish")},
}

// corruptText is storage.ErrCorrupt's message, which a verification
// failure carries.
const corruptText = "checkpoint corrupt"

func containsAny(subs ...string) func(string) bool {
	return func(s string) bool {
		for _, sub := range subs {
			if strings.Contains(s, strings.ToLower(sub)) {
				return true
			}
		}
		return false
	}
}

// ReasonCode classifies a reason the shim gave for not restoring (or for a
// failed checkpoint) into one of ReasonCodes, by the wording of the shim's
// and the store's messages; anything unrecognised is "other". "" for "".
func ReasonCode(reason string) string {
	if reason == "" {
		return ""
	}
	r := strings.ToLower(reason)
	for _, rule := range reasonRules {
		if rule.test(r) {
			return rule.code
		}
	}
	return ReasonOther
}
