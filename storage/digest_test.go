package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLargeFileBlocks: Publish records a file of more than BlockSize bytes
// by one digest per block (the last one short) and a smaller file by one
// sha256; Verify passes, then names the block a changed byte is in.
func TestLargeFileBlocks(t *testing.T) {
	s := openStore(t)
	big := strings.Repeat("x", 2*BlockSize+5)
	c := publish(t, s, &Manifest{Key: testKey("blocks")}, map[string]string{"checkpoint/pages-1.img": big, "small.img": "s"})
	byPath := map[string]File{}
	for _, f := range c.Manifest.Files {
		byPath[f.Path] = f
	}
	pages, small := byPath["checkpoint/pages-1.img"], byPath["small.img"]
	full, tail := sha256.Sum256([]byte(big[:BlockSize])), sha256.Sum256([]byte(big[2*BlockSize:]))
	if len(pages.Blocks) != 3 || pages.SHA256 != "" || pages.Blocks[0] != hex.EncodeToString(full[:]) ||
		pages.Blocks[1] != pages.Blocks[0] || pages.Blocks[2] != hex.EncodeToString(tail[:]) {
		t.Fatalf("large file recorded as %+v", pages)
	}
	if small.Blocks != nil || !isSHA256(small.SHA256) {
		t.Fatalf("small file recorded as %+v", small)
	}
	if err := c.Verify(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if err := writeAt(filepath.Join(c.Dir, "checkpoint", "pages-1.img"), BlockSize+7, "y"); err != nil {
		t.Fatal(err)
	}
	err := c.Verify(context.Background(), nil)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "block 1 (bytes 67108864-134217727)") {
		t.Fatalf("Verify after a byte of block 1 changed: %v", err)
	}
}

// TestLargeFileOneSHA256: a manifest written before blocks existed records
// a large file by one sha256; such checkpoints still verify, and still
// fail on a changed byte.
func TestLargeFileOneSHA256(t *testing.T) {
	s := openStore(t)
	big := strings.Repeat("z", BlockSize+1)
	c := publish(t, s, &Manifest{Key: testKey("old")}, map[string]string{"pages-1.img": big})
	sum := sha256.Sum256([]byte(big))
	old := editManifest(t, func(m map[string]any) {
		f := m["files"].([]any)[0].(map[string]any)
		delete(f, "blocks")
		f["sha256"] = hex.EncodeToString(sum[:])
	})
	raw, err := os.ReadFile(filepath.Join(c.Dir, manifestName))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.Dir, manifestName), old(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(c.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(context.Background(), nil); err != nil {
		t.Fatalf("Verify of a one-sha256 large file: %v", err)
	}
	if err := writeAt(filepath.Join(c.Dir, "pages-1.img"), BlockSize, "!"); err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(context.Background(), nil); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "sha256: expected") {
		t.Fatalf("Verify after a byte changed: %v", err)
	}
}
