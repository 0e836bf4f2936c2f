package storage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenRefusesUntrustedRoots(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string) string // returns the store root
		bad   string                                // path the error must name; "" = accepted
	}{
		{"private store", func(t *testing.T, dir string) string { return filepath.Join(dir, "store") }, ""},
		{"world-writable store", func(t *testing.T, dir string) string {
			root := filepath.Join(dir, "store")
			os.Mkdir(root, 0o700)
			os.Chmod(root, 0o777)
			return root
		}, "store"},
		{"store owned by another user", func(t *testing.T, dir string) string {
			root := filepath.Join(dir, "store")
			os.Mkdir(root, 0o700)
			if err := os.Chown(root, 65534, 65534); err != nil {
				t.Skip("cannot chown:", err)
			}
			return root
		}, "uid 65534"},
		{"group-writable parent", func(t *testing.T, dir string) string {
			parent := filepath.Join(dir, "shared")
			os.Mkdir(parent, 0o700)
			os.Chmod(parent, 0o775)
			return filepath.Join(parent, "store")
		}, "shared"},
		{"sticky world-writable parent, as /tmp", func(t *testing.T, dir string) string {
			parent := filepath.Join(dir, "tmp")
			os.Mkdir(parent, 0o700)
			os.Chmod(parent, os.ModeSticky|0o777)
			return filepath.Join(parent, "store")
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := tc.setup(t, t.TempDir())
			_, err := Open(root)
			if tc.bad == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), tc.bad) {
				t.Fatalf("want ErrUntrusted naming %q, got %v", tc.bad, err)
			}
			var u *UntrustedPathError
			if !errors.As(err, &u) {
				t.Fatalf("want an *UntrustedPathError, got %#v", err)
			}
		})
	}
}

// TestVerifyRefusesUntrustedFiles: a checkpoint file anyone may write is
// refused even when the checkpoint was verified before (the cached path).
func TestVerifyRefusesUntrustedFiles(t *testing.T) {
	s := openStore(t)
	c := publish(t, s, &Manifest{Key: testKey("t")}, sampleFiles)
	cache := t.TempDir()
	if _, err := c.VerifyCached(context.Background(), cache, SignaturePolicy{}, nil); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(c.Dir, "spec.dump")
	if err := os.Chmod(file, 0o666); err != nil {
		t.Fatal(err)
	}
	_, err := c.VerifyCached(context.Background(), cache, SignaturePolicy{}, nil)
	if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "spec.dump") {
		t.Fatalf("want ErrUntrusted naming spec.dump, got %v", err)
	}
	if err := c.Verify(context.Background(), nil); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("full verify: want ErrUntrusted, got %v", err)
	}
	os.Chmod(file, 0o600)
	if _, err := c.VerifyCached(context.Background(), cache, SignaturePolicy{}, nil); err != nil {
		t.Fatalf("after chmod back: %v", err)
	}
}
