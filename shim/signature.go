package shim

import (
	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// signaturePolicy is what the handler demands of a checkpoint's signature.
// The trusted keys are read at every decision, so a key added to or removed
// from the options takes effect at the next container, with no restart.
func signaturePolicy(o options.Options) (storage.SignaturePolicy, error) {
	keys, err := storage.LoadTrustedKeys(o.TrustedKeys)
	if err != nil {
		return storage.SignaturePolicy{}, events.Because(events.ReasonKeyError, err)
	}
	return storage.SignaturePolicy{TrustedKeys: keys, Require: o.RequireSignature}, nil
}

// signingKey is the handler's signing key; nil when it signs nothing.
func signingKey(o options.Options) (*storage.SigningKey, error) {
	if o.SigningKey == "" {
		return nil, nil
	}
	key, err := storage.LoadSigningKey(o.SigningKey)
	return key, events.Because(events.ReasonKeyError, err)
}
