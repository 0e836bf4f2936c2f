package storage

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestVerifyCached(t *testing.T) {
	store, err := Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Stage()
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(st.Dir(), "checkpoint"), 0o700)
	pages := filepath.Join("checkpoint", "pages-1.img")
	if err := os.WriteFile(filepath.Join(st.Dir(), pages), []byte("0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	ck, err := st.Publish(&Manifest{Key: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(t.TempDir(), "verified")

	if cached, err := ck.VerifyCached(context.Background(), cache, SignaturePolicy{}, nil); err != nil || cached {
		t.Fatalf("first call: cached=%v err=%v, want a full verify", cached, err)
	}
	if cached, err := ck.VerifyCached(context.Background(), cache, SignaturePolicy{}, nil); err != nil || !cached {
		t.Fatalf("second call: cached=%v err=%v, want the remembered result", cached, err)
	}

	// Same size, different byte: the mtime moves, the cache misses, and the
	// full verify catches it.
	path := filepath.Join(ck.Dir, pages)
	info, _ := os.Stat(path)
	f, _ := os.OpenFile(path, os.O_WRONLY, 0)
	f.WriteAt([]byte("X"), 3)
	f.Close()
	os.Chtimes(path, info.ModTime().Add(time.Millisecond), info.ModTime().Add(time.Millisecond))
	cached, err := ck.VerifyCached(context.Background(), cache, SignaturePolicy{}, nil)
	if err == nil || cached {
		t.Fatalf("after tampering: cached=%v err=%v, want a verification failure", cached, err)
	}
	entries, _ := os.ReadDir(cache)
	if len(entries) != 0 {
		t.Fatalf("a failed verify left a remembered result: %v", entries)
	}
}

func TestRememberVerified(t *testing.T) {
	store, _ := Open(filepath.Join(t.TempDir(), "store"))
	st, _ := store.Stage()
	os.WriteFile(filepath.Join(st.Dir(), "rootfs-diff.tar"), []byte("data"), 0o600)
	ck, err := st.Publish(&Manifest{Key: "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(t.TempDir(), "verified")
	if err := ck.RememberVerified(cache, SignaturePolicy{}); err != nil {
		t.Fatal(err)
	}
	if cached, err := ck.VerifyCached(context.Background(), cache, SignaturePolicy{}, nil); err != nil || !cached {
		t.Fatalf("cached=%v err=%v, want the writer's remembered result", cached, err)
	}
}

// TestVerifyCachedSurvivesLinkCount: removing another hard link of an image
// (containerd removing its checkpoint directory) keeps the result valid.
func TestVerifyCachedSurvivesLinkCount(t *testing.T) {
	store, _ := Open(filepath.Join(t.TempDir(), "store"))
	st, _ := store.Stage()
	other := filepath.Join(t.TempDir(), "pages.img")
	os.WriteFile(other, []byte("pages"), 0o600)
	if err := os.Link(other, filepath.Join(st.Dir(), "pages.img")); err != nil {
		t.Skip("no hard links here:", err)
	}
	ck, err := st.Publish(&Manifest{Key: "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(t.TempDir(), "verified")
	ck.RememberVerified(cache, SignaturePolicy{})
	os.Remove(other)
	if cached, err := ck.VerifyCached(context.Background(), cache, SignaturePolicy{}, nil); err != nil || !cached {
		t.Fatalf("cached=%v err=%v after the other link went away", cached, err)
	}
}
