package storage

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/gpusnap/containerd-shim-snapshot-v2/crypt"
)

func TestLoadEncryptionKey(t *testing.T) {
	raw := make([]byte, crypt.KeySize)
	rand.Read(raw)
	want, _ := crypt.NewKey(raw)
	hexKey := []byte(hex.EncodeToString(raw) + "\n")
	tests := []struct {
		name     string
		data     []byte
		mode     os.FileMode
		uid      int
		contains string // "" for success
	}{
		{"hex, 0600", hexKey, 0o600, 0, ""},
		{"raw, 0400", raw, 0o400, 0, ""},
		{"readable by others", hexKey, 0o644, 0, "mode 0644"},
		{"readable by group", raw, 0o640, 0, "mode 0640"},
		{"owned by another user", hexKey, 0o600, 65534, "owned by uid 65534"},
		{"too short", raw[:16], 0o600, 0, "want exactly 32 random bytes or 64 hex digits"},
		{"a PEM key", []byte("-----BEGIN PRIVATE KEY-----\n"), 0o600, 0, "want exactly 32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeKeyFile(t, "enc.key", tt.data, tt.mode, tt.uid)
			k, err := LoadEncryptionKey(p)
			if tt.contains == "" {
				if err != nil || k.ID != want.ID {
					t.Fatalf("got %v, %v; want key %s", k, err, want.ID)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.contains) || !strings.Contains(err.Error(), "encryption key "+p) {
				t.Fatalf("got %v, want an error naming %s and containing %q", err, p, tt.contains)
			}
		})
	}
}
