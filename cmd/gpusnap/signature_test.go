package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/criuimage/criuimagetest"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

func TestKeygen(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "handler")
	out, _ := mustRun(t, exitOK, "keygen", prefix)
	key, err := storage.LoadSigningKey(prefix + ".key")
	if err != nil {
		t.Fatalf("the private key keygen wrote does not load: %v", err)
	}
	pub, err := storage.LoadTrustedKeys([]string{prefix + ".pub"})
	if err != nil {
		t.Fatalf("the public key keygen wrote does not load: %v", err)
	}
	if pub[0].ID != key.ID {
		t.Fatalf("public key %s is not the private key's %s", pub[0].ID, key.ID)
	}
	contains(t, "keygen", out, "key id "+key.ID, prefix+".key", prefix+".pub", "signing_key", "trusted_keys")
	for path, want := range map[string]os.FileMode{prefix + ".key": 0o600, prefix + ".pub": 0o644} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", path, fi.Mode().Perm(), err, want)
		}
	}

	// Never overwrites, not even half of a pair.
	before, _ := os.ReadFile(prefix + ".key")
	_, errOut := mustRun(t, exitFail, "keygen", prefix)
	contains(t, "stderr", errOut, prefix+".key exists; keygen never overwrites a key")
	if after, _ := os.ReadFile(prefix + ".key"); string(after) != string(before) {
		t.Fatal("keygen overwrote the private key")
	}
	other := filepath.Join(filepath.Dir(prefix), "other")
	write(t, other+".pub", "mine")
	_, errOut = mustRun(t, exitFail, "keygen", other)
	contains(t, "stderr", errOut, other+".pub exists")
	if _, err := os.Stat(other + ".key"); err == nil {
		t.Error("keygen wrote a private key next to a public key it refused to overwrite")
	}

	out, _ = mustRun(t, exitOK, "keygen", "--json", filepath.Join(filepath.Dir(prefix), "j"))
	got := decode[keygenOutput](t, out)
	if len(got.KeyID) != 16 || !strings.HasSuffix(got.PrivateKey, "j.key") || !strings.HasSuffix(got.PublicKey, "j.pub") {
		t.Errorf("keygen --json = %+v", got)
	}
	mustRun(t, exitUsage, "keygen")
	mustRun(t, exitUsage, "keygen", "a", "b")
}

// keygen makes a key pair with the CLI and returns its paths and id.
func keygen(t *testing.T, name string) (keyPath, pubPath, id string) {
	t.Helper()
	prefix := filepath.Join(t.TempDir(), name)
	out, _ := mustRun(t, exitOK, "--json", "keygen", prefix)
	return prefix + ".key", prefix + ".pub", decode[keygenOutput](t, out).KeyID
}

// publishSignedTo publishes a small checkpoint signed with the key at
// keyPath, the way the shim does.
func publishSignedTo(t *testing.T, s *storage.Store, label, keyPath string) string {
	t.Helper()
	key, err := storage.LoadSigningKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.Stage()
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(st.Dir(), "spec.dump"), "{}")
	writeImages(t, st.Dir(), criuimagetest.Process{PID: 1, Comm: label, Pages: 1, PagesID: 1})
	c, err := st.PublishSigned(&storage.Manifest{Key: testKey(label), Node: thisNode, Created: time.Now()}, key)
	if err != nil {
		t.Fatal(err)
	}
	return c.Name
}

func TestVerifyAndInspectSignatures(t *testing.T) {
	ts := newTestStore(t) // web1, web2, db: unsigned
	s, _ := storage.Open(ts.root)
	keyA, pubA, idA := keygen(t, "a")
	_, pubB, idB := keygen(t, "b")
	signed := publishSignedTo(t, s, "signed", keyA)

	out, _ := mustRun(t, exitOK, "--store", ts.root, "verify", signed, ts.db, "--trusted-key", pubA)
	contains(t, "verify", out, "OK    "+signed, "signed by key "+idA+" ("+pubA+")", "OK    "+ts.db, "; unsigned)")

	out, errOut := mustRun(t, exitFail, "--store", ts.root, "verify", signed, "--trusted-key", pubB)
	contains(t, "verify with another key", out, "FAIL  "+signed+": signature of checkpoint "+signed+" does not verify with any trusted key ("+idB+")")
	contains(t, "stderr", errOut, "1 of 1 checkpoints failed")

	_, errOut = mustRun(t, exitFail, "--store", ts.root, "verify", "--all", "--trusted-key", pubA+".missing")
	contains(t, "stderr", errOut, "trusted key "+pubA+".missing")

	// Any of several keys will do; unsigned checkpoints pass unless required.
	out, _ = mustRun(t, exitOK, "--store", ts.root, "--json", "verify", "--all", "--trusted-key", pubB, "--trusted-key", pubA)
	results := decode[[]verifyResult](t, out)
	if len(results) != 4 {
		t.Fatalf("verify --all --json: %+v", results)
	}
	for _, r := range results {
		state, keyID := "unsigned", ""
		if r.Name == signed {
			state, keyID = "signed", idA
		}
		if !r.OK || r.Signature == nil || r.Signature.State != state || r.Signature.KeyID != keyID {
			t.Errorf("%s: %+v, signature %+v, want %s %s", r.Name, r, r.Signature, state, keyID)
		}
	}

	// Under a handler that requires signatures, unsigned checkpoints fail.
	cfg := filepath.Join(t.TempDir(), "snapshot.toml")
	write(t, cfg, "store = \""+ts.root+"\"\ntrusted_keys = [\""+pubA+"\"]\nrequire_signature = true\n")
	out, errOut = mustRun(t, exitFail, "--handler-config", cfg, "verify", "--all")
	contains(t, "verify under the handler", out, "OK    "+signed, "FAIL  "+ts.db+": checkpoint "+ts.db+" is not signed and signatures are required")
	contains(t, "stderr", errOut, "3 of 4 checkpoints failed")

	// A tampered manifest breaks the signature.
	manifest := filepath.Join(ts.root, signed, "manifest.json")
	data, _ := os.ReadFile(manifest)
	write(t, manifest, strings.Replace(string(data), `"hostname": ""`, `"hostname": "forged"`, 1))
	out, _ = mustRun(t, exitFail, "--store", ts.root, "verify", signed, "--trusted-key", pubA)
	contains(t, "tampered manifest", out, "FAIL  "+signed+": signature of checkpoint "+signed+" does not verify with any trusted key ("+idA+")")
	write(t, manifest, string(data))

	out, _ = mustRun(t, exitOK, "--store", ts.root, "inspect", signed, "--trusted-key", pubA)
	contains(t, "inspect", out, "Signature:   signed by key "+idA)
	out, _ = mustRun(t, exitOK, "--store", ts.root, "inspect", signed)
	contains(t, "inspect without keys", out, "Signature:   signed, not checked (no --trusted-key)")
	out, _ = mustRun(t, exitOK, "--store", ts.root, "inspect", signed, "--trusted-key", pubB)
	contains(t, "inspect, other key", out, "Signature:   BAD: signature of checkpoint "+signed+" does not verify with any trusted key ("+idB+")")
	out, _ = mustRun(t, exitOK, "--store", ts.root, "--json", "inspect", ts.db, "--trusted-key", pubA)
	if got := decode[inspectOutput](t, out).Signature; got.State != "unsigned" || got.Refused {
		t.Errorf("inspect --json of an unsigned checkpoint: %+v", got)
	}
	out, _ = mustRun(t, exitOK, "--handler-config", cfg, "--json", "inspect", ts.db)
	if got := decode[inspectOutput](t, out).Signature; got.State != "unsigned" || !got.Refused {
		t.Errorf("inspect --json under require_signature: %+v", got)
	}
}
