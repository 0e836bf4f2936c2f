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

// CheckRootOnly refuses a node-local directory that someone other than
// root could change, or any directory above it that is not root's (the
// store's rule). The shim decrypts checkpoints only under such a directory.
func CheckRootOnly(dir string) error { return checkStoreRoot(dir) }
