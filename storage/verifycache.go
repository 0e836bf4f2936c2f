package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// DefaultVerifiedDir is where a node remembers which checkpoints were
// fully verified (the shim's restores, and `gpusnap prefetch` for the copies
// it makes): node-local and root's alone.
const DefaultVerifiedDir = "/var/lib/containerd-shim-snapshot/verified"

// VerifyCached verifies a checkpoint once per node and remembers the result,
// so that hashing every byte stays off the hot path of later restores.
//
// The remembered result is keyed by the checkpoint's directory and the
// digest of its manifest, and holds each file's identity on disk (device,
// inode, size, mtime in nanoseconds). A later call trusts the checkpoint only
// if every file still has the same identity: a write, truncation or
// replacement changes one of them and sends the call back to a full Verify.
// ctime is left out on purpose: the writer hard-links CRIU's images from the
// directory containerd gave the Checkpoint RPC, and containerd's removal of
// that directory changes the link count, hence the ctime, of every image. A
// rewrite that also resets the mtime goes unnoticed; only root can write a
// store's files (0600 in 0700 directories) and root could as well rewrite
// this cache, which is why cacheDir is node-local and root-only.
//
// The signature is checked against policy on every call, before anything
// else is read: ed25519 over a manifest of a few kilobytes costs
// microseconds, and a badly signed or (when required) unsigned checkpoint
// is refused without hashing its images. The error then wraps ErrUnsigned or
// ErrBadSignature and names the checkpoint and the trusted keys. The entry
// is also keyed by the signature and the policy (trusted keys, require), so
// a remembered digest check never outlives the trust it was made under: a
// new signature, an added or a removed key sends the next call back to a
// full Verify.
func (c *Checkpoint) VerifyCached(ctx context.Context, cacheDir string, policy SignaturePolicy, progress func(done, total int64)) (cached bool, err error) {
	if c.Manifest == nil {
		return false, c.Verify(ctx, progress)
	}
	if problems := c.untrusted(); len(problems) > 0 {
		return false, fmt.Errorf("verify %s: %w", c.Name, errors.Join(problems...))
	}
	sig, err := c.checkSignature(policy)
	if err != nil {
		return false, err
	}
	entry, err := c.cacheEntry(cacheDir, sig, policy)
	if err != nil {
		return false, err
	}
	want, err := c.fileStamps()
	if err == nil {
		if got, err := os.ReadFile(entry); err == nil && string(got) == string(want) {
			return true, nil
		}
	}
	if err := c.Verify(ctx, progress); err != nil {
		if ctx.Err() == nil {
			os.Remove(entry)
		}
		return false, err
	}
	return false, c.remember(entry)
}

// RememberVerified records a checkpoint as verified without hashing it
// again, under policy (the writer's handler's, which its restores on this
// node use too). Only its writer may call it, right after Publish: Publish
// computed the digests from these very files. The signature is not trusted
// from memory: VerifyCached checks it on every call.
func (c *Checkpoint) RememberVerified(cacheDir string, policy SignaturePolicy) error {
	if c.Manifest == nil {
		return fmt.Errorf("remember %s as verified: %w", c.Name, ErrManifest)
	}
	var sig []byte
	if policy.checks() {
		var err error
		if sig, err = c.Signature(); err != nil && !errors.Is(err, ErrUnsigned) {
			return err
		}
	}
	entry, err := c.cacheEntry(cacheDir, sig, policy)
	if err != nil {
		return err
	}
	return c.remember(entry)
}

// remember writes the files' stamps as the entry, atomically.
func (c *Checkpoint) remember(entry string) error {
	cacheDir := filepath.Dir(entry)
	stamps, err := c.fileStamps()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return err
	}
	tmp := entry + ".tmp"
	if err := os.WriteFile(tmp, stamps, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, entry)
}

// cacheEntry names the remembered result for this directory, manifest and,
// when policy checks signatures, signature and policy. Under the zero policy
// the name is what it was before signatures, so existing entries stay good.
func (c *Checkpoint) cacheEntry(cacheDir string, sig []byte, policy SignaturePolicy) (string, error) {
	manifest, err := c.manifestBytes()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write([]byte(c.Dir))
	h.Write([]byte{0})
	h.Write(manifest)
	if policy.checks() {
		h.Write([]byte{0})
		h.Write([]byte(hex.EncodeToString(sig))) // "" when unsigned
		h.Write([]byte{0})
		h.Write(policy.cacheKey())
	}
	return filepath.Join(cacheDir, hex.EncodeToString(h.Sum(nil))+".verified"), nil
}

// stamp is what a file looks like on disk, without reading its content.
type stamp struct {
	Path       string
	Ino, Size  uint64
	Mtime, Dev int64
	Mode, UID  uint32
}

func (c *Checkpoint) fileStamps() ([]byte, error) {
	stamps := make([]stamp, 0, len(c.Manifest.Files)+1)
	for _, name := range append([]string{manifestName}, c.filePaths()...) {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(c.Dir, filepath.FromSlash(name)), &st); err != nil {
			return nil, fmt.Errorf("stat %s: %w", name, err)
		}
		stamps = append(stamps, stamp{Path: name, Ino: st.Ino, Size: uint64(st.Size), Dev: int64(st.Dev),
			Mtime: st.Mtim.Nano(), Mode: st.Mode, UID: st.Uid})
	}
	return json.Marshal(stamps)
}

func (c *Checkpoint) filePaths() []string {
	paths := make([]string, len(c.Manifest.Files))
	for i, f := range c.Manifest.Files {
		paths[i] = f.Path
	}
	return paths
}
