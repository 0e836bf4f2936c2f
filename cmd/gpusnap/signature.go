package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// pathList is a repeatable path flag (--trusted-key A --trusted-key B).
type pathList []string

func (p *pathList) String() string { return strings.Join(*p, ",") }

func (p *pathList) Set(v string) error {
	if v == "" {
		return errors.New("empty path")
	}
	*p = append(*p, v)
	return nil
}

// trustedKeyFlag adds --trusted-key to a command that reports signatures.
func trustedKeyFlag(fs *flag.FlagSet) *pathList {
	keys := new(pathList)
	fs.Var(keys, "trusted-key", "public key `PATH` a signature may verify with (repeatable; default: the trusted_keys and\n"+
		"require_signature of --handler-config)")
	return keys
}

// signaturePolicy is how verify and inspect judge signatures: by the keys
// given with --trusted-key, or else as the shim would, by the handler's
// trusted_keys and require_signature (--handler-config).
func (e *env) signaturePolicy(flagKeys pathList) (storage.SignaturePolicy, error) {
	paths, require := []string(flagKeys), false
	if len(paths) == 0 {
		o, err := e.handlerOptions()
		if err != nil {
			return storage.SignaturePolicy{}, err
		}
		if o != nil {
			paths, require = o.TrustedKeys, o.RequireSignature
		}
	}
	keys, err := storage.LoadTrustedKeys(paths)
	if err != nil {
		return storage.SignaturePolicy{}, err
	}
	return storage.SignaturePolicy{TrustedKeys: keys, Require: require}, nil
}

// Signature states, as verify and inspect report them.
const (
	sigSigned    = "signed"    // verifies with a trusted key
	sigUnsigned  = "unsigned"  // no manifest.sig
	sigBad       = "bad"       // malformed, or verifies with no trusted key
	sigUnchecked = "unchecked" // signed, but no trusted key to check it with
)

// signatureReport is one checkpoint's signature as the operator sees it.
type signatureReport struct {
	State   string `json:"state"`
	KeyID   string `json:"key_id,omitempty"`
	KeyPath string `json:"key_path,omitempty"`
	// Error is the refusal in the shim's words (bad, or unsigned where
	// signatures are required).
	Error string `json:"error,omitempty"`
	// Refused is whether the shim, under the same policy, would refuse
	// to restore the checkpoint.
	Refused bool `json:"refused"`
}

func checkSignature(c *storage.Checkpoint, p storage.SignaturePolicy) signatureReport {
	var r signatureReport
	var err error
	if len(p.TrustedKeys) == 0 {
		_, err = c.Signature()
		r.State = sigUnchecked
	} else {
		var k *storage.PublicKey
		if k, err = c.VerifySignature(p.TrustedKeys); err == nil {
			r.State, r.KeyID, r.KeyPath = sigSigned, k.ID, k.Path
		}
	}
	switch {
	case errors.Is(err, storage.ErrUnsigned):
		r.State, r.Refused = sigUnsigned, p.Require
		if p.Require {
			r.Error = err.Error() + " and signatures are required (require_signature = true)"
		}
	case err != nil:
		r.State, r.Error, r.Refused = sigBad, err.Error(), len(p.TrustedKeys) > 0
	}
	return r
}

func (r signatureReport) String() string {
	switch r.State {
	case sigSigned:
		return fmt.Sprintf("signed by key %s (%s)", r.KeyID, r.KeyPath)
	case sigUnchecked:
		return "signed, not checked (no --trusted-key)"
	case sigBad:
		return "BAD: " + r.Error
	}
	if r.Refused {
		return "unsigned, and signatures are required"
	}
	return r.State
}
