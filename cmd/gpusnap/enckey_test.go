package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/crypt"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

func TestEnckey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "handler.enc")
	out, _ := mustRun(t, exitOK, "enckey", path)
	key, err := storage.LoadEncryptionKey(path)
	if err != nil {
		t.Fatalf("the key enckey wrote does not load: %v", err)
	}
	contains(t, "enckey", out, "key id "+key.ID, path, "encryption_key")
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v (%v), want 0600", path, fi.Mode().Perm(), err)
	}

	before, _ := os.ReadFile(path)
	_, errOut := mustRun(t, exitFail, "enckey", path)
	contains(t, "stderr", errOut, path+" exists; enckey never overwrites a key")
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("enckey overwrote a key")
	}

	out, _ = mustRun(t, exitOK, "enckey", "--json", path+"2")
	if got := decode[enckeyOutput](t, out); len(got.KeyID) != 16 || got.Key != path+"2" || got.KeyID == key.ID {
		t.Errorf("enckey --json = %+v", got)
	}
	mustRun(t, exitUsage, "enckey")
	mustRun(t, exitUsage, "enckey", "a", "b")
}

// TestInspectEncryption: inspect says whether a checkpoint is encrypted and
// with which key, and whether the handler's key is that key.
func TestInspectEncryption(t *testing.T) {
	ts := newTestStore(t)
	s, err := storage.Open(ts.root)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyPath, otherPath := filepath.Join(dir, "a.enc"), filepath.Join(dir, "b.enc")
	mustRun(t, exitOK, "enckey", keyPath)
	mustRun(t, exitOK, "enckey", otherPath)
	key, _ := storage.LoadEncryptionKey(keyPath)
	other, _ := storage.LoadEncryptionKey(otherPath)
	enc := publishWith(t, s, "enc", time.Now(), 1, func(m *storage.Manifest) {
		m.Encryption = &storage.Encryption{Algorithm: crypt.Algorithm, KeyID: key.ID}
	})

	out, _ := mustRun(t, exitOK, "--store", ts.root, "inspect", ts.web2)
	contains(t, "inspect of a clear checkpoint", out, "Encryption:  none (stored in the clear)")
	out, _ = mustRun(t, exitOK, "--store", ts.root, "inspect", enc.Name)
	contains(t, "inspect", out, "Encryption:  aes-256-gcm-chunked, key "+key.ID,
		"Processes:   not read: the CRIU images are encrypted (aes-256-gcm-chunked)")

	handler := func(extra string) string {
		p := filepath.Join(t.TempDir(), "h.toml")
		write(t, p, "store = \""+ts.root+"\"\n"+extra)
		return p
	}
	for extra, want := range map[string]string{
		"":                                       "; the handler has no encryption_key",
		"encryption_key = \"" + keyPath + "\"":   "; the handler's encryption_key opens it",
		"encryption_key = \"" + otherPath + "\"": "; the handler's encryption_key is " + other.ID + ", another key",
	} {
		out, _ = mustRun(t, exitOK, "--handler-config", handler(extra), "inspect", enc.Name)
		contains(t, "inspect with "+extra, out, "key "+key.ID+want)
	}
	out, _ = mustRun(t, exitOK, "--store", ts.root, "--json", "inspect", enc.Name)
	if got := decode[inspectOutput](t, out); got.Manifest.Encryption == nil || got.Manifest.Encryption.KeyID != key.ID ||
		!strings.Contains(got.Encryption, key.ID) || got.Images != nil || !strings.Contains(got.ImagesNote, "encrypted") {
		t.Errorf("inspect --json: encryption %+v, %q; images %+v, %q", got.Manifest.Encryption, got.Encryption, got.Images, got.ImagesNote)
	}
}
