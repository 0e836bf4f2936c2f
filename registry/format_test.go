package registry

import (
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// TestParseArtifact: a pull refuses, before downloading anything, an image
// manifest whose chunks do not tile exactly the files the checkpoint lists.
func TestParseArtifact(t *testing.T) {
	m := &storage.Manifest{Files: []storage.File{{Path: "checkpoint/pages-1.img", Size: 30}, {Path: "empty", Size: 0}}}
	d := digest.FromString("x")
	chunk := func(file string, off, size int64) ocispec.Descriptor { return chunkDescriptor(file, off, size, d) }
	config := ocispec.Descriptor{MediaType: ConfigMediaType, Digest: d}
	good := []ocispec.Descriptor{chunk("checkpoint/pages-1.img", 0, 20), chunk("checkpoint/pages-1.img", 20, 10), chunk("empty", 0, 0)}
	tests := []struct {
		name   string
		layers []ocispec.Descriptor
		art    string
		want   string // "" for accepted
	}{
		{"tiles the files", good, ArtifactType, ""},
		{"not a checkpoint", good, "application/vnd.other", "not a checkpoint"},
		{"path outside the checkpoint", append(good, chunk("../../etc/passwd", 0, 1)), ArtifactType, "does not list"},
		{"gap", []ocispec.Descriptor{chunk("checkpoint/pages-1.img", 0, 10), chunk("checkpoint/pages-1.img", 20, 10), chunk("empty", 0, 0)}, ArtifactType, "want 10"},
		{"overlap", []ocispec.Descriptor{chunk("checkpoint/pages-1.img", 0, 20), chunk("checkpoint/pages-1.img", 10, 20), chunk("empty", 0, 0)}, ArtifactType, "want 20"},
		{"past the end", []ocispec.Descriptor{chunk("checkpoint/pages-1.img", 0, 40)}, ArtifactType, "outside the file"},
		{"file missing", good[2:], ArtifactType, "chunks cover 0 of its 30"},
		{"short file", []ocispec.Descriptor{chunk("checkpoint/pages-1.img", 0, 20), chunk("empty", 0, 0)}, ArtifactType, "chunks cover 20 of its 30"},
		{"stray layer", append(good, ocispec.Descriptor{MediaType: "application/octet-stream", Digest: d}), ArtifactType, "unexpected media type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			im := &ocispec.Manifest{ArtifactType: tt.art, Config: config, Layers: tt.layers}
			_, err := parseArtifact(im, m)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("parseArtifact: %v, want %q", err, tt.want)
			}
		})
	}
}

func TestCandidateTags(t *testing.T) {
	key := "0123456789abcdef" + strings.Repeat("0", 48)
	got := candidateTags([]string{"0123456789abcdef-g000002", "latest", "fedcba9876543210-g000009", "0123456789abcdef-g000010"}, key)
	if strings.Join(got, " ") != "0123456789abcdef-g000010 0123456789abcdef-g000002" {
		t.Fatalf("candidateTags = %v", got)
	}
}

// TestChunkPolynomial: the fingerprint's polynomial is irreducible, as
// content-defined chunking needs for boundaries spread by content.
func TestChunkPolynomial(t *testing.T) {
	if !chunkPolynomial.Irreducible() {
		t.Fatalf("chunk polynomial %v is not irreducible", chunkPolynomial)
	}
}
