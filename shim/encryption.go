package shim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/log"

	"github.com/gpusnap/containerd-shim-snapshot-v2/crypt"
	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// plaintextMarker, in a container's bundle, names the directory its
// checkpoint is being decrypted into. It is written before that directory
// is made, so that the out-of-process delete of a shim killed mid-restore
// (manager.Stop) removes the plaintext the shim could not.
const plaintextMarker = "snapshot-plaintext"

// encryptionKey is the handler's encryption key; nil when it encrypts
// nothing. Like the signing key it is read at every use, so a rotated key
// file takes effect at the next checkpoint.
func encryptionKey(o options.Options) (*crypt.Key, error) {
	if o.EncryptionKey == "" {
		return nil, nil
	}
	key, err := storage.LoadEncryptionKey(o.EncryptionKey)
	return key, events.Because(events.ReasonKeyError, err)
}

// checkEncryption returns the key that decrypts ck, nil for a checkpoint
// stored in the clear (restored as it is: encryption protects the store,
// and a handler that turned it on still restores what it wrote before).
// A checkpoint encrypted with another key, or on a handler without one, is
// refused here, by key id, before anything is read or decrypted.
func checkEncryption(ck *storage.Checkpoint, o options.Options) (*crypt.Key, error) {
	e := ck.Manifest.Encryption
	if e == nil {
		return nil, nil
	}
	if o.EncryptionKey == "" {
		return nil, events.Because(events.ReasonWrongKey,
			fmt.Errorf("checkpoint %s is encrypted with key %s and this handler has no encryption_key", ck.Name, e.KeyID))
	}
	key, err := encryptionKey(o)
	if err != nil {
		return nil, err
	}
	if key.ID != e.KeyID {
		return nil, events.Because(events.ReasonWrongKey, fmt.Errorf("checkpoint %s is encrypted with key %s, this handler's encryption_key is %s (%s)",
			ck.Name, e.KeyID, key.ID, o.EncryptionKey))
	}
	return key, nil
}

// decryptCheckpoint decrypts every file of the planned checkpoint into its
// plaintext directory: a fresh 0700 directory in the handler's root-only
// decrypt_dir, named in the container's bundle (plaintextMarker). The
// caller removes it with removePlaintext, whatever happens. Any failure is
// a failed decryption.
func decryptCheckpoint(ctx context.Context, bundle string, plan *restorePlan) error {
	return events.Because(events.ReasonDecryptFailed, decryptInto(ctx, bundle, plan))
}

func decryptInto(ctx context.Context, bundle string, plan *restorePlan) error {
	base := filepath.Dir(plan.plain)
	if err := os.MkdirAll(base, 0o700); err != nil {
		return err
	}
	if err := storage.CheckRootOnly(base); err != nil {
		return fmt.Errorf("decrypt_dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(bundle, plaintextMarker), []byte(plan.plain), 0o600); err != nil {
		return err
	}
	if err := os.RemoveAll(plan.plain); err != nil { // a killed shim's, for the same container
		return err
	}
	if err := os.Mkdir(plan.plain, 0o700); err != nil {
		return err
	}
	names := make([]string, len(plan.checkpoint.Manifest.Files))
	for i, f := range plan.checkpoint.Manifest.Files {
		names[i] = f.Path
	}
	return plan.key.DecryptTree(ctx, plan.checkpoint.Dir, plan.plain, names, 0)
}

// removePlaintext removes a container's decrypted checkpoint, and then the
// marker in its bundle that pointed at it.
func removePlaintext(ctx context.Context, id, bundle string, plan *restorePlan) {
	if err := os.RemoveAll(plan.plain); err != nil {
		log.G(ctx).WithError(err).WithField("id", id).Error("snapshot: removing the decrypted checkpoint")
		return
	}
	os.Remove(filepath.Join(bundle, plaintextMarker))
}

// removePlaintextOf is removePlaintext for the out-of-process delete, which
// knows only the bundle: it follows the marker, if any.
func removePlaintextOf(ctx context.Context, bundle string) {
	marker := filepath.Join(bundle, plaintextMarker)
	dir, err := os.ReadFile(marker)
	if err != nil {
		return
	}
	if p := strings.TrimSpace(string(dir)); filepath.IsAbs(p) {
		if err := os.RemoveAll(p); err != nil {
			log.G(ctx).WithError(err).Error("snapshot: removing the decrypted checkpoint of a dead shim")
			return
		}
	}
	os.Remove(marker)
}
