package shim

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpusnap/containerd-shim-snapshot-v2/crypt"
	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// writeEncryptionKey writes a key file as `gpusnap enckey` does.
func writeEncryptionKey(t *testing.T) (path string, key *crypt.Key) {
	t.Helper()
	raw := make([]byte, crypt.KeySize)
	rand.Read(raw)
	path = filepath.Join(t.TempDir(), "handler.enc")
	if err := os.WriteFile(path, []byte(hex.EncodeToString(raw)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := crypt.NewKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return path, key
}

// checkpointFiles is what publishEncrypted writes, by path in the checkpoint.
var checkpointFiles = map[string][]byte{
	"checkpoint/pages-1.img":     bytes.Repeat([]byte("secret memory "), 200_000), // 2.8 MB: 3 chunks
	"checkpoint/inventory.img":   []byte("inventory"),
	"rootfs-diff.tar":            nil,
	"spec.dump":                  []byte(`{"ociVersion":"1.2.0"}`),
	"checkpoint/empty-image.img": {},
}

// publishEncrypted publishes a checkpoint of checkpointFiles the way
// publish does with an encryption key: every file encrypted into the
// staging directory under its path, the key id in the manifest.
func publishEncrypted(t *testing.T, s *storage.Store, label string, key *crypt.Key) *storage.Checkpoint {
	t.Helper()
	st, err := s.Stage()
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "checkpoint"), 0o700)
	for name, data := range checkpointFiles {
		os.WriteFile(filepath.Join(src, name), data, 0o600)
	}
	place := encryptInto(key, st.Dir())
	if err := placeDir(filepath.Join(src, "checkpoint"), filepath.Join(st.Dir(), "checkpoint"), nil, place); err != nil {
		t.Fatal(err)
	}
	if err := placeRestoreFiles(src, st.Dir(), place); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(label))
	m := &storage.Manifest{Key: hex.EncodeToString(sum[:]), Encryption: &storage.Encryption{Algorithm: crypt.Algorithm, KeyID: key.ID}}
	ck, err := st.Publish(m)
	if err != nil {
		t.Fatal(err)
	}
	if ck, err = s.Get(ck.Name); err != nil {
		t.Fatal(err)
	}
	return ck
}

// TestCheckEncryption: which key a restore needs, and the reasons and
// reason codes of a refusal, before anything is decrypted.
func TestCheckEncryption(t *testing.T) {
	keyPath, key := writeEncryptionKey(t)
	otherPath, other := writeEncryptionKey(t)
	loose := filepath.Join(t.TempDir(), "loose.enc")
	data, _ := os.ReadFile(keyPath)
	os.WriteFile(loose, data, 0o644)
	s := openTestStore(t)
	encrypted := publishEncrypted(t, s, "encrypted", key)
	clear := publishTest(t, s, "clear", "")

	tests := []struct {
		name    string
		ck      *storage.Checkpoint
		keyPath string
		want    string // "" accepted
		code    string
	}{
		{"encrypted, right key", encrypted, keyPath, "", ""},
		{"clear, handler with a key", clear, keyPath, "", ""},
		{"clear, handler without a key", clear, "", "", ""},
		{"encrypted, handler without a key", encrypted, "",
			"checkpoint " + encrypted.Name + " is encrypted with key " + key.ID + " and this handler has no encryption_key", events.ReasonWrongKey},
		{"encrypted, another key", encrypted, otherPath,
			"checkpoint " + encrypted.Name + " is encrypted with key " + key.ID + ", this handler's encryption_key is " + other.ID + " (" + otherPath + ")", events.ReasonWrongKey},
		{"key file readable by others", encrypted, loose, "encryption key " + loose + ": mode 0644 lets group or others at", events.ReasonKeyError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := options.Default()
			o.EncryptionKey = tt.keyPath
			got, err := checkEncryption(tt.ck, o)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if wantKey := tt.ck.Manifest.Encryption != nil; (got != nil) != wantKey || (got != nil && got.ID != key.ID) {
					t.Fatalf("key %v for a checkpoint with encryption %v", got, tt.ck.Manifest.Encryption)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("got %v\nwant %s", err, tt.want)
			}
			if code := events.CodeOf(err); code != tt.code {
				t.Errorf("reason code %q, want %q", code, tt.code)
			}
		})
	}
}

// encryptedContainer is a container planned to restore ck, decrypting
// into its own decrypt_dir.
func encryptedContainer(t *testing.T, ck *storage.Checkpoint, key *crypt.Key) *container {
	o := options.Default()
	o.DecryptDir = filepath.Join(t.TempDir(), "decrypted")
	c := &container{id: "enc-1", bundle: t.TempDir(), options: o}
	c.plan = &restorePlan{checkpoint: ck, key: key, plain: filepath.Join(o.DecryptDir, c.id), phases: map[string]float64{}}
	return c
}

func TestDecryptCheckpoint(t *testing.T) {
	_, key := writeEncryptionKey(t)
	s := openTestStore(t)
	ck := publishEncrypted(t, s, "encrypted", key)
	for name, data := range checkpointFiles {
		stored, err := os.ReadFile(filepath.Join(ck.Dir, name))
		if err != nil || bytes.Equal(stored, data) || (len(data) > 20 && bytes.Contains(stored, data[:20])) {
			t.Fatalf("%s is stored in the clear (%v)", name, err)
		}
	}
	if err := ck.Verify(context.Background(), nil); err != nil {
		t.Fatalf("the manifest does not describe the encrypted files: %v", err)
	}

	c := encryptedContainer(t, ck, key)
	if !strings.HasPrefix(c.plan.imagePath(), c.plan.plain) {
		t.Fatalf("runc restores from %s, not from the plaintext directory", c.plan.imagePath())
	}
	if err := decryptCheckpoint(context.Background(), c.bundle, c.plan); err != nil {
		t.Fatal(err)
	}
	for name, data := range checkpointFiles {
		got, err := os.ReadFile(filepath.Join(c.plan.filesDir(), name))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: %v, decrypted %d bytes, want %d", name, err, len(got), len(data))
		}
	}
	for _, dir := range []string{c.plan.plain, c.options.DecryptDir} {
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, want mode 0700", dir, fi)
		}
	}
	removePlaintext(context.Background(), c.id, c.bundle, c.plan)
	assertGone(t, c.plan.plain, filepath.Join(c.bundle, plaintextMarker))
}

// TestDecryptTampered: a chunk changed in the store fails the decrypt phase
// with its reason code, and removePlaintext leaves nothing. In a restore
// the verify phase's digests catch such a change first; decryption is the
// last line against a writer who also rewrote the digests of an unsigned
// manifest, which is what calling decryptCheckpoint directly stands for.
func TestDecryptTampered(t *testing.T) {
	_, key := writeEncryptionKey(t)
	s := openTestStore(t)
	ck := publishEncrypted(t, s, "encrypted", key)
	pages := filepath.Join(ck.Dir, "checkpoint", "pages-1.img")
	data, _ := os.ReadFile(pages)
	data[len(data)/2] ^= 0x80 // inside chunk 1 of 3
	os.WriteFile(pages, data, 0o600)

	c := encryptedContainer(t, ck, key)
	err := decryptCheckpoint(context.Background(), c.bundle, c.plan)
	if !errors.Is(err, crypt.ErrAuth) || !strings.Contains(err.Error(), "decrypting checkpoint/pages-1.img: chunk 1 of 3") {
		t.Fatalf("got %v, want chunk 1 of pages-1.img to fail authentication", err)
	}
	if code := events.CodeOf(err); code != events.ReasonDecryptFailed {
		t.Errorf("reason code %q, want %q", code, events.ReasonDecryptFailed)
	}
	removePlaintext(context.Background(), c.id, c.bundle, c.plan)
	assertGone(t, c.plan.plain, filepath.Join(c.bundle, plaintextMarker))
}

// TestRemovePlaintextOf: the out-of-process delete of a shim killed while
// decrypting finds the plaintext through the bundle's marker.
func TestRemovePlaintextOf(t *testing.T) {
	_, key := writeEncryptionKey(t)
	s := openTestStore(t)
	c := encryptedContainer(t, publishEncrypted(t, s, "encrypted", key), key)
	if err := decryptCheckpoint(context.Background(), c.bundle, c.plan); err != nil {
		t.Fatal(err)
	}
	removePlaintextOf(context.Background(), c.bundle)
	assertGone(t, c.plan.plain, filepath.Join(c.bundle, plaintextMarker))
	removePlaintextOf(context.Background(), c.bundle) // nothing to do
}

func TestDecryptDirMustBeRootOnly(t *testing.T) {
	_, key := writeEncryptionKey(t)
	s := openTestStore(t)
	c := encryptedContainer(t, publishEncrypted(t, s, "encrypted", key), key)
	os.MkdirAll(c.options.DecryptDir, 0o777)
	os.Chmod(c.options.DecryptDir, 0o777)
	err := decryptCheckpoint(context.Background(), c.bundle, c.plan)
	if !errors.Is(err, storage.ErrUntrusted) || !strings.Contains(err.Error(), "decrypt_dir") {
		t.Fatalf("got %v, want decrypt_dir refused as untrusted", err)
	}
	assertGone(t, c.plan.plain)
}

func assertGone(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s is left behind (%v)", p, err)
		}
	}
}
