package shim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// writeKeyPair writes a key pair as `gpusnap keygen` does and returns the
// paths and the key id.
func writeKeyPair(t *testing.T, name string) (keyPath, pubPath, id string) {
	t.Helper()
	priv, pub, id, err := storage.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyPath, pubPath = filepath.Join(dir, name+".key"), filepath.Join(dir, name+".pub")
	if err := os.WriteFile(keyPath, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubPath, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	return keyPath, pubPath, id
}

// publishTest publishes a small checkpoint, signed when keyPath is set, and
// loads it back as planRestore's lookup would.
// openTestStore opens an empty store in a temporary directory.
func openTestStore(t *testing.T) *storage.Store {
	t.Helper()
	s, err := storage.Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func publishTest(t *testing.T, s *storage.Store, label, keyPath string) *storage.Checkpoint {
	t.Helper()
	signer, err := signingKey(options.Options{SigningKey: keyPath})
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.Stage()
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(st.Dir(), "checkpoint"), 0o700)
	os.WriteFile(filepath.Join(st.Dir(), "checkpoint", "pages-1.img"), []byte("pages"), 0o600)
	sum := sha256.Sum256([]byte(label))
	ck, err := st.PublishSigned(&storage.Manifest{Key: hex.EncodeToString(sum[:])}, signer)
	if err != nil {
		t.Fatal(err)
	}
	if ck, err = s.Get(ck.Name); err != nil {
		t.Fatal(err)
	}
	return ck
}

// TestVerifyCheckpointSignatures: the verify phase's reasons, in the words
// the status file and events carry, and the reason code metrics label them
// with.
func TestVerifyCheckpointSignatures(t *testing.T) {
	saved := verifiedDir
	verifiedDir = t.TempDir()
	t.Cleanup(func() { verifiedDir = saved })
	keyA, pubA, _ := writeKeyPair(t, "a")
	_, pubB, idB := writeKeyPair(t, "b")
	s := openTestStore(t)
	signed := publishTest(t, s, "signed", keyA)
	unsigned := publishTest(t, s, "unsigned", "")

	tests := []struct {
		name    string
		ck      *storage.Checkpoint
		trusted []string
		require bool
		want    string // "" accepted
		code    string
	}{
		{"signed, trusted, required", signed, []string{pubA}, true, "", ""},
		{"signed, trusted among others", signed, []string{pubB, pubA}, false, "", ""},
		{"no keys configured", signed, nil, false, "", ""},
		{"unsigned, not required", unsigned, []string{pubA}, false, "", ""},
		{"unsigned, required", unsigned, []string{pubA}, true,
			"checkpoint " + unsigned.Name + " is not signed and the handler requires signatures (require_signature = true)", events.ReasonUnsigned},
		{"signed with another key", signed, []string{pubB}, false,
			"signature of checkpoint " + signed.Name + " does not verify with any trusted key (" + idB + ")", events.ReasonBadSignature},
		{"trusted key missing", signed, []string{"/nonexistent/gpusnap.pub"}, false,
			"trusted key /nonexistent/gpusnap.pub: open /nonexistent/gpusnap.pub: no such file or directory", events.ReasonKeyError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := options.Default()
			o.TrustedKeys, o.RequireSignature = tt.trusted, tt.require
			err := verifyCheckpoint(context.Background(), tt.ck, o)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || err.Error() != tt.want {
				t.Fatalf("got %v\nwant %s", err, tt.want)
			}
			if code := events.CodeOf(err); code != tt.code {
				t.Errorf("reason code %q, want %q", code, tt.code)
			}
		})
	}

	// A corrupt file under a good signature is still a failed verification.
	pages := filepath.Join(signed.Dir, "checkpoint", "pages-1.img")
	os.WriteFile(pages, []byte("PAGES"), 0o600)
	o := options.Default()
	o.TrustedKeys, o.RequireSignature = []string{pubA}, true
	err := verifyCheckpoint(context.Background(), signed, o)
	if err == nil || events.CodeOf(err) != events.ReasonVerificationFailed {
		t.Fatalf("corrupt pages under a good signature: %v", err)
	}
}
