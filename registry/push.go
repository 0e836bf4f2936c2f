package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/restic/chunker"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// Progress reports a transfer: bytes moved (or found already there) of the
// total.
type Progress func(done, total int64)

// Options tune a transfer.
type Options struct {
	// Parallel is how many blobs move at once (DefaultParallel if 0).
	Parallel int
	// Progress, if set, is called as bytes move (from several goroutines,
	// one at a time).
	Progress Progress
}

// DefaultParallel is enough concurrent blob transfers to fill a fast link
// to a registry without drowning a small one.
const DefaultParallel = 8

// PushResult is what a push moved.
type PushResult struct {
	Ref      string // host/repository:tag
	Digest   digest.Digest
	Bytes    int64 // the checkpoint's payload
	Uploaded int64 // bytes of blobs the registry did not have yet
	Blobs    int
}

// Push uploads checkpoint c as an artifact tagged with its name. Blobs the
// registry already holds (chunks unchanged since an earlier checkpoint of
// the same workload) are not uploaded again. The tag is written last, so a
// reader never sees a manifest whose blobs are missing.
func (r *Remote) Push(ctx context.Context, c *storage.Checkpoint, o Options) (*PushResult, error) {
	repo, err := r.pushHost()
	if err != nil {
		return nil, err
	}
	if c.Manifest == nil || c.RawManifest() == nil {
		return nil, fmt.Errorf("push %s: no readable manifest: %v", c.Name, c.Err)
	}
	blobs, err := checkpointBlobs(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", c.Name, err)
	}
	res := &PushResult{Ref: r.refTo(c.Name), Bytes: c.Size(), Blobs: len(blobs.layers) + 1}
	if res.Uploaded, err = uploadBlobs(ctx, repo, blobs, o); err != nil {
		return nil, fmt.Errorf("push %s to %s: %w", c.Name, r.Name, err)
	}
	im := ocispec.Manifest{
		Versioned:    specsVersion,
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactType,
		Config:       blobs.config.desc,
		Annotations:  annotations(c.Manifest, blobs.signed),
	}
	for _, l := range blobs.layers {
		im.Layers = append(im.Layers, l.desc)
	}
	raw, err := json.Marshal(im)
	if err != nil {
		return nil, err
	}
	desc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, raw)
	if err := repo.PushReference(ctx, desc, bytes.NewReader(raw), c.Name); err != nil {
		return nil, fmt.Errorf("push %s: manifest: %w", res.Ref, err)
	}
	res.Digest = desc.Digest
	return res, nil
}

// blob is one blob of the artifact and where its bytes are.
type blob struct {
	desc ocispec.Descriptor
	// data holds small blobs (manifest, signature); file, off for chunks.
	data []byte
	file string
	off  int64
}

func (b blob) open() (io.ReadCloser, error) {
	if b.file == "" {
		return io.NopCloser(bytes.NewReader(b.data)), nil
	}
	f, err := os.Open(b.file)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, b.off, b.desc.Size), f}, nil
}

type blobSet struct {
	config blob
	layers []blob
	signed bool
}

// checkpointBlobs cuts c into the artifact's blobs, hashing every chunk
// (the manifest's per-file SHA-256 covers files, not chunks).
func checkpointBlobs(ctx context.Context, c *storage.Checkpoint) (*blobSet, error) {
	raw := c.RawManifest()
	set := &blobSet{config: blob{desc: content.NewDescriptorFromBytes(ConfigMediaType, raw), data: raw}}
	sig, err := c.Signature()
	switch {
	case err == nil:
		set.signed = true
		set.layers = append(set.layers, blob{desc: content.NewDescriptorFromBytes(SignatureMediaType, sig), data: sig})
	case !errors.Is(err, storage.ErrUnsigned):
		return nil, err
	}
	for _, f := range c.Manifest.Files {
		chunks, err := hashChunks(ctx, filepath.Join(c.Dir, filepath.FromSlash(f.Path)), f)
		if err != nil {
			return nil, err
		}
		set.layers = append(set.layers, chunks...)
	}
	return set, nil
}

// hashChunks cuts one file where its content says (see MinChunk) and
// hashes each piece; an empty file is one empty chunk, so every listed file
// appears in the artifact.
func hashChunks(ctx context.Context, path string, f storage.File) ([]blob, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	if f.Size == 0 {
		return []blob{{desc: chunkDescriptor(f.Path, 0, 0, digest.SHA256.FromBytes(nil)), file: path}}, nil
	}
	cut := chunker.NewWithBoundaries(io.LimitReader(fh, f.Size), chunkPolynomial, MinChunk, MaxChunk)
	cut.SetAverageBits(chunkAverageBits)
	buf := make([]byte, MaxChunk)
	var out []blob
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c, err := cut.Next(buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.Path, err)
		}
		off, n := int64(c.Start), int64(c.Length)
		out = append(out, blob{desc: chunkDescriptor(f.Path, off, n, digest.SHA256.FromBytes(c.Data)), file: path, off: off})
	}
	return out, nil
}

// uploadBlobs pushes every blob the registry lacks, Parallel at a time,
// and returns the bytes uploaded. Chunks repeated within the checkpoint
// (zero pages) go up once.
func uploadBlobs(ctx context.Context, repo *remote.Repository, set *blobSet, o Options) (int64, error) {
	all := append([]blob{set.config}, set.layers...)
	var total int64
	for _, b := range all {
		total += b.desc.Size
	}
	report := newMeter(o.Progress, total).add
	var uploaded atomic.Int64
	seen := make(map[digest.Digest]bool)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel(o))
	for _, b := range all {
		if seen[b.desc.Digest] {
			report(b.desc.Size)
			continue
		}
		seen[b.desc.Digest] = true
		g.Go(func() error {
			n, err := uploadBlob(gctx, repo, b)
			uploaded.Add(n)
			report(b.desc.Size)
			return err
		})
	}
	err := g.Wait()
	return uploaded.Load(), err
}

// uploadBlob pushes b unless the registry has it; it returns the bytes sent.
func uploadBlob(ctx context.Context, repo *remote.Repository, b blob) (int64, error) {
	have, err := repo.Exists(ctx, b.desc)
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", b.desc.Digest, err)
	}
	if have {
		return 0, nil
	}
	rc, err := b.open()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	if err := repo.Push(ctx, b.desc, rc); err != nil {
		return 0, fmt.Errorf("blob %s (%s): %w", b.desc.Digest, blobName(b.desc), err)
	}
	return b.desc.Size, nil
}

// meter adds up the bytes of concurrent transfers for one Progress.
type meter struct {
	mu          sync.Mutex
	done, total int64
	progress    Progress
}

func newMeter(p Progress, total int64) *meter { return &meter{progress: p, total: total} }

// add counts n more bytes and reports, one report at a time.
func (m *meter) add(n int64) {
	if m.progress == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.done += n
	m.progress(m.done, m.total)
}

func parallel(o Options) int {
	if o.Parallel > 0 {
		return o.Parallel
	}
	return DefaultParallel
}

// blobName says which part of a checkpoint a blob is, for messages.
func blobName(d ocispec.Descriptor) string {
	switch d.MediaType {
	case ConfigMediaType:
		return storage.ManifestFile
	case SignatureMediaType:
		return storage.SignatureFile
	}
	return fmt.Sprintf("%s at %s", d.Annotations[AnnotationFile], d.Annotations[AnnotationOffset])
}
