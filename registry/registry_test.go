package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gpusnap/containerd-shim-snapshot-v2/internal/testregistry"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// testRegistry is a real distribution registry on loopback (package
// testregistry) and the Config that reaches it.
type testRegistry struct {
	*testregistry.Registry
	config Config
}

func startRegistry(t *testing.T) *testRegistry {
	r := testregistry.Start(t)
	return &testRegistry{Registry: r, config: Config{HostsDir: r.HostsDir, Credentials: r.Credentials}}
}

// open is the test repository as the node reaches it.
func (reg *testRegistry) open(t *testing.T) *Remote {
	t.Helper()
	r, err := Open(context.Background(), reg.Host+"/checkpoints/llm", reg.config)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

const testKey = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// publishTestCheckpoint publishes a signed checkpoint whose page image spans
// several chunks, plus a small and an empty file.
func publishTestCheckpoint(t *testing.T, store *storage.Store, pages []byte, key *storage.SigningKey) *storage.Checkpoint {
	t.Helper()
	st, err := store.Stage()
	if err != nil {
		t.Fatal(err)
	}
	testregistry.WriteFile(t, filepath.Join(st.Dir(), "checkpoint", "pages-1.img"), string(pages))
	testregistry.WriteFile(t, filepath.Join(st.Dir(), "checkpoint", "inventory.img"), "inventory")
	testregistry.WriteFile(t, filepath.Join(st.Dir(), "rootfs-deleted.txt"), "")
	c, err := st.PublishSigned(&storage.Manifest{Key: testKey, GPUs: []storage.GPU{{Product: "NVIDIA H100 80GB HBM3"}}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testSigningKey(t *testing.T) (*storage.SigningKey, []*storage.PublicKey) {
	priv, pub, _, err := storage.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	testregistry.WriteFile(t, filepath.Join(dir, "key"), string(priv))
	testregistry.WriteFile(t, filepath.Join(dir, "key.pub"), string(pub))
	sk, err := storage.LoadSigningKey(filepath.Join(dir, "key"))
	if err != nil {
		t.Fatal(err)
	}
	pk, err := storage.LoadTrustedKeys([]string{filepath.Join(dir, "key.pub")})
	if err != nil {
		t.Fatal(err)
	}
	return sk, pk
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func openStore(t *testing.T) *storage.Store {
	s, err := storage.Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPushPullRoundTrip: a checkpoint pushed from one store arrives in
// another byte for byte, signature verifying, and is found by its key. Its
// page image is one block and a little more (storage.BlockSize), so the
// pull checks blocks that chunks straddle.
func TestPushPullRoundTrip(t *testing.T) {
	reg := startRegistry(t)
	ctx := context.Background()
	key, trusted := testSigningKey(t)
	src := publishTestCheckpoint(t, openStore(t), randomBytes(t, storage.BlockSize+12345), key)
	remote := reg.open(t)
	pushed, err := remote.Push(ctx, src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if pushed.Uploaded < src.Size() || pushed.Ref != reg.Host+"/checkpoints/llm:"+src.Name {
		t.Fatalf("push: %+v, want all of %d bytes uploaded to %s", pushed, src.Size(), src.Name)
	}

	tag, err := remote.Newest(ctx, testKey)
	if err != nil || tag != src.Name {
		t.Fatalf("Newest(key) = %q, %v; want %s", tag, err, src.Name)
	}
	dst := openStore(t)
	var progressed int64
	got, err := remote.Pull(ctx, tag, dst, Options{Parallel: 3, Progress: func(done, total int64) { progressed = done }})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.RawManifest(), src.RawManifest()) || progressed != src.Size() {
		t.Fatalf("pulled manifest differs or progress %d of %d", progressed, src.Size())
	}
	if i := slices.IndexFunc(got.Manifest.Files, func(f storage.File) bool { return len(f.Blocks) == 2 }); i < 0 {
		t.Fatalf("no file of the pulled checkpoint is recorded by 2 blocks: %+v", got.Manifest.Files)
	}
	if err := got.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := got.VerifySignature(trusted); err != nil {
		t.Fatalf("signature after the pull: %v", err)
	}
	assertNoStaging(t, dst)

	// A second pull finds the checkpoint in the store and moves nothing.
	progressed = 0
	if _, err := remote.Pull(ctx, tag, dst, Options{Progress: func(done, total int64) { progressed = done }}); err != nil || progressed != 0 {
		t.Fatalf("second pull: %v, %d bytes moved", err, progressed)
	}
}

// TestPushUploadsOnlyChangedChunks: the next checkpoint of the same
// workload uploads only the chunks that differ: one page changed, and one
// page added early in the image, which moves every page after it (fixed-size
// chunks would all differ).
func TestPushUploadsOnlyChangedChunks(t *testing.T) {
	reg := startRegistry(t)
	ctx := context.Background()
	remote := reg.open(t)
	store := openStore(t)
	pages := randomBytes(t, 256*mib)
	first := publishTestCheckpoint(t, store, pages, nil)
	if _, err := remote.Push(ctx, first, Options{}); err != nil {
		t.Fatal(err)
	}
	copy(pages[20*mib+100:], randomBytes(t, 4096)) // one page changes
	second := publishTestCheckpoint(t, store, pages, nil)
	// 4 KiB of new pages early in the image: everything after them moves.
	third := publishTestCheckpoint(t, store, slices.Concat(pages[:mib], randomBytes(t, 4096), pages[mib:]), nil)
	for _, ck := range []*storage.Checkpoint{second, third} {
		res, err := remote.Push(ctx, ck, Options{})
		if err != nil {
			t.Fatal(err)
		}
		// The chunks around the change (one, or two where it moved a
		// boundary) and the new manifest.json; nothing else.
		if limit := 2*MaxChunk + int64(len(ck.RawManifest())); res.Uploaded > limit {
			t.Fatalf("push of %s uploaded %d of %d bytes, want at most %d", ck.Name, res.Uploaded, res.Bytes, limit)
		}
	}
	tags, err := remote.Tags(ctx)
	if err != nil || len(tags) != 3 {
		t.Fatalf("tags %v, %v", tags, err)
	}
	if tag, err := remote.Newest(ctx, testKey); err != nil || tag != third.Name {
		t.Fatalf("Newest = %q, %v; want %s", tag, err, third.Name)
	}
}

// TestPullFailures: each bad case ends in a clear error and no checkpoint
// (and, except for a resumable transfer, nothing) in the store.
func TestPullFailures(t *testing.T) {
	reg := startRegistry(t)
	ctx := context.Background()
	remote := reg.open(t)
	src := publishTestCheckpoint(t, openStore(t), randomBytes(t, 16*mib+1), nil)
	if _, err := remote.Push(ctx, src, Options{}); err != nil {
		t.Fatal(err)
	}

	t.Run("missing tag", func(t *testing.T) {
		dst := openStore(t)
		_, err := remote.Pull(ctx, "fedcba9876543210-g000001", dst, Options{})
		if err == nil || !strings.Contains(err.Error(), "fedcba9876543210-g000001") {
			t.Fatalf("pull of a missing tag: %v", err)
		}
		assertNoStaging(t, dst)
	})
	t.Run("wrong credentials", func(t *testing.T) {
		cfg := reg.config
		cfg.Credentials = filepath.Join(t.TempDir(), "config.json")
		testregistry.WriteCredentials(t, cfg.Credentials, reg.Host, testregistry.User, "wrong")
		bad, err := Open(ctx, reg.Host+"/checkpoints/llm", cfg)
		if err != nil {
			t.Fatal(err)
		}
		dst := openStore(t)
		_, err = bad.Pull(ctx, src.Name, dst, Options{})
		if err == nil || !strings.Contains(err.Error(), "401") && !strings.Contains(strings.ToLower(err.Error()), "unauthorized") {
			t.Fatalf("pull with a wrong password: %v", err)
		}
		assertNoStaging(t, dst)
	})
	t.Run("CA not configured", func(t *testing.T) {
		cfg := reg.config
		cfg.HostsDir = t.TempDir()
		testregistry.WriteFile(t, filepath.Join(cfg.HostsDir, reg.Host, "hosts.toml"), fmt.Sprintf("server = \"https://%s\"\n", reg.Host))
		bad, err := Open(ctx, reg.Host+"/checkpoints/llm", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bad.Tags(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("a registry whose CA the node does not trust: %v", err)
		}
	})
	t.Run("blob changed on the registry's disk", func(t *testing.T) {
		tamperBlobs(t, reg.Data, MinChunk)
		dst := openStore(t)
		_, err := remote.Pull(ctx, src.Name, dst, Options{})
		if !errors.Is(err, storage.ErrCorrupt) || !strings.Contains(err.Error(), "digest") {
			t.Fatalf("pull of a tampered chunk: %v, want ErrCorrupt naming the digest", err)
		}
		assertNoStaging(t, dst)
	})
}

// TestPushOfFileDifferingFromManifest: a checkpoint whose page image
// changed after it was published (bit rot, a stray write) is not tagged in
// the registry: the push fails as a corrupt checkpoint, naming the block
// that differs, and no pull can find it. (A pull checks the blocks too:
// TestFileHashesBlocks.)
func TestPushOfFileDifferingFromManifest(t *testing.T) {
	reg := startRegistry(t)
	ctx := context.Background()
	remote := reg.open(t)
	src := publishTestCheckpoint(t, openStore(t), randomBytes(t, 2*storage.BlockSize+1), nil)
	f, err := os.OpenFile(filepath.Join(src.Dir, "checkpoint", "pages-1.img"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteAt([]byte("rot"), storage.BlockSize+100)
	if err := errors.Join(err, f.Close()); err != nil {
		t.Fatal(err)
	}
	_, err = remote.Push(ctx, src, Options{})
	if !errors.Is(err, storage.ErrCorrupt) || !strings.Contains(err.Error(), "block 1") {
		t.Fatalf("push of a page image that differs from its manifest in block 1: %v, want ErrCorrupt naming block 1", err)
	}
	if tag, err := remote.Newest(ctx, testKey); err == nil {
		t.Fatalf("the registry has %s after a refused push", tag)
	}
}

// TestPullResumes: a pull cut short keeps its whole chunks, and the next
// pull of the same checkpoint fetches only the rest.
func TestPullResumes(t *testing.T) {
	reg := startRegistry(t)
	ctx := context.Background()
	remote := reg.open(t)
	// 128 MiB: however the chunks fall (at most MaxChunk each), some remain
	// once 32 MiB are in.
	src := publishTestCheckpoint(t, openStore(t), randomBytes(t, 128*mib), nil)
	if _, err := remote.Push(ctx, src, Options{}); err != nil {
		t.Fatal(err)
	}
	dst := openStore(t)
	cut, cancel := context.WithCancel(ctx)
	_, err := remote.Pull(cut, src.Name, dst, Options{Parallel: 1, Progress: func(done, total int64) {
		if done >= 32*mib {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cut pull: %v", err)
	}
	if _, err := dst.Get(src.Name); err == nil {
		t.Fatal("a cut pull left a visible checkpoint")
	}
	var first int64 = -1
	got, err := remote.Pull(ctx, src.Name, dst, Options{Progress: func(done, total int64) {
		if first < 0 {
			first = done
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if first < 32*mib {
		t.Fatalf("resumed pull started from %d bytes, want the %d the cut pull kept", first, 32*mib)
	}
	if err := got.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
	assertNoStaging(t, dst)
}

const mib = 1 << 20

// tamperBlobs flips a byte in every blob of at least size bytes the registry holds.
func tamperBlobs(t *testing.T, root string, size int64) {
	n := 0
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Name() == "data" && fi.Size() >= size {
			b, _ := os.ReadFile(p)
			b[len(b)/2] ^= 0xff
			os.WriteFile(p, b, 0o644)
			n++
		}
		return nil
	})
	if n == 0 {
		t.Fatalf("no blob of %d bytes or more under %s", size, root)
	}
}

func assertNoStaging(t *testing.T, s *storage.Store) {
	t.Helper()
	entries, _ := os.ReadDir(s.Root)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("store keeps %s after a pull", e.Name())
		}
	}
}
