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
// reader never sees a manifest whose blobs are missing, and only once c's
// files verified against its manifest (hashed while the upload runs).
func (r *Remote) Push(ctx context.Context, c *storage.Checkpoint, o Options) (*PushResult, error) {
	repo, err := r.pushHost()
	if err != nil {
		return nil, err
	}
	if c.Manifest == nil || c.RawManifest() == nil {
		return nil, fmt.Errorf("push %s: no readable manifest: %v", c.Name, c.Err)
	}
	res := &PushResult{Ref: r.refTo(c.Name), Bytes: c.Size()}
	vctx, cancel := context.WithCancel(ctx)
	defer cancel()
	verified := make(chan error, 1)
	go func() { verified <- c.Verify(vctx, nil) }()
	blobs, uploaded, err := uploadCheckpoint(ctx, repo, c, o)
	if err != nil {
		cancel()
		<-verified
		return nil, fmt.Errorf("push %s to %s: %w", c.Name, r.Name, err)
	}
	// Files that no longer match their manifest (a disk's bit rot, a
	// stray write) would fail every pull; the tag is not written for them.
	if err := <-verified; err != nil {
		return nil, fmt.Errorf("push %s to %s: %w", c.Name, r.Name, err)
	}
	res.Uploaded, res.Blobs = uploaded, len(blobs.layers)+1
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

func (b *blob) open() (io.ReadCloser, error) {
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

// blobSet is the artifact's blobs in manifest order.
type blobSet struct {
	config *blob
	layers []*blob
	signed bool
}

// uploadCheckpoint cuts c into the artifact's blobs and pushes those the
// registry lacks, Parallel at a time, while the files are still being
// cut: cutting is one pass over each file in order, so the uploads ride
// along with it instead of waiting for the whole checkpoint to be cut
// and hashed first. It returns the blobs in manifest order and the bytes
// uploaded.
func uploadCheckpoint(ctx context.Context, repo *remote.Repository, c *storage.Checkpoint, o Options) (*blobSet, int64, error) {
	raw := c.RawManifest()
	set := &blobSet{config: &blob{desc: content.NewDescriptorFromBytes(ConfigMediaType, raw), data: raw}}
	total := int64(len(raw)) + c.Size()
	sig, err := c.Signature()
	switch {
	case err == nil:
		set.signed = true
		set.layers = append(set.layers, &blob{desc: content.NewDescriptorFromBytes(SignatureMediaType, sig), data: sig})
		total += int64(len(sig))
	case !errors.Is(err, storage.ErrUnsigned):
		return nil, 0, err
	}
	up := newUploader(ctx, repo, o, total)
	up.send(set.config)
	for _, l := range set.layers {
		up.send(l)
	}
	for _, f := range c.Manifest.Files {
		path := filepath.Join(c.Dir, filepath.FromSlash(f.Path))
		err := cutFile(up.ctx, path, f, func(b *blob) {
			set.layers = append(set.layers, b)
			up.send(b)
		})
		if err != nil {
			if _, upErr := up.wait(); upErr != nil {
				return nil, 0, upErr // it cancelled the cut
			}
			return nil, 0, err
		}
	}
	uploaded, err := up.wait()
	return set, uploaded, err
}

// cutFile cuts one file where its content says (see MinChunk) and hands
// each piece to emit, its digest still to be computed; an empty file is
// one empty chunk, so every listed file appears in the artifact.
func cutFile(ctx context.Context, path string, f storage.File, emit func(*blob)) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	if f.Size == 0 {
		emit(&blob{desc: chunkDescriptor(f.Path, 0, 0, digest.SHA256.FromBytes(nil)), file: path})
		return nil
	}
	cut := chunker.NewWithBoundaries(io.LimitReader(fh, f.Size), chunkPolynomial, MinChunk, MaxChunk)
	cut.SetAverageBits(chunkAverageBits)
	buf := make([]byte, MaxChunk)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		c, err := cut.Next(buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", f.Path, err)
		}
		off, n := int64(c.Start), int64(c.Length)
		emit(&blob{desc: chunkDescriptor(f.Path, off, n, ""), file: path, off: off})
	}
}

// uploader pushes blobs, Parallel at a time, each in a goroutine that
// first hashes a chunk whose digest is not known yet (reading it back, from
// the page cache, where the cutter just read it). Chunks repeated within
// the checkpoint (zero pages) go up once.
type uploader struct {
	ctx      context.Context
	g        *errgroup.Group
	repo     *remote.Repository
	report   func(int64)
	uploaded atomic.Int64
	mu       sync.Mutex
	seen     map[digest.Digest]bool
}

func newUploader(ctx context.Context, repo *remote.Repository, o Options, total int64) *uploader {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel(o))
	return &uploader{ctx: gctx, g: g, repo: repo, report: newMeter(o.Progress, total).add, seen: map[digest.Digest]bool{}}
}

// send schedules b, waiting while Parallel blobs are under way.
func (u *uploader) send(b *blob) {
	u.g.Go(func() error {
		if b.desc.Digest == "" {
			d, err := hashSection(b.file, b.off, b.desc.Size)
			if err != nil {
				return fmt.Errorf("%s: %w", blobName(b.desc), err)
			}
			b.desc.Digest = d
		}
		if u.firstOf(b.desc.Digest) {
			n, err := uploadBlob(u.ctx, u.repo, b)
			u.uploaded.Add(n)
			if err != nil {
				return err
			}
		}
		u.report(b.desc.Size)
		return nil
	})
}

// firstOf says whether d is seen for the first time in this push.
func (u *uploader) firstOf(d digest.Digest) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.seen[d] {
		return false
	}
	u.seen[d] = true
	return true
}

// wait waits for every blob sent and returns the bytes uploaded.
func (u *uploader) wait() (int64, error) {
	err := u.g.Wait()
	return u.uploaded.Load(), err
}

// hashSection is the SHA-256 of size bytes of path from off on.
func hashSection(path string, off, size int64) (digest.Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return digest.SHA256.FromReader(io.NewSectionReader(f, off, size))
}

// uploadBlob pushes b unless the registry has it; it returns the bytes sent.
func uploadBlob(ctx context.Context, repo *remote.Repository, b *blob) (int64, error) {
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
