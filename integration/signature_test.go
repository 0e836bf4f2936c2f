package integration

import (
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

// keygen makes a signing key pair with the bed's gpusnap, as an operator
// would, and returns the private key's path, the public key's and its id.
func keygen(t *testing.T, name string) (key, pub, id string) {
	t.Helper()
	prefix := filepath.Join(t.TempDir(), name)
	out, err := exec.Command(cliPath, "keygen", "--json", prefix).Output()
	if err != nil {
		t.Fatalf("gpusnap keygen: %v: %s", err, out)
	}
	var got struct {
		PrivateKey string `json:"private_key"`
		PublicKey  string `json:"public_key"`
		KeyID      string `json:"key_id"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("gpusnap keygen --json: %v: %s", err, out)
	}
	return got.PrivateKey, got.PublicKey, got.KeyID
}

// storeOptions writes a handler options file for an existing store.
func storeOptions(t *testing.T, store, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "handler.toml")
	body := fmt.Sprintf("store = %q\ncontrol_dir = %q\n%s", store, controlDir, extra)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// restoreEvent is the restore decision the shim recorded for a container.
func restoreEvent(t *testing.T, id string, since time.Time) events.Event {
	t.Helper()
	e, ok := eventOf(t, events.KindRestore, id, since)
	if !ok {
		t.Fatalf("no restore event for %s in %s", id, eventsDir)
	}
	return e
}

// eventOf is the first event of kind recorded for container id since.
func eventOf(t *testing.T, kind, id string, since time.Time) (events.Event, bool) {
	t.Helper()
	evts, err := events.Read(eventsDir, since)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evts {
		if e.Kind == kind && e.ContainerID == id {
			return e, true
		}
	}
	return events.Event{}, false
}

// TestSignatureRestore: a handler with signing_key signs what it
// checkpoints and a node trusting that key restores it; a node trusting
// only another key, or requiring signatures of an unsigned checkpoint,
// cold-starts with the reason, and leaves the store as it was.
func TestSignatureRestore(t *testing.T) {
	start := time.Now()
	keyA, pubA, idA := keygen(t, "a")
	_, pubB, idB := keygen(t, "b")
	signing := fmt.Sprintf("signing_key = %q\ntrusted_keys = [%q]\nrequire_signature = true\n", keyA, pubA)
	opts, store := handlerOptions(t, signing)
	before := checkpointWarm(t, "sig-source", opts, store)
	ck := checkpoints(t, store)[0]
	sig, err := os.ReadFile(filepath.Join(ck.Dir, "manifest.sig"))
	if err != nil || len(sig) != 64 {
		t.Fatalf("the checkpoint of a handler with signing_key is not signed: %v, %d bytes", err, len(sig))
	}
	if out, err := exec.Command(cliPath, "--store", store, "verify", ck.Name, "--trusted-key", pubA).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "signed by key "+idA) {
		t.Fatalf("gpusnap verify --trusted-key: %v: %s", err, out)
	}
	// The images CRIU wrote hold the workload and its child (both named
	// stateful), each a row of inspect's Processes.
	if out, err := exec.Command(cliPath, "--store", store, "inspect", ck.Name).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "Processes:\n") || strings.Count(string(out), " stateful ") < 2 {
		t.Fatalf("gpusnap inspect does not list the workload and its child: %v: %s", err, out)
	}

	t.Run("signed and trusted restores", func(t *testing.T) {
		runStateful(t, "sig-restored", opts)
		got := waitWarm(t, "sig-restored", 0)
		if st := statusOf(t, "sig-restored"); st["decision"] != "restored" || st["checkpoint"] != ck.Name {
			t.Fatalf("status: %v", st)
		}
		if got.Count < before.Count || got.File != "written-before-checkpoint" || got.Child != "alive" {
			t.Fatalf("restored workload %+v does not continue from %+v", got, before)
		}
	})

	t.Run("a node trusting only another key cold-starts", func(t *testing.T) {
		// No require_signature: a signature that does not verify is refused
		// all the same.
		other := storeOptions(t, store, fmt.Sprintf("trusted_keys = [%q]\n", pubB))
		runStateful(t, "sig-other-key", other)
		got := waitWarm(t, "sig-other-key", 0)
		st := statusOf(t, "sig-other-key")
		want := "signature of checkpoint " + ck.Name + " does not verify with any trusted key (" + idB + ")"
		if st["decision"] != "cold-start" || !strings.Contains(fmt.Sprint(st["reason"]), want) || got.Count >= before.Count {
			t.Fatalf("status %v, workload %+v; want a cold start with %q", st, got, want)
		}
		if ev := restoreEvent(t, "sig-other-key", start); ev.ReasonCode != events.ReasonBadSignature || ev.Checkpoint != ck.Name {
			t.Fatalf("event %+v, want reason code %s", ev, events.ReasonBadSignature)
		}
		after, err := os.ReadFile(filepath.Join(ck.Dir, "manifest.sig"))
		if cks := checkpoints(t, store); err != nil || string(after) != string(sig) || len(cks) != 1 || cks[0].Name != ck.Name {
			t.Fatalf("the refused restore changed the store: %v, %d checkpoints", err, len(cks))
		}
	})

	t.Run("an unsigned checkpoint under require_signature cold-starts", func(t *testing.T) {
		unsignedOpts, unsignedStore := handlerOptions(t, "") // no signing_key
		checkpointWarm(t, "sig-unsigned-source", unsignedOpts, unsignedStore)
		unsigned := checkpoints(t, unsignedStore)[0]
		if _, err := os.Stat(filepath.Join(unsigned.Dir, "manifest.sig")); err == nil {
			t.Fatal("a handler without signing_key signed its checkpoint")
		}
		requiring := storeOptions(t, unsignedStore, fmt.Sprintf("trusted_keys = [%q]\nrequire_signature = true\n", pubA))
		runStateful(t, "sig-unsigned", requiring)
		got := waitWarm(t, "sig-unsigned", 0)
		st := statusOf(t, "sig-unsigned")
		want := "checkpoint " + unsigned.Name + " is not signed and the handler requires signatures (require_signature = true)"
		if st["decision"] != "cold-start" || !strings.Contains(fmt.Sprint(st["reason"]), want) || got.Count >= before.Count {
			t.Fatalf("status %v, workload %+v; want a cold start with %q", st, got, want)
		}
		if ev := restoreEvent(t, "sig-unsigned", start); ev.ReasonCode != events.ReasonUnsigned {
			t.Fatalf("event %+v, want reason code %s", ev, events.ReasonUnsigned)
		}
	})
}
