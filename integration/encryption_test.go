package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
)

// enckey makes an encryption key with the bed's gpusnap, as an operator
// would, and returns its path and id.
func enckey(t *testing.T, name string) (path, id string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), name+".enc")
	out, err := exec.Command(cliPath, "enckey", "--json", path).Output()
	if err != nil {
		t.Fatalf("gpusnap enckey: %v: %s", err, out)
	}
	var got struct {
		KeyID string `json:"key_id"`
	}
	if err := json.Unmarshal(out, &got); err != nil || len(got.KeyID) != 16 {
		t.Fatalf("gpusnap enckey --json: %v: %s", err, out)
	}
	return path, got.KeyID
}

// assertEmptyDir fails unless dir is missing or empty: no plaintext of a
// checkpoint outlives its restore.
func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if len(entries) > 0 {
		t.Fatalf("%s holds %s after the restore ended", dir, entries[0].Name())
	}
}

// TestEncryptedRestore: a handler with encryption_key stores only
// ciphertext and restores from it, decrypting into decrypt_dir for the
// length of the restore; a handler with another key, or none, cold-starts
// with the reason, decrypts nothing and leaves the store as it was.
func TestEncryptedRestore(t *testing.T) {
	start := time.Now()
	keyA, idA := enckey(t, "a")
	keyB, idB := enckey(t, "b")
	plain := filepath.Join(t.TempDir(), "decrypted")
	opts, store := handlerOptions(t, fmt.Sprintf("encryption_key = %q\ndecrypt_dir = %q\n", keyA, plain))
	before := checkpointWarm(t, "enc-source", opts, store)
	ck := checkpoints(t, store)[0]
	if e := ck.Manifest.Encryption; e == nil || e.KeyID != idA || e.Algorithm != "aes-256-gcm-chunked" {
		t.Fatalf("manifest encryption %+v, want key %s", e, idA)
	}
	if ck.Manifest.Phases["encrypt"] == 0 {
		t.Errorf("checkpoint phases %v have no encrypt phase", ck.Manifest.Phases)
	}
	// Every stored file is ciphertext: the format's header first, and
	// nowhere the file the workload wrote into its writable layer
	// (rootfs-diff.tar holds it in the clear without encryption).
	for _, f := range ck.Manifest.Files {
		data, err := os.ReadFile(filepath.Join(ck.Dir, f.Path))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, []byte("GSNAPENC")) || bytes.Contains(data, []byte("written-before-checkpoint")) {
			t.Fatalf("%s is stored in the clear (%d bytes, starts %q)", f.Path, len(data), data[:min(8, len(data))])
		}
	}
	if out, err := exec.Command(cliPath, "--store", store, "inspect", ck.Name).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "aes-256-gcm-chunked, key "+idA) {
		t.Fatalf("gpusnap inspect: %v: %s", err, out)
	}
	sums := map[string]string{}
	for _, f := range ck.Manifest.Files {
		sums[f.Path] = f.SHA256
	}

	t.Run("the right key restores", func(t *testing.T) {
		runStateful(t, "enc-restored", opts)
		got := waitWarm(t, "enc-restored", 0)
		st := statusOf(t, "enc-restored")
		phases, _ := st["phases_seconds"].(map[string]any)
		if st["decision"] != "restored" || st["checkpoint"] != ck.Name || phases["decrypt"] == nil {
			t.Fatalf("status: %v", st)
		}
		if got.Count < before.Count || got.File != "written-before-checkpoint" || got.Child != "alive" {
			t.Fatalf("restored workload %+v does not continue from %+v", got, before)
		}
		if ev := restoreEvent(t, "enc-restored", start); ev.Outcome != events.OutcomeRestored || ev.Phases["decrypt"] == 0 {
			t.Fatalf("event %+v, want restored with a decrypt phase", ev)
		}
		assertEmptyDir(t, plain)
	})

	for _, tc := range []struct {
		name, id, extra, want string
	}{
		{"another key cold-starts", "enc-other-key", fmt.Sprintf("encryption_key = %q\n", keyB),
			"checkpoint " + ck.Name + " is encrypted with key " + idA + ", this handler's encryption_key is " + idB + " (" + keyB + ")"},
		{"no key cold-starts", "enc-no-key", "",
			"checkpoint " + ck.Name + " is encrypted with key " + idA + " and this handler has no encryption_key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			other := storeOptions(t, store, tc.extra+fmt.Sprintf("decrypt_dir = %q\n", plain))
			runStateful(t, tc.id, other)
			got := waitWarm(t, tc.id, 0)
			st := statusOf(t, tc.id)
			if st["decision"] != "cold-start" || !strings.Contains(fmt.Sprint(st["reason"]), tc.want) || got.Count >= before.Count {
				t.Fatalf("status %v, workload %+v; want a cold start with %q", st, got, tc.want)
			}
			if ev := restoreEvent(t, tc.id, start); ev.ReasonCode != events.ReasonWrongKey || ev.Checkpoint != ck.Name {
				t.Fatalf("event %+v, want reason code %s", ev, events.ReasonWrongKey)
			}
			assertEmptyDir(t, plain)
			cks := checkpoints(t, store)
			if len(cks) != 1 || cks[0].Name != ck.Name {
				t.Fatalf("the refused restore changed the store: %d checkpoints", len(cks))
			}
			for _, f := range cks[0].Manifest.Files {
				if sums[f.Path] != f.SHA256 {
					t.Fatalf("the refused restore changed %s", f.Path)
				}
			}
		})
	}
}
