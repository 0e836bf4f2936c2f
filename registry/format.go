// Package registry keeps checkpoints in OCI registries, so that a node that
// has never seen a checkpoint can restore it and a fleet moves checkpoints
// through the registry, mirrors and caches it already runs for images.
//
// A checkpoint is one OCI image manifest (docs/registry.md):
//   - artifactType ArtifactType;
//   - config: the checkpoint's manifest.json, byte for byte (ConfigMediaType),
//     so its signature still verifies after the trip;
//   - layers: manifest.sig if signed (SignatureMediaType), then every file
//     the manifest lists, cut into chunks (ChunkMediaType) annotated with the
//     file's path and the chunk's offset, so pulls run in parallel and a new
//     checkpoint of the same workload uploads only the chunks that changed;
//   - annotations: name, identity key, node fingerprint, GPUs, driver and
//     whether it is signed, so listing needs no config download;
//   - tag: the checkpoint's name (<key prefix>-g<generation>), so the newest
//     checkpoint of an identity is found by listing tags.
package registry

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/restic/chunker"

	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// Media types of the checkpoint artifact.
const (
	ArtifactType       = "application/vnd.gpusnap.checkpoint.v1"
	ConfigMediaType    = "application/vnd.gpusnap.checkpoint.manifest.v1+json"
	SignatureMediaType = "application/vnd.gpusnap.checkpoint.signature.v1"
	ChunkMediaType     = "application/vnd.gpusnap.checkpoint.chunk.v1"
)

// Annotations of the checkpoint artifact and its chunks.
const (
	AnnotationName   = "io.gpusnap.checkpoint.name"
	AnnotationKey    = "io.gpusnap.checkpoint.key"
	AnnotationNode   = "io.gpusnap.checkpoint.node" // JSON of storage.Fingerprint
	AnnotationGPUs   = "io.gpusnap.checkpoint.gpus" // products, comma separated
	AnnotationDriver = "io.gpusnap.checkpoint.driver"
	AnnotationSigned = "io.gpusnap.checkpoint.signed" // "true" when manifest.sig is a layer
	AnnotationFile   = "io.gpusnap.checkpoint.file"   // on a chunk: the file's path in the checkpoint
	AnnotationOffset = "io.gpusnap.checkpoint.offset" // on a chunk: its offset in that file
)

// Files are cut where their content says (content-defined chunking,
// restic/chunker: a Rabin fingerprint over a 64-byte window), so that the
// chunks of pages that did not change between two checkpoints stay
// identical even where pages before them came or went and moved them in
// the page image: with fixed 16 MiB chunks, the second checkpoint of a
// running workload re-uploaded 100% of its bytes (docs/registry.md). Chunks
// are MinChunk to MaxChunk bytes, 2^chunkAverageBits (16 MiB) on average.
const (
	MinChunk         = 4 << 20
	MaxChunk         = 64 << 20
	chunkAverageBits = 24
)

// chunkPolynomial is the fingerprint's irreducible polynomial. It is part
// of the format: every pusher must cut alike for chunks to be shared.
const chunkPolynomial = chunker.Pol(0x3DA3358B4DC173)

// specsVersion is the image manifest schema version, 2.
var specsVersion = specs.Versioned{SchemaVersion: 2}

// maxManifestBytes bounds what a pull reads as an image manifest (the
// distribution registry refuses manifests over 4 MiB too).
const maxManifestBytes = 4 << 20

// chunk is one layer's place in a checkpoint file.
type chunk struct {
	desc   ocispec.Descriptor
	file   string // storage.File.Path
	offset int64
}

// annotations are the artifact's: enough to list and match a checkpoint
// without downloading its manifest.json.
func annotations(m *storage.Manifest, signed bool) map[string]string {
	node, _ := json.Marshal(m.Node)
	a := map[string]string{
		AnnotationName:            m.Name,
		AnnotationKey:             m.Key,
		AnnotationNode:            string(node),
		ocispec.AnnotationCreated: m.Created.UTC().Format(time.RFC3339),
	}
	var gpus []string
	for _, g := range m.GPUs {
		gpus = append(gpus, g.Product)
	}
	if len(gpus) > 0 {
		a[AnnotationGPUs] = strings.Join(gpus, ",")
	}
	if m.DriverVersion != "" {
		a[AnnotationDriver] = m.DriverVersion
	}
	if signed {
		a[AnnotationSigned] = "true"
	}
	return a
}

// chunkDescriptor describes a chunk layer of file at offset.
func chunkDescriptor(file string, offset, size int64, d digest.Digest) ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType: ChunkMediaType,
		Digest:    d,
		Size:      size,
		Annotations: map[string]string{
			AnnotationFile:   file,
			AnnotationOffset: strconv.FormatInt(offset, 10),
		},
	}
}

// artifact is a checkpoint's image manifest, checked against the
// checkpoint manifest it carries.
type artifact struct {
	config    ocispec.Descriptor
	signature *ocispec.Descriptor
	chunks    []chunk
}

// parseArtifact checks an image manifest before anything is downloaded:
// it must be a checkpoint artifact, and its chunks must tile exactly the
// files that m (its config, already verified against config's digest)
// lists. A chunk naming any other path, a gap, an overlap or a stray layer
// is refused, so a pull writes nothing a manifest did not promise.
func parseArtifact(im *ocispec.Manifest, m *storage.Manifest) (*artifact, error) {
	if im.ArtifactType != ArtifactType || im.Config.MediaType != ConfigMediaType {
		return nil, fmt.Errorf("not a checkpoint: artifactType %q, config %q (want %q, %q)",
			im.ArtifactType, im.Config.MediaType, ArtifactType, ConfigMediaType)
	}
	a := &artifact{config: im.Config}
	sizes := make(map[string]int64, len(m.Files))
	for _, f := range m.Files {
		sizes[f.Path] = f.Size
	}
	covered := make(map[string]int64, len(m.Files))
	for i, l := range im.Layers {
		switch {
		case l.MediaType == SignatureMediaType && a.signature == nil:
			a.signature = &im.Layers[i]
		case l.MediaType == ChunkMediaType:
			c, err := parseChunk(l, sizes)
			if err != nil {
				return nil, fmt.Errorf("layer %d: %w", i, err)
			}
			if c.offset != covered[c.file] {
				return nil, fmt.Errorf("layer %d: %s at offset %d, want %d (chunks must follow each other)", i, c.file, c.offset, covered[c.file])
			}
			covered[c.file] += l.Size
			a.chunks = append(a.chunks, c)
		default:
			return nil, fmt.Errorf("layer %d: unexpected media type %q", i, l.MediaType)
		}
	}
	for _, f := range m.Files {
		if covered[f.Path] != f.Size {
			return nil, fmt.Errorf("file %s: chunks cover %d of its %d bytes", f.Path, covered[f.Path], f.Size)
		}
	}
	return a, nil
}

// parseChunk reads a chunk layer's annotations against the files' sizes.
func parseChunk(l ocispec.Descriptor, sizes map[string]int64) (chunk, error) {
	file := l.Annotations[AnnotationFile]
	size, listed := sizes[file]
	if !listed {
		return chunk{}, fmt.Errorf("chunk of %q, a path the checkpoint's manifest does not list", file)
	}
	offset, err := strconv.ParseInt(l.Annotations[AnnotationOffset], 10, 64)
	if err != nil || offset < 0 || l.Size < 0 || offset+l.Size > size {
		return chunk{}, fmt.Errorf("chunk of %s: offset %q, size %d outside the file's %d bytes",
			file, l.Annotations[AnnotationOffset], l.Size, size)
	}
	if err := l.Digest.Validate(); err != nil {
		return chunk{}, fmt.Errorf("chunk of %s at %d: %w", file, offset, err)
	}
	return chunk{desc: l, file: file, offset: offset}, nil
}

// candidateTags picks, among tags, the names of checkpoints of key (prefix
// match, the full key is checked on the manifest) from the highest
// generation down.
func candidateTags(tags []string, key string) []string {
	prefix := key[:min(len(key), 16)] + "-g"
	var out []string
	for _, t := range tags {
		if strings.HasPrefix(t, prefix) {
			out = append(out, t)
		}
	}
	slices.Sort(out) // generations are zero-padded
	slices.Reverse(out)
	return out
}
