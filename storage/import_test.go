package storage

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestImport: a checkpoint copied into another store has the same name,
// manifest and signature, verifies there, and a second import returns it.
func TestImport(t *testing.T) {
	src, cache := openStore(t), openStore(t)
	key, _, _ := keyPair(t, "node")
	orig, err := src.Get(publishSigned(t, src, "i", key).Name)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cache.Import(context.Background(), orig, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != orig.Name || got.Dir != filepath.Join(cache.Root, orig.Name) || !bytes.Equal(got.raw, orig.raw) {
		t.Fatalf("imported %+v from %+v", got, orig)
	}
	for _, name := range []string{manifestName, signatureName, "checkpoint/pages-1.img"} {
		a, _ := os.ReadFile(filepath.Join(orig.Dir, name))
		b, err := os.ReadFile(filepath.Join(got.Dir, name))
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("%s differs in the copy: %v", name, err)
		}
	}
	if err := got.Verify(context.Background(), nil); err != nil {
		t.Fatalf("the copy does not verify: %v", err)
	}
	if again, err := cache.Import(context.Background(), orig, nil); err != nil || again.Dir != got.Dir {
		t.Fatalf("second import: %v, %v", again, err)
	}
	if entries := rootEntries(t, cache); len(entries) != 1 {
		t.Fatalf("cache holds %v, want only the checkpoint", entries)
	}
}

// TestImportRefusesADamagedSource: a source whose files do not match its
// manifest is not copied, and nothing of the attempt stays in the target.
func TestImportRefusesADamagedSource(t *testing.T) {
	src, cache := openStore(t), openStore(t)
	orig := publish(t, src, &Manifest{Key: testKey("d")}, sampleFiles)
	if err := writeAt(filepath.Join(orig.Dir, "checkpoint/pages-1.img"), 10, "x"); err != nil {
		t.Fatal(err)
	}
	_, err := cache.Import(context.Background(), orig, nil)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("does not match its manifest")) {
		t.Fatalf("import of a damaged checkpoint: %v", err)
	}
	if entries := rootEntries(t, cache); len(entries) != 0 {
		t.Fatalf("a failed import left %v", entries)
	}
}

// TestImportNameTaken: a different checkpoint under the same name in the
// target is an error, not overwritten.
func TestImportNameTaken(t *testing.T) {
	a, b, cache := openStore(t), openStore(t), openStore(t)
	ca := publish(t, a, &Manifest{Key: testKey("n")}, sampleFiles)
	cb := publish(t, b, &Manifest{Key: testKey("n"), Source: Source{ContainerID: "other"}}, sampleFiles)
	if _, err := cache.Import(context.Background(), ca, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := cache.Import(context.Background(), cb, nil); !errors.Is(err, ErrExists) {
		t.Fatalf("import over a different checkpoint: %v, want ErrExists", err)
	}
}
