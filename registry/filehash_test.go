package registry

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
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
	if _, err := fh.sums(); err == nil {
		t.Fatal("sums with a chunk missing")
	}
	if err := fh.landed(chunks[1]); err != nil {
		t.Fatal(err)
	}
	sums, err := fh.sums()
	if err != nil {
		t.Fatal(err)
	}
	want, empty := sha256.Sum256([]byte(data)), sha256.Sum256(nil)
	if sums["pages-1.img"] != hex.EncodeToString(want[:]) || sums["empty.img"] != hex.EncodeToString(empty[:]) {
		t.Fatalf("sums %v", sums)
	}
}
