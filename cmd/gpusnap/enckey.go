package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/gpusnap/containerd-shim-snapshot-v2/crypt"
)

func init() {
	commands["enckey"] = &command{
		summary: "Make an AES-256 key for encrypting checkpoints at rest: PATH holds 64 hex digits, mode 0600,\n" +
			"for encryption_key on every node of the handler, those that checkpoint and those that restore.\n" +
			"Never overwrites a file.",
		args:  "PATH",
		setup: noFlags(runEnckey),
	}
}

// enckeyOutput is enckey's JSON.
type enckeyOutput struct {
	Key   string `json:"key"`
	KeyID string `json:"key_id"`
}

func runEnckey(e *env, args []string) int {
	if len(args) != 1 || args[0] == "" {
		return e.usageErrorf("needs exactly one PATH, got %d arguments", len(args))
	}
	out := enckeyOutput{Key: args[0]}
	if _, err := os.Lstat(out.Key); !errors.Is(err, os.ErrNotExist) {
		return e.errorf("%s exists; enckey never overwrites a key (checkpoints encrypted with it could no longer be restored)", out.Key)
	}
	data, id, err := crypt.GenerateKeyFile()
	if err != nil {
		return e.errorf("%v", err)
	}
	out.KeyID = id
	if err := writeNew(out.Key, data, 0o600); err != nil {
		return e.errorf("%v", err)
	}
	if e.json {
		return e.writeJSON(out)
	}
	fmt.Fprintf(e.stdout, "key id %s\n", id)
	fmt.Fprintf(e.stdout, "encryption key %s (encryption_key on every node of the handler; whoever reads it reads its checkpoints)\n", out.Key)
	return exitOK
}
