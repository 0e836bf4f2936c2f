package registry

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// journalName is the file, inside a pull's staging directory, that lists
// the chunks already written, so a pull interrupted by a crash, a timeout
// or a dead registry resumes with the chunks it lacks. Accept would refuse
// it as a stray file; Pull removes it first.
const journalName = ".pulled-chunks"

// Pull downloads the checkpoint tagged tag into store. Every blob is checked
// against its digest as it arrives, and the whole copy against the
// checkpoint's manifest (per-file SHA-256) before it is renamed into the
// store: only an intact checkpoint ever becomes visible. A pull interrupted
// earlier resumes; a concurrent pull of the same checkpoint into the same
// store is waited for rather than repeated. If the store already holds the
// checkpoint, nothing is downloaded.
func (r *Remote) Pull(ctx context.Context, tag string, store *storage.Store, o Options) (*storage.Checkpoint, error) {
	ref := r.refTo(tag)
	im, imDesc, err := r.fetchManifest(ctx, tag)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	raw, err := r.fetchSmall(ctx, im.Config)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %s: %w", ref, storage.ManifestFile, err)
	}
	m, err := storage.DecodeManifest(raw)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	if m.Name != tag {
		return nil, fmt.Errorf("pull %s: the artifact carries checkpoint %s", ref, m.Name)
	}
	a, err := parseArtifact(im, m)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	c, err := r.receive(ctx, store, imDesc.Digest.Encoded(), a, raw, m, o)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	return c, nil
}

// fetchManifest resolves tag and reads its image manifest, verified.
func (r *Remote) fetchManifest(ctx context.Context, tag string) (*ocispec.Manifest, ocispec.Descriptor, error) {
	type got struct {
		desc ocispec.Descriptor
		raw  []byte
	}
	g, err := firstPull(r, func(repo *remote.Repository) (got, error) {
		desc, rc, err := repo.FetchReference(ctx, tag)
		if err != nil {
			return got{}, err
		}
		defer rc.Close()
		if desc.Size > maxManifestBytes {
			return got{}, fmt.Errorf("manifest of %d bytes, more than %d", desc.Size, maxManifestBytes)
		}
		raw, err := content.ReadAll(rc, desc)
		return got{desc, raw}, err
	})
	if err != nil {
		return nil, g.desc, err
	}
	im := new(ocispec.Manifest)
	if err := json.Unmarshal(g.raw, im); err != nil {
		return nil, g.desc, fmt.Errorf("image manifest: %w", err)
	}
	return im, g.desc, nil
}

// fetchSmall reads a small blob (manifest.json, manifest.sig), verified.
func (r *Remote) fetchSmall(ctx context.Context, d ocispec.Descriptor) ([]byte, error) {
	if d.Size > maxManifestBytes {
		return nil, fmt.Errorf("blob of %d bytes, more than %d", d.Size, maxManifestBytes)
	}
	return firstPull(r, func(repo *remote.Repository) ([]byte, error) {
		return content.FetchAll(ctx, repo, d)
	})
}

// receive writes the artifact's files into a staging directory of store
// (resuming one an earlier pull left), then manifest.json and manifest.sig,
// and has the store accept it.
func (r *Remote) receive(ctx context.Context, store *storage.Store, id string, a *artifact, raw []byte, m *storage.Manifest, o Options) (*storage.Checkpoint, error) {
	st, landed, err := stage(ctx, store, id, m.Name, raw)
	if err != nil || landed != nil {
		return landed, err
	}
	found, err := r.fill(ctx, st.Dir(), a, raw, m, o)
	if err != nil {
		if resumable(err) {
			st.Suspend()
		} else {
			st.Abort()
		}
		return nil, err
	}
	return st.AcceptHashed(ctx, m.Name, found)
}

// resumable says whether a failed pull keeps what it wrote for the next
// one: yes when the registry or the deadline failed it, no when the copy
// is corrupt: a blob's bytes did not match their digest (the registry
// serves something else now; the next pull starts clean) or a file's block
// did not match the manifest (the same bytes would fail again).
func resumable(err error) bool {
	return !errors.Is(err, storage.ErrCorrupt)
}

// fill writes the artifact's files into dir, then manifest.json and
// manifest.sig, removes the journal, and returns each file's record as
// hashed (fileHashes).
func (r *Remote) fill(ctx context.Context, dir string, a *artifact, raw []byte, m *storage.Manifest, o Options) (map[string]storage.File, error) {
	found, err := r.fetchChunks(ctx, dir, a, m, o)
	if err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, storage.ManifestFile), raw); err != nil {
		return nil, err
	}
	if a.signature != nil {
		sig, err := r.fetchSmall(ctx, *a.signature)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", storage.SignatureFile, err)
		}
		if err := writeFile(filepath.Join(dir, storage.SignatureFile), sig); err != nil {
			return nil, err
		}
	}
	if err := os.Remove(filepath.Join(dir, journalName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return found, nil
}

// fetchChunks creates every file at its size and fills it with the chunks
// the journal does not list, Parallel at a time, hashing the files as
// their chunks land; it returns the files' records as hashed, by path.
func (r *Remote) fetchChunks(ctx context.Context, dir string, a *artifact, m *storage.Manifest, o Options) (map[string]storage.File, error) {
	for _, f := range m.Files {
		if err := createSized(filepath.Join(dir, filepath.FromSlash(f.Path)), f.Size); err != nil {
			return nil, err
		}
	}
	hashes, err := newFileHashes(dir, m.Files)
	if err != nil {
		return nil, err
	}
	defer hashes.close()
	journal, done, err := openJournal(filepath.Join(dir, journalName))
	if err != nil {
		return nil, err
	}
	defer journal.Close()
	var total int64
	for _, c := range a.chunks {
		total += c.desc.Size
	}
	advance := newMeter(o.Progress, total).add
	var todo []chunk
	var kept int64
	for _, c := range a.chunks {
		if done[journalLine(c)] {
			kept += c.desc.Size
			if err := hashes.landed(c); err != nil {
				return nil, err
			}
		} else {
			todo = append(todo, c)
		}
	}
	if kept > 0 {
		advance(kept) // what an interrupted pull already wrote, in one report
	}
	var journalMu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel(o))
	for _, c := range todo {
		g.Go(func() error {
			if err := r.fetchChunk(gctx, dir, c); err != nil {
				return err
			}
			journalMu.Lock()
			_, err := journal.WriteString(journalLine(c) + "\n")
			journalMu.Unlock()
			advance(c.desc.Size)
			return errors.Join(err, hashes.landed(c))
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return hashes.records()
}

// fetchChunk downloads one chunk into its file at its offset, verifying its
// digest; a chunk whose bytes do not match is an error, never kept.
func (r *Remote) fetchChunk(ctx context.Context, dir string, c chunk) error {
	_, err := firstPull(r, func(repo *remote.Repository) (struct{}, error) {
		f, err := os.OpenFile(filepath.Join(dir, filepath.FromSlash(c.file)), os.O_WRONLY, 0)
		if err != nil {
			return struct{}{}, err
		}
		defer f.Close()
		rc, err := repo.Fetch(ctx, c.desc)
		if err != nil {
			return struct{}{}, err
		}
		defer rc.Close()
		vr := content.NewVerifyReader(rc, c.desc)
		if err := writeInBlocks(f, c.offset, vr); err != nil {
			return struct{}{}, err
		}
		if err := vr.Verify(); err != nil {
			return struct{}{}, err
		}
		startWriteback(f, c.offset, c.desc.Size)
		return struct{}{}, nil
	})
	if errors.Is(err, content.ErrMismatchedDigest) || errors.Is(err, content.ErrTrailingData) {
		// The registry served other bytes than the artifact names.
		return fmt.Errorf("%s at %d: %w: %w", c.file, c.offset, storage.ErrCorrupt, err)
	}
	if err != nil {
		return fmt.Errorf("%s at %d: %w", c.file, c.offset, err)
	}
	return nil
}

// startWriteback asks the kernel to start writing a landed chunk to disk
// now. Without it, a machine with much memory (the GPU machines: 125 GiB,
// dirty pages written back from 10% of it) keeps a pull of several GB
// dirty in its page cache and writes it only when the store syncs the
// copy before accepting it: the download and the disk writes run one
// after the other, where a pull's floor is the slower of the two, not
// their sum. It is a hint: the store's fsync still makes the copy
// durable, so a file system without sync_file_range loses only the
// overlap.
func startWriteback(f *os.File, offset, size int64) {
	_ = unix.SyncFileRange(int(f.Fd()), offset, size, unix.SYNC_FILE_RANGE_WRITE)
}

// writeBlock is how much of a chunk one write puts into its file.
const writeBlock = 1 << 20

// writeInBlocks copies r into f from offset on in writeBlock writes. A
// TLS connection hands out at most 16 KiB a read, and io.Copy writes each
// read through: one pwrite per 16 KiB cost a pull on a 2-core machine a
// third of its CPU time in the kernel.
func writeInBlocks(f *os.File, offset int64, r io.Reader) error {
	buf := make([]byte, writeBlock)
	for {
		n, err := readBlock(r, buf)
		if n > 0 {
			if _, werr := f.WriteAt(buf[:n], offset); werr != nil {
				return werr
			}
			offset += int64(n)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// readBlock reads from r until buf is full or r fails, and returns r's
// error as it was (io.ReadFull would turn a connection cut mid-body into
// something a digest check then reports as a mismatch).
func readBlock(r io.Reader, buf []byte) (n int, err error) {
	for n < len(buf) && err == nil {
		var m int
		m, err = r.Read(buf[n:])
		n += m
	}
	return n, err
}

// journalLine identifies a chunk written in full.
func journalLine(c chunk) string {
	return c.file + "\t" + strconv.FormatInt(c.offset, 10) + "\t" + c.desc.Digest.String()
}

// openJournal opens a pull's journal for appending and returns the chunks
// it lists. A torn last line (a crash mid-write) matches no chunk.
func openJournal(path string) (*os.File, map[string]bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	done := make(map[string]bool)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		done[sc.Text()] = true
	}
	if err := sc.Err(); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, done, nil
}

// createSized creates path (and its directories) with size bytes, keeping
// what an interrupted pull wrote into it.
func createSized(path string, size int64) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	return errors.Join(f.Truncate(size), f.Close())
}

func writeFile(path string, data []byte) error {
	return os.WriteFile(path, data, 0o600)
}

// stage opens the store's staging directory for the pull id, unless the
// store already holds the checkpoint (manifest raw). While another pull of
// the same checkpoint holds the directory, stage waits: that pull's
// checkpoint is returned when it lands, and if it fails, this pull takes
// over (resuming its chunks).
func stage(ctx context.Context, store *storage.Store, id, name string, raw []byte) (*storage.Staging, *storage.Checkpoint, error) {
	for {
		if c, err := store.Get(name); err == nil && bytes.Equal(c.RawManifest(), raw) {
			return nil, c, nil
		}
		st, err := store.Receive(id)
		if !errors.Is(err, storage.ErrBusy) {
			return st, nil, err
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("%w; gave up waiting for it: %w", err, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
