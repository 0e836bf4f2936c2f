package storage

import (
	"fmt"

	"github.com/gpusnap/containerd-shim-snapshot-v2/crypt"
)

// LoadEncryptionKey reads a handler's encryption key (32 raw bytes or 64
// hex digits) under the same rule as a signing key: owned by root (or the
// user running the command) and readable by no one else, since whoever
// reads it reads every checkpoint it encrypted.
func LoadEncryptionKey(path string) (*crypt.Key, error) {
	data, err := readKeyFile(path, true)
	if err != nil {
		return nil, fmt.Errorf("encryption key %s: %w", path, err)
	}
	k, err := crypt.ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("encryption key %s: %w", path, err)
	}
	return k, nil
}
