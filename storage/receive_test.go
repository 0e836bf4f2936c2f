package storage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// receiveCopy stages a byte-for-byte copy of c in s, as a transfer would.
func receiveCopy(t *testing.T, s *Store, c *Checkpoint) *Staging {
	t.Helper()
	st, err := s.Receive("c0ffee")
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(c.Dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(c.Dir, p)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(st.Dir(), filepath.Dir(rel)), 0o700); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(st.Dir(), rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestAcceptHashed: the sums a receiver computed stand in for hashing the
// files again; a sum that differs from the manifest is refused like damaged
// bytes and leaves nothing, and a file the sums lack is still hashed.
func TestAcceptHashed(t *testing.T) {
	src := openStore(t)
	orig := publish(t, src, &Manifest{Key: testKey("h")}, sampleFiles)
	sums := map[string]File{}
	for _, f := range orig.Manifest.Files {
		sums[f.Path] = f
	}

	t.Run("matching sums", func(t *testing.T) {
		dst := openStore(t)
		got, err := receiveCopy(t, dst, orig).AcceptHashed(context.Background(), orig.Name, sums)
		if err != nil || got.Name != orig.Name {
			t.Fatalf("AcceptHashed: %v, %v", got, err)
		}
	})
	t.Run("a sum that differs", func(t *testing.T) {
		dst := openStore(t)
		bad := sums["checkpoint/pages-1.img"]
		bad.SHA256 = sums["rootfs-diff.tar"].SHA256
		wrong := map[string]File{"checkpoint/pages-1.img": bad}
		_, err := receiveCopy(t, dst, orig).AcceptHashed(context.Background(), orig.Name, wrong)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("AcceptHashed with a wrong sum: %v, want ErrCorrupt", err)
		}
		if entries := rootEntries(t, dst); len(entries) != 0 {
			t.Fatalf("a refused copy left %v", entries)
		}
	})
	t.Run("a file without a sum is hashed", func(t *testing.T) {
		dst := openStore(t)
		st := receiveCopy(t, dst, orig)
		if err := writeAt(filepath.Join(st.Dir(), "spec.dump"), 0, "[]"); err != nil {
			t.Fatal(err)
		}
		partial := map[string]File{"checkpoint/pages-1.img": sums["checkpoint/pages-1.img"]}
		if _, err := st.AcceptHashed(context.Background(), orig.Name, partial); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("AcceptHashed of a damaged file it had no sum for: %v, want ErrCorrupt", err)
		}
	})
}
