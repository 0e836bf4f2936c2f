package storage

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// Signatures let a node tell a checkpoint made by its own handlers from one
// planted by someone who can write the store but does not hold the signing
// key (root on the NFS server or on another node mounting it). manifest.json
// already lists the size and SHA-256 of every file, so one detached ed25519
// signature over its exact bytes covers the whole checkpoint; Verify's
// digests then cover every byte a restore reads.
//
// The signature is manifest.sig, the 64 raw bytes ed25519 produces, beside
// manifest.json; Publish writes it before the rename, so a checkpoint never
// becomes visible unsigned or half signed. `openssl pkeyutl -verify -pubin
// -inkey KEY.pub -rawin -in manifest.json -sigfile manifest.sig` checks one
// without this project's tools.

const (
	signatureName = "manifest.sig"
	// maxKeyFile bounds what a key loader reads: a PEM ed25519 key is about
	// 120 bytes, so anything near this is not a key.
	maxKeyFile = 16 << 10
)

var (
	// ErrUnsigned means a checkpoint has no manifest.sig.
	ErrUnsigned = errors.New("not signed")
	// ErrBadSignature means manifest.sig is malformed or verifies with
	// none of the trusted keys: the checkpoint was changed after it was
	// signed, or was signed by a key this node does not trust.
	ErrBadSignature = errors.New("bad signature")
)

// signatureError carries a whole plain-words message while still matching
// ErrUnsigned or ErrBadSignature with errors.Is.
type signatureError struct {
	msg  string
	kind error
}

func (e *signatureError) Error() string { return e.msg }
func (e *signatureError) Unwrap() error { return e.kind }

// KeyID names a public key in messages, events and `gpusnap keygen`'s
// output: the first 8 bytes, in hex, of the SHA-256 of the raw 32-byte key.
// It is short enough to read and compare by eye, and says nothing secret.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// PublicKey is a key a node trusts to sign checkpoints.
type PublicKey struct {
	Key  ed25519.PublicKey
	ID   string
	Path string // the file it came from, for messages
}

// SigningKey is the private key a handler signs its checkpoints with. It
// lives only where checkpoints are made.
type SigningKey struct {
	key  ed25519.PrivateKey
	ID   string // KeyID of its public half
	Path string
}

// GenerateKeyPair makes a new signing key: the private key PEM-encoded as
// PKCS#8 ("PRIVATE KEY"), the public key as PKIX ("PUBLIC KEY"), the formats
// openssl reads and writes for ed25519, and the public key's id.
func GenerateKeyPair() (private, public []byte, id string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, "", err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, "", err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), KeyID(pub), nil
}

// LoadSigningKey reads a PKCS#8 ed25519 private key. Like ssh, it refuses a
// key file that group or others may read or that is owned by someone else
// than root (or the user running the command: the shim is root): a key
// others can read signs checkpoints for them.
func LoadSigningKey(path string) (*SigningKey, error) {
	data, err := readKeyFile(path, true)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	block, err := pemBlock(data, "PRIVATE KEY", "PKCS#8")
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	key, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: a %T, want an ed25519 key", path, parsed)
	}
	return &SigningKey{key: key, ID: KeyID(key.Public().(ed25519.PublicKey)), Path: path}, nil
}

// LoadTrustedKeys reads PKIX ed25519 public keys. A trusted key file must be
// owned by root (or the user running the command) and writable by no one
// else: whoever can replace it can sign checkpoints this node restores.
func LoadTrustedKeys(paths []string) ([]*PublicKey, error) {
	keys := make([]*PublicKey, 0, len(paths))
	for _, p := range paths {
		k, err := loadPublicKey(p)
		if err != nil {
			return nil, fmt.Errorf("trusted key %s: %w", p, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func loadPublicKey(path string) (*PublicKey, error) {
	data, err := readKeyFile(path, false)
	if err != nil {
		return nil, err
	}
	block, err := pemBlock(data, "PUBLIC KEY", "PKIX")
	if err != nil {
		return nil, err
	}
	parsed, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	pub, ok := parsed.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("a %T, want an ed25519 key", parsed)
	}
	return &PublicKey{Key: pub, ID: KeyID(pub), Path: path}, nil
}

// readKeyFile reads at most maxKeyFile bytes of a key file after checking,
// on the open file itself, who owns it and who else may read or write it.
func readKeyFile(path string, private bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("is a %s, not a key file", describe(fi.Mode()))
	}
	st := fi.Sys().(*syscall.Stat_t)
	perm := st.Mode & 0o7777
	switch {
	case st.Uid != 0 && int(st.Uid) != os.Geteuid():
		return nil, fmt.Errorf("is owned by uid %d, not root", st.Uid)
	case private && perm&0o077 != 0:
		return nil, fmt.Errorf("mode %04o lets group or others at the private key; it must be 0600 or 0400, as ssh requires (chmod 600 %s)", perm, path)
	case !private && perm&0o022 != 0:
		return nil, fmt.Errorf("is writable by group or others (mode %04o): whoever can replace a trusted key can sign checkpoints", perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("larger than %d bytes, not a key", maxKeyFile)
	}
	return data, nil
}

// pemBlock decodes the one PEM block of a key file.
func pemBlock(data []byte, typ, format string) (*pem.Block, error) {
	block, _ := pem.Decode(data)
	switch {
	case block == nil:
		return nil, fmt.Errorf("no PEM block; want a %s %q block (gpusnap keygen writes one)", format, typ)
	case block.Type != typ:
		return nil, fmt.Errorf("PEM block %q, want a %s %q block", block.Type, format, typ)
	}
	return block, nil
}

// SignaturePolicy is what a node demands of a checkpoint's signature. The
// zero policy checks nothing, as before signatures existed.
type SignaturePolicy struct {
	// TrustedKeys are the keys a signature may verify with. When set, a
	// signed checkpoint must verify with one of them: a bad signature is
	// refused whether or not signatures are required.
	TrustedKeys []*PublicKey
	// Require refuses unsigned checkpoints.
	Require bool
}

func (p SignaturePolicy) checks() bool { return p.Require || len(p.TrustedKeys) > 0 }

// cacheKey is the policy as the verify cache keys its entries by: the
// trusted keys (sorted, so their order in the options does not matter) and
// whether unsigned checkpoints pass.
func (p SignaturePolicy) cacheKey() []byte {
	ids := make([]string, len(p.TrustedKeys))
	for i, k := range p.TrustedKeys {
		ids[i] = hex.EncodeToString(k.Key)
	}
	slices.Sort(ids)
	return fmt.Appendf(nil, "require=%t;keys=%s", p.Require, strings.Join(ids, ","))
}

// Signature reads the checkpoint's manifest.sig. Without one the error
// wraps ErrUnsigned; a file that is not exactly one ed25519 signature (a
// symlink, the wrong size, a huge file) wraps ErrBadSignature, read no
// further than its size.
func (c *Checkpoint) Signature() ([]byte, error) {
	p := filepath.Join(c.Dir, signatureName)
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &signatureError{fmt.Sprintf("checkpoint %s is not signed", c.Name), ErrUnsigned}
	}
	malformed := func(why string) error {
		return &signatureError{fmt.Sprintf("signature of checkpoint %s is malformed: %s %s", c.Name, signatureName, why), ErrBadSignature}
	}
	if err != nil {
		return nil, malformed(fmt.Sprintf("can't be read: %v", err))
	}
	defer f.Close()
	fi, err := f.Stat()
	switch {
	case err != nil:
		return nil, malformed(fmt.Sprintf("can't be read: %v", err))
	case !fi.Mode().IsRegular():
		return nil, malformed("is a " + describe(fi.Mode()))
	case fi.Size() != ed25519.SignatureSize:
		return nil, malformed(fmt.Sprintf("holds %d bytes, an ed25519 signature is %d", fi.Size(), ed25519.SignatureSize))
	}
	sig := make([]byte, ed25519.SignatureSize)
	if _, err := io.ReadFull(f, sig); err != nil {
		return nil, malformed(fmt.Sprintf("can't be read: %v", err))
	}
	return sig, nil
}

// VerifySignature checks the checkpoint's signature over the manifest bytes
// it was loaded from and returns the trusted key that verifies it.
func (c *Checkpoint) VerifySignature(keys []*PublicKey) (*PublicKey, error) {
	_, k, err := c.verifySignature(keys)
	return k, err
}

func (c *Checkpoint) verifySignature(keys []*PublicKey) ([]byte, *PublicKey, error) {
	sig, err := c.Signature()
	if err != nil {
		return nil, nil, err
	}
	manifest, err := c.manifestBytes()
	if err != nil {
		return nil, nil, err
	}
	for _, k := range keys {
		if ed25519.Verify(k.Key, manifest, sig) {
			return sig, k, nil
		}
	}
	return nil, nil, &signatureError{fmt.Sprintf("signature of checkpoint %s does not verify with any trusted key (%s)",
		c.Name, keyIDs(keys)), ErrBadSignature}
}

// checkSignature applies p to the checkpoint and returns the signature it
// accepted (nil for none), which the verify cache keys its entry by.
func (c *Checkpoint) checkSignature(p SignaturePolicy) ([]byte, error) {
	if !p.checks() {
		return nil, nil
	}
	sig, _, err := c.verifySignature(p.TrustedKeys)
	if errors.Is(err, ErrUnsigned) && !p.Require {
		return nil, nil
	}
	return sig, err
}

// manifestBytes is manifest.json as the Manifest was decoded from it; a
// Checkpoint not loaded by this package reads the file.
func (c *Checkpoint) manifestBytes() ([]byte, error) {
	if c.raw != nil {
		return c.raw, nil
	}
	return os.ReadFile(filepath.Join(c.Dir, manifestName))
}

func keyIDs(keys []*PublicKey) string {
	if len(keys) == 0 {
		return "none configured"
	}
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	return strings.Join(ids, ", ")
}

// writeSignature signs the manifest bytes Publish wrote and flushes the
// signature; without a key it removes any manifest.sig the writer left, so
// an unsigned checkpoint never carries a stale signature.
func writeSignature(dir string, key *SigningKey, manifest []byte) error {
	p := filepath.Join(dir, signatureName)
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if key == nil {
		return nil
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return err
	}
	_, err = f.Write(ed25519.Sign(key.key, manifest))
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}
