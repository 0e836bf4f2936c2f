package registry

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// TestFileHashesInAnyOrder: chunks landing out of order still hash the
// file in order, and a file whose chunks did not all land has no sum.
func TestFileHashesInAnyOrder(t *testing.T) {
	dir := t.TempDir()
	data := strings.Repeat("a", 1000) + strings.Repeat("b", 2000) + strings.Repeat("c", 500)
	if err := os.WriteFile(filepath.Join(dir, "pages-1.img"), []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	files := []storage.File{{Path: "pages-1.img", Size: int64(len(data))}, {Path: "empty.img"}}
	if err := os.WriteFile(filepath.Join(dir, "empty.img"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	chunks := []chunk{
		{file: "pages-1.img", offset: 0, desc: ocispec.Descriptor{Size: 1000}},
		{file: "pages-1.img", offset: 1000, desc: ocispec.Descriptor{Size: 2000}},
		{file: "pages-1.img", offset: 3000, desc: ocispec.Descriptor{Size: 500}},
	}
	fh, err := newFileHashes(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.close()
	for _, i := range []int{2, 0} {
		if err := fh.landed(chunks[i]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := fh.records(); err == nil {
		t.Fatal("sums with a chunk missing")
	}
	if err := fh.landed(chunks[1]); err != nil {
		t.Fatal(err)
	}
	found, err := fh.records()
	if err != nil {
		t.Fatal(err)
	}
	want, empty := sha256.Sum256([]byte(data)), sha256.Sum256(nil)
	if found["pages-1.img"].SHA256 != hex.EncodeToString(want[:]) || found["empty.img"].SHA256 != hex.EncodeToString(empty[:]) {
		t.Fatalf("records %v", found)
	}
}

// TestFileHashesBlocks: a file the manifest records by blocks has each
// block checked once the chunks covering it landed, in any order and
// across chunk edges; a block that differs from the manifest is a
// corrupt checkpoint, reported while chunks still land.
func TestFileHashesBlocks(t *testing.T) {
	dir := t.TempDir()
	size := int64(2*storage.BlockSize + 3)
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i / 4096)
	}
	if err := os.WriteFile(filepath.Join(dir, "pages-1.img"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for i := range storage.BlockCount(size) {
		sum := sha256.Sum256(data[int64(i)*storage.BlockSize : min(int64(i+1)*storage.BlockSize, size)])
		blocks = append(blocks, hex.EncodeToString(sum[:]))
	}
	rec := storage.File{Path: "pages-1.img", Size: size, Blocks: blocks}
	// Chunk edges fall inside blocks: 0-40 MiB, 40-100 MiB, 100 MiB-end.
	cuts := []int64{0, 40 << 20, 100 << 20, size}
	var chunks []chunk
	for i := range len(cuts) - 1 {
		chunks = append(chunks, chunk{file: "pages-1.img", offset: cuts[i], desc: ocispec.Descriptor{Size: cuts[i+1] - cuts[i]}})
	}

	fh, err := newFileHashes(dir, []storage.File{rec})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{2, 0, 1} {
		if err := fh.landed(chunks[i]); err != nil {
			t.Fatal(err)
		}
	}
	found, err := fh.records()
	fh.close()
	if err != nil || !slices.Equal(found["pages-1.img"].Blocks, blocks) || found["pages-1.img"].SHA256 != "" {
		t.Fatalf("records %v, %v; want blocks %v", found, err, blocks)
	}

	rec.Blocks = slices.Clone(blocks)
	rec.Blocks[1] = blocks[2]
	fh, err = newFileHashes(dir, []storage.File{rec})
	if err != nil {
		t.Fatal(err)
	}
	defer fh.close()
	for _, c := range chunks {
		fh.landed(c)
	}
	if _, err := fh.records(); !errors.Is(err, storage.ErrCorrupt) || !strings.Contains(err.Error(), "block 1") {
		t.Fatalf("records with block 1 differing from the manifest: %v, want ErrCorrupt naming block 1", err)
	}
}
