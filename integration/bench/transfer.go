package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/internal/testregistry"
	"github.com/gpusnap/containerd-shim-snapshot-v2/registry"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// transferResult is one run of the transfer benchmark.
type transferResult struct {
	imageBytes int64
	publish    time.Duration // Publish of the synthetic checkpoint: hash every file, fsync
	push       time.Duration
	uploaded   int64
	*pullRuns
}

// transferBench measures a registry's transfers alone, without containerd
// or a workload, so it runs on any machine with the distribution registry
// (the GPU machine's bundle carries one): a checkpoint whose page image is
// sizeMB of random bytes (what GPU weights look like to a chunker) is
// pushed to distribution on loopback (TLS, htpasswd), then pulled as
// measurePulls says, against the floor measured in the same run.
func transferBench(dir string, sizeMB int) (*transferResult, error) {
	reg, stop, err := testregistry.Run(filepath.Join(dir, "registry"))
	if err != nil {
		return nil, err
	}
	defer stop()
	src, publish, err := syntheticCheckpoint(filepath.Join(dir, "store-source"), int64(sizeMB)<<20)
	if err != nil {
		return nil, err
	}
	repo := reg.Host + "/checkpoints/transfer"
	ctx := context.Background()
	remote, err := registry.Open(ctx, repo, registry.Config{HostsDir: reg.HostsDir, Credentials: reg.Credentials})
	if err != nil {
		return nil, err
	}
	r := &transferResult{imageBytes: src.Size(), publish: publish}
	start := time.Now()
	pushed, err := remote.Push(ctx, src, registry.Options{})
	if err != nil {
		return nil, err
	}
	r.push, r.uploaded = time.Since(start), pushed.Uploaded
	if err := os.RemoveAll(src.Dir); err != nil {
		return nil, err
	}
	r.pullRuns, err = measurePulls(dir, repo, reg)
	return r, err
}

// syntheticCheckpoint publishes, in a store at root, a checkpoint laid out
// as CRIU lays out one process: a page image of size random bytes and a
// small image beside it. It returns how long Publish took, with the page
// image written but not yet synced, as after a dump.
func syntheticCheckpoint(root string, size int64) (*storage.Checkpoint, time.Duration, error) {
	store, err := storage.Open(root)
	if err != nil {
		return nil, 0, err
	}
	st, err := store.Stage()
	if err != nil {
		return nil, 0, err
	}
	dir := filepath.Join(st.Dir(), "checkpoint")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, 0, err
	}
	if err := writeRandom(filepath.Join(dir, "pages-1.img"), size); err != nil {
		return nil, 0, err
	}
	if err := os.WriteFile(filepath.Join(dir, "pagemap-1.img"), []byte("pagemap"), 0o600); err != nil {
		return nil, 0, err
	}
	key := sha256.Sum256([]byte("bench-transfer"))
	start := time.Now()
	c, err := st.Publish(&storage.Manifest{Key: hex.EncodeToString(key[:])})
	return c, time.Since(start), err
}

// writeRandom writes size bytes from a fast seeded generator to path.
func writeRandom(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, 16<<20)
	for left := size; left > 0; left -= int64(len(buf)) {
		b := buf[:min(left, int64(len(buf)))]
		rng.Read(b)
		if _, err := f.Write(b); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

func (r *transferResult) report(sizeMB int) {
	host, _ := os.Hostname()
	fmt.Printf("bench-transfer: a %d MiB page image through distribution on loopback (TLS, htpasswd); host %s, %d cores, %s\n",
		sizeMB, host, runtime.NumCPU(), time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("  checkpoint image: %.2f GB, published (every file hashed, then synced) in %s\n", float64(r.imageBytes)/1e9, r.publish.Round(time.Millisecond))
	fmt.Printf("  push: %s, %.2f GB uploaded, %.2f GB/s\n", r.push.Round(time.Millisecond), float64(r.uploaded)/1e9, float64(r.uploaded)/r.push.Seconds()/1e9)
	r.pullRuns.report(r.imageBytes)
}

// writeJSON writes the run's raw results for the benchmark report.
func (r *transferResult) writeJSON(path string, sizeMB int) error {
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	doc := map[string]any{
		"kind": "transfer", "date": time.Now().UTC().Format(time.RFC3339), "host": host,
		"kernel": strings.TrimSpace(string(kernel)), "cpus": runtime.NumCPU(),
		"command":     fmt.Sprintf("go run ./integration/bench -mode transfer -size-mb %d", sizeMB),
		"image_bytes": r.imageBytes, "publish_s": r.publish.Seconds(), "push_s": r.push.Seconds(), "uploaded_bytes": r.uploaded,
	}
	maps.Copy(doc, r.pullRuns.fields())
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
