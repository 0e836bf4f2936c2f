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

// TestReasonCode classifies the reasons the shim gives, built as the shim
// builds them (shim/restore.go: planRestore wraps the lookup and verify
// phases' errors in the phase name, startRestored wraps a failed restore),
// with the store's own errors inside where the store makes them.
func TestReasonCode(t *testing.T) {
	const ck = "0ae3c1d2e4f5a6b7-g000001"
	node := storage.Fingerprint{Arch: "amd64", Kernel: "6.8.0-45-generic", CRIUVersion: "4.2.1", CgroupVersion: 2}
	newer := node
	newer.Kernel = "6.18.44"
	nodeErr := node.Compatible(newer)
	gpuErr := (&storage.Manifest{GPUs: []storage.GPU{{Product: "NVIDIA H100 80GB HBM3"}}}).GPUCompatible(storage.GPUNode{})
	store, err := storage.Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	_, pinnedMissing := store.Get(ck)
	_, openErr := storage.Open("")
	_, badKey := store.Latest("not-a-key")
	corrupt := fmt.Errorf("verify %s: %w: %w", ck, storage.ErrCorrupt, errors.Join(
		errors.New("checkpoint/pages-1.img: sha256: expected 00, got 11"), errors.New("spec.dump: missing")))
	timeout := fmt.Errorf("restore_timeout of %s exceeded: %w", 5*time.Minute, context.DeadlineExceeded)
	_, signingKeyErr := storage.LoadSigningKey("/etc/gpusnap/missing.key")
	_, trustedKeyErr := storage.LoadTrustedKeys([]string{"/etc/gpusnap/missing.pub"})
	_, encryptionKeyErr := storage.LoadEncryptionKey("/etc/gpusnap/missing.enc")

	tests := []struct {
		reason string
		want   string
	}{
		{"", ""},
		// findCheckpoint / noMatch
		{"lookup: store /var/lib/snap holds no checkpoint", ReasonNoCheckpoint},
		{"lookup: no checkpoint in /var/lib/snap matches this container; newest: checkpoint " + ck +
			` has env = [A=1], this container has [A=2]`, ReasonNoCheckpoint},
		{"lookup: " + pinnedMissing.Error(), ReasonNoCheckpoint},
		{"no checkpoint of this identity", ReasonNoCheckpoint},
		{"lookup: checkpoint " + ck + " has image = registry.local/web:1, this container has registry.local/web:2", ReasonIdentityMismatch},
		{"lookup: checkpoint " + ck + " has gpus = NVIDIA H100 80GB HBM3 x1, this container has ", ReasonIdentityMismatch},
		{"lookup: checkpoint " + ck + " does not suit this node: " + nodeErr.Error(), ReasonNodeMismatch},
		{"lookup: checkpoint " + ck + " does not suit this container's GPUs: " + gpuErr.Error(), ReasonGPUMismatch},
		{"lookup: " + openErr.Error(), ReasonStoreError},
		{"lookup: open store /var/lib/snap: mkdir /var/lib/snap: read-only file system", ReasonStoreError},
		{"lookup: read store /var/lib/snap: open /var/lib/snap: permission denied", ReasonStoreError},
		{"lookup: " + badKey.Error(), ReasonStoreError},
		{"lookup: invalid manifest: /s/" + ck + "/manifest.json: malformed or truncated JSON", ReasonStoreError},
		{"lookup: CRIU not found (looked for PATH; `make deps` installs CRIU): exec: \"criu\": executable file not found in $PATH", ReasonOther},
		// planRestore's verify phase
		{"verify: checkpoint " + ck + " failed verification: " + corrupt.Error(), ReasonVerificationFailed},
		{"verify: checkpoint " + ck + " failed verification: " + timeout.Error(), ReasonRestoreTimeout},
		// planRestore's verify phase: signatures (shim/signature_test.go
		// builds these through the shim itself)
		{"verify: checkpoint " + ck + " is not signed and the handler requires signatures (require_signature = true)", ReasonUnsigned},
		{"verify: signature of checkpoint " + ck + " does not verify with any trusted key (1a2b3c4d5e6f7a8b, 0f1e2d3c4b5a6978)", ReasonBadSignature},
		{"verify: signature of checkpoint " + ck + " is malformed: manifest.sig holds 100 bytes, an ed25519 signature is 64", ReasonBadSignature},
		{"verify: " + trustedKeyErr.Error(), ReasonKeyError},
		// planRestore's lookup phase: encryption (shim/encryption_test.go
		// builds these through the shim itself)
		{"lookup: checkpoint " + ck + " is encrypted with key 1a2b3c4d5e6f7a8b, this handler's encryption_key is 0f1e2d3c4b5a6978 (/etc/gpusnap/h.enc)", ReasonWrongKey},
		{"lookup: checkpoint " + ck + " is encrypted with key 1a2b3c4d5e6f7a8b and this handler has no encryption_key", ReasonWrongKey},
		{"lookup: " + encryptionKeyErr.Error(), ReasonKeyError},
		// a checkpoint that could not be signed
		{signingKeyErr.Error(), ReasonKeyError},
		// startRestored
		{"restore from checkpoint " + ck + " failed: criu_restore: runc restore: criu failed: (00.012) Error (criu/cr-restore.c:1480): ...", ReasonRestoreFailed},
		{"restore from checkpoint " + ck + " failed: cuda_restore: cuCheckpointProcessRestore: CUDA_ERROR_INVALID_VALUE", ReasonRestoreFailed},
		{"restore from checkpoint " + ck + " failed: " + timeout.Error() + ": criu_restore: signal: killed", ReasonRestoreTimeout},
		{"restore from checkpoint " + ck + " failed: decrypt: decrypting checkpoint/pages-1.img: chunk 3 of 9: failed authentication (another key, or the file was changed, truncated or moved)", ReasonDecryptFailed},
		{"restore from checkpoint " + ck + " failed: decrypt: decrypting checkpoint/pages-1.img: write /run/x/pages-1.img: no space left on device", ReasonDecryptFailed},
		{"restore from checkpoint " + ck + " failed: " + timeout.Error() + ": decrypt: decrypting checkpoint/pages-1.img: context deadline exceeded", ReasonRestoreTimeout},
		// checkpoint failures (Record fills the code for them too)
		{"publish " + ck + ": rename: file exists", ReasonStoreError},
		{"pausing for the checkpoint: container not running", ReasonOther},
		{"something new", ReasonOther},
	}
	for _, tt := range tests {
		got := ReasonCode(tt.reason)
		if got != tt.want {
			t.Errorf("ReasonCode(%q) = %q, want %q", tt.reason, got, tt.want)
		}
		if got != "" && !slices.Contains(ReasonCodes, got) {
			t.Errorf("ReasonCode(%q) = %q, which is not in ReasonCodes", tt.reason, got)
		}
	}
}
