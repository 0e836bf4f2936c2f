package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

func init() {
	commands["keygen"] = &command{
		summary: "Make an ed25519 key pair for signing checkpoints: PREFIX.key, the private key (PKCS#8 PEM,\n" +
			"mode 0600), for signing_key on the nodes that checkpoint; PREFIX.pub, the public key (PKIX PEM,\n" +
			"mode 0644), for trusted_keys on the nodes that restore. Never overwrites a file.",
		args:  "PREFIX",
		setup: noFlags(runKeygen),
	}
}

// keygenOutput is keygen's JSON.
type keygenOutput struct {
	PrivateKey string `json:"private_key"`
	PublicKey  string `json:"public_key"`
	KeyID      string `json:"key_id"`
}

func runKeygen(e *env, args []string) int {
	if len(args) != 1 || args[0] == "" {
		return e.usageErrorf("needs exactly one PREFIX, got %d arguments", len(args))
	}
	out := keygenOutput{PrivateKey: args[0] + ".key", PublicKey: args[0] + ".pub"}
	for _, p := range []string{out.PrivateKey, out.PublicKey} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			return e.errorf("%s exists; keygen never overwrites a key (remove it or choose another prefix)", p)
		}
	}
	priv, pub, id, err := storage.GenerateKeyPair()
	if err != nil {
		return e.errorf("%v", err)
	}
	out.KeyID = id
	if err := writeNew(out.PrivateKey, priv, 0o600); err != nil {
		return e.errorf("%v", err)
	}
	if err := writeNew(out.PublicKey, pub, 0o644); err != nil {
		os.Remove(out.PrivateKey)
		return e.errorf("%v", err)
	}
	if e.json {
		return e.writeJSON(out)
	}
	fmt.Fprintf(e.stdout, "key id %s\n", id)
	fmt.Fprintf(e.stdout, "private key %s (signing_key on the nodes that checkpoint; keep it there and nowhere else)\n", out.PrivateKey)
	fmt.Fprintf(e.stdout, "public key  %s (trusted_keys on the nodes that restore)\n", out.PublicKey)
	return exitOK
}

// writeNew creates path, which must not exist (not even as a symlink), with
// exactly mode, whatever the umask, and flushes it.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if err = errors.Join(err, f.Close()); err != nil {
		os.Remove(path)
	}
	return err
}
