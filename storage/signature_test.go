package storage

import (
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// keyPair writes a new key pair as `gpusnap keygen` does (private 0600,
// public 0644) and loads both.
func keyPair(t *testing.T, name string) (*SigningKey, *PublicKey, string) {
	t.Helper()
	priv, pub, id, err := GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyPath, pubPath := filepath.Join(dir, name+".key"), filepath.Join(dir, name+".pub")
	if err := os.WriteFile(keyPath, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubPath, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	key, err := LoadSigningKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	trusted, err := LoadTrustedKeys([]string{pubPath})
	if err != nil {
		t.Fatal(err)
	}
	if key.ID != id || trusted[0].ID != id || len(id) != 16 {
		t.Fatalf("key ids differ: generated %s, private %s, public %s", id, key.ID, trusted[0].ID)
	}
	return key, trusted[0], pubPath
}

// publishSigned publishes sampleFiles signed with key (nil: unsigned) and
// returns the checkpoint as a restoring node loads it from the store.
func publishSigned(t *testing.T, s *Store, label string, key *SigningKey) *Checkpoint {
	t.Helper()
	c, err := stageFiles(t, s, sampleFiles).PublishSigned(&Manifest{Key: testKey(label)}, key)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := s.Get(c.Name)
	if err != nil {
		t.Fatal(err)
	}
	return loaded
}

// verifyCached runs VerifyCached and reports whether it hashed the files.
func verifyCached(c *Checkpoint, cache string, p SignaturePolicy) (hashed bool, err error) {
	_, err = c.VerifyCached(context.Background(), cache, p, func(done, total int64) { hashed = true })
	return hashed, err
}

func TestSignRoundTrip(t *testing.T) {
	key, pub, _ := keyPair(t, "a")
	s := openStore(t)
	c := publishSigned(t, s, "web", key)

	manifest, _ := os.ReadFile(filepath.Join(c.Dir, manifestName))
	sig, err := os.ReadFile(filepath.Join(c.Dir, signatureName))
	if err != nil || !ed25519.Verify(pub.Key, manifest, sig) {
		t.Fatalf("manifest.sig is not an ed25519 signature of manifest.json's bytes: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(c.Dir, signatureName)); fi.Mode().Perm() != fileMode {
		t.Errorf("manifest.sig mode %v, want %v", fi.Mode().Perm(), os.FileMode(fileMode))
	}
	by, err := c.VerifySignature([]*PublicKey{pub})
	if err != nil || by.ID != pub.ID {
		t.Fatalf("VerifySignature = %v, %v; want key %s", by, err, pub.ID)
	}
	if err := c.Verify(context.Background(), nil); err != nil {
		t.Fatalf("full verify of a signed checkpoint: %v", err)
	}
	policy := SignaturePolicy{TrustedKeys: []*PublicKey{pub}, Require: true}
	if hashed, err := verifyCached(c, t.TempDir(), policy); err != nil || !hashed {
		t.Fatalf("first restore: hashed=%v err=%v, want a full verify that passes", hashed, err)
	}
	if _, err := c.Signature(); err != nil {
		t.Fatal(err)
	}
}

func TestSignatureRefusals(t *testing.T) {
	keyA, pubA, _ := keyPair(t, "a")
	_, pubB, _ := keyPair(t, "b")
	trustA := SignaturePolicy{TrustedKeys: []*PublicKey{pubA}}
	trustB := SignaturePolicy{TrustedKeys: []*PublicKey{pubB}}
	requireA := SignaturePolicy{TrustedKeys: []*PublicKey{pubA}, Require: true}

	tests := []struct {
		name     string
		key      *SigningKey
		tamper   func(t *testing.T, dir string)
		policy   SignaturePolicy
		want     error  // nil: accepted
		contains string // in the error
	}{
		{name: "signed, trusted", key: keyA, policy: requireA},
		{name: "signed, no keys configured: not checked", key: keyA, policy: SignaturePolicy{}},
		{name: "unsigned, not required", policy: trustA},
		{name: "unsigned, required", policy: requireA, want: ErrUnsigned, contains: "is not signed"},
		{name: "signed with another key", key: keyA, policy: trustB, want: ErrBadSignature,
			contains: "does not verify with any trusted key (" + pubB.ID + ")"},
		{name: "tampered manifest", key: keyA, policy: trustA, want: ErrBadSignature, contains: pubA.ID,
			tamper: func(t *testing.T, dir string) {
				p := filepath.Join(dir, manifestName)
				data, _ := os.ReadFile(p)
				// Same identity, different source: still a valid manifest.
				forged := strings.Replace(string(data), `"container_id": ""`, `"container_id": "evil"`, 1)
				if forged == string(data) {
					t.Fatalf("nothing to forge in %s", data)
				}
				if err := os.WriteFile(p, []byte(forged), 0o600); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "tampered pages image is caught by its digest", key: keyA, policy: requireA, want: ErrCorrupt,
			contains: "checkpoint/pages-1.img: sha256", tamper: func(t *testing.T, dir string) {
				if err := writeAt(filepath.Join(dir, "checkpoint", "pages-1.img"), 100, "X"); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "signature of the wrong size", key: keyA, policy: trustA, want: ErrBadSignature,
			contains: "manifest.sig holds 100 bytes, an ed25519 signature is 64",
			tamper: func(t *testing.T, dir string) {
				os.WriteFile(filepath.Join(dir, signatureName), make([]byte, 100), 0o600)
			}},
		{name: "huge signature", key: keyA, policy: trustA, want: ErrBadSignature, contains: "holds 67108864 bytes",
			tamper: func(t *testing.T, dir string) {
				if err := os.Truncate(filepath.Join(dir, signatureName), 64<<20); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "malformed signature under no policy is ignored", key: keyA, policy: SignaturePolicy{},
			tamper: func(t *testing.T, dir string) {
				os.WriteFile(filepath.Join(dir, signatureName), []byte("junk"), 0o600)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			c := publishSigned(t, s, "web", tt.key)
			cache := t.TempDir()
			if tt.tamper != nil {
				tt.tamper(t, c.Dir)
				if c, _ = s.Get(c.Name); c == nil {
					t.Fatal("tampered checkpoint no longer loads")
				}
			}
			_, err := verifyCached(c, cache, tt.policy)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.contains) || !strings.Contains(err.Error(), c.Name) {
				t.Fatalf("got %v, want %v naming %s and containing %q", err, tt.want, c.Name, tt.contains)
			}
			if entries, _ := os.ReadDir(cache); len(entries) != 0 {
				t.Fatalf("a refused checkpoint left a remembered result: %v", entries)
			}
		})
	}
}

// TestSignatureCheckedBeforeHashing: a checkpoint signed by another key is
// refused without reading its images.
func TestSignatureCheckedBeforeHashing(t *testing.T) {
	keyA, _, _ := keyPair(t, "a")
	_, pubB, _ := keyPair(t, "b")
	c := publishSigned(t, openStore(t), "web", keyA)
	hashed, err := verifyCached(c, t.TempDir(), SignaturePolicy{TrustedKeys: []*PublicKey{pubB}})
	if !errors.Is(err, ErrBadSignature) || hashed {
		t.Fatalf("hashed=%v err=%v, want ErrBadSignature before any hashing", hashed, err)
	}
}

// TestVerifyCacheFollowsTrustedKeys: a remembered result holds only under
// the trusted keys it was made under; a cache hit still needs a good
// signature.
func TestVerifyCacheFollowsTrustedKeys(t *testing.T) {
	keyA, pubA, _ := keyPair(t, "a")
	_, pubB, _ := keyPair(t, "b")
	c := publishSigned(t, openStore(t), "web", keyA)
	cache := t.TempDir()
	steps := []struct {
		policy     SignaturePolicy
		wantHashed bool
	}{
		{SignaturePolicy{TrustedKeys: []*PublicKey{pubA}}, true},
		{SignaturePolicy{TrustedKeys: []*PublicKey{pubA}}, false},
		{SignaturePolicy{TrustedKeys: []*PublicKey{pubA, pubB}}, true},  // key added
		{SignaturePolicy{TrustedKeys: []*PublicKey{pubB, pubA}}, false}, // order does not matter
		{SignaturePolicy{TrustedKeys: []*PublicKey{pubA, pubB}, Require: true}, true},
		{SignaturePolicy{TrustedKeys: []*PublicKey{pubA}}, false}, // back to a remembered set
	}
	for i, step := range steps {
		hashed, err := verifyCached(c, cache, step.policy)
		if err != nil || hashed != step.wantHashed {
			t.Fatalf("step %d: hashed=%v err=%v, want hashed=%v", i, hashed, err, step.wantHashed)
		}
	}
	// Removing the signing key from the trusted set refuses the checkpoint
	// even though its digests were remembered.
	if _, err := verifyCached(c, cache, SignaturePolicy{TrustedKeys: []*PublicKey{pubB}}); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("after revoking key a: %v, want ErrBadSignature", err)
	}
}

// TestRememberVerifiedSigned: the writer's remembered result serves its
// node's restores under the same policy.
func TestRememberVerifiedSigned(t *testing.T) {
	key, pub, _ := keyPair(t, "a")
	s := openStore(t)
	st := stageFiles(t, s, sampleFiles)
	written, err := st.PublishSigned(&Manifest{Key: testKey("web")}, key)
	if err != nil {
		t.Fatal(err)
	}
	policy := SignaturePolicy{TrustedKeys: []*PublicKey{pub}, Require: true}
	cache := t.TempDir()
	if err := written.RememberVerified(cache, policy); err != nil {
		t.Fatal(err)
	}
	c, _ := s.Get(written.Name)
	if hashed, err := verifyCached(c, cache, policy); err != nil || hashed {
		t.Fatalf("restore after the writer remembered it: hashed=%v err=%v", hashed, err)
	}
}

// TestManifestSwapAfterLoad: the signature is checked over the bytes the
// manifest was decoded from, so replacing manifest.json after the load (with
// a manifest signed by nobody) changes nothing the restore relies on.
func TestManifestSwapAfterLoad(t *testing.T) {
	key, pub, _ := keyPair(t, "a")
	c := publishSigned(t, openStore(t), "web", key)
	os.WriteFile(filepath.Join(c.Dir, manifestName), []byte(`{"schema": 1}`), 0o600)
	if _, err := c.VerifySignature([]*PublicKey{pub}); err != nil {
		t.Fatalf("signature over the loaded bytes: %v", err)
	}
}

func TestPublishUnsignedDropsStaleSignature(t *testing.T) {
	s := openStore(t)
	files := map[string]string{"spec.dump": "{}", signatureName: strings.Repeat("s", 64)}
	c, err := stageFiles(t, s, files).Publish(&Manifest{Key: testKey("web")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Signature(); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("unsigned publish kept the writer's manifest.sig: %v", err)
	}
	for _, f := range c.Manifest.Files {
		if f.Path == signatureName {
			t.Fatalf("manifest lists %s", signatureName)
		}
	}
}

func TestLoadKeysRefuses(t *testing.T) {
	priv, pub, _, err := GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		data     []byte
		mode     os.FileMode
		uid      int
		private  bool
		contains string
	}{
		{"private key readable by others", priv, 0o644, 0, true, "mode 0644"},
		{"private key readable by group", priv, 0o640, 0, true, "mode 0640"},
		{"private key of another user", priv, 0o600, 65534, true, "owned by uid 65534"},
		{"public key instead of private", pub, 0o600, 0, true, `PEM block "PUBLIC KEY", want a PKCS#8 "PRIVATE KEY" block`},
		{"not PEM", []byte("ssh-ed25519 AAAA"), 0o600, 0, true, "no PEM block"},
		{"huge key file", make([]byte, 1<<20), 0o600, 0, true, "not a key"},
		{"trusted key writable by group", pub, 0o664, 0, false, "mode 0664"},
		{"trusted key of another user", pub, 0o644, 65534, false, "owned by uid 65534"},
		{"private key as trusted key", priv, 0o600, 0, false, `want a PKIX "PUBLIC KEY" block`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeKeyFile(t, "k", tt.data, tt.mode, tt.uid)
			if tt.private {
				_, err = LoadSigningKey(p)
			} else {
				_, err = LoadTrustedKeys([]string{p})
			}
			if err == nil || !strings.Contains(err.Error(), tt.contains) || !strings.Contains(err.Error(), p) {
				t.Fatalf("got %v, want an error naming %s and containing %q", err, p, tt.contains)
			}
		})
	}
}

func TestSignatureSurvivesCacheMtime(t *testing.T) {
	// A signature file touched (same bytes, new mtime) does not matter: the
	// cache is keyed by the signature's bytes, not its stamp.
	key, pub, _ := keyPair(t, "a")
	c := publishSigned(t, openStore(t), "web", key)
	cache := t.TempDir()
	policy := SignaturePolicy{TrustedKeys: []*PublicKey{pub}}
	verifyCached(c, cache, policy)
	later := time.Now().Add(time.Hour)
	os.Chtimes(filepath.Join(c.Dir, signatureName), later, later)
	if hashed, err := verifyCached(c, cache, policy); err != nil || hashed {
		t.Fatalf("hashed=%v err=%v after touching manifest.sig", hashed, err)
	}
}

// writeKeyFile writes a key file with the given mode and, unless uid is 0,
// owner (the test skips where it cannot chown).
func writeKeyFile(t *testing.T, name string, data []byte, mode os.FileMode, uid int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	if uid != 0 {
		if err := os.Chown(p, uid, uid); err != nil {
			t.Skip("cannot chown:", err)
		}
	}
	return p
}
