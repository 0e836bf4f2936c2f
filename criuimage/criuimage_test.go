package criuimage_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"google.golang.org/protobuf/proto"

	"github.com/gpusnap/containerd-shim-snapshot-v2/criuimage"
	"github.com/gpusnap/containerd-shim-snapshot-v2/criuimage/criuimagetest"
)

var page = int64(criuimagetest.PageSize)

// serverImages is a server (pid 1) with a worker (pid 7), the worker's
// memory partly in a parent image, and shared memory of its own pagemap.
func serverImages(t *testing.T) string {
	dir := t.TempDir()
	criuimagetest.Write(t, dir,
		criuimagetest.Process{PID: 1, Comm: "server", Pages: 3, Mappings: 5, Files: 4, PagesID: 1},
		criuimagetest.Process{PID: 7, PPID: 1, Comm: "worker", Pages: 2, ParentPages: 6, Mappings: 2, Files: 1, PagesID: 2},
	)
	criuimagetest.Encode(t, dir, "pagemap-shmem-9.img", "PAGEMAP", criuimagetest.Pagemap(3, 4, 0)...)
	criuimagetest.WritePages(t, dir, 3, 4)
	return dir
}

func TestSummarize(t *testing.T) {
	dir := serverImages(t)
	s, err := criuimage.Summarize(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []criuimage.Process{
		{PID: 1, PPID: 0, Command: "server", PageBytes: 3 * page, Mappings: 5, Files: 4},
		{PID: 7, PPID: 1, Command: "worker", PageBytes: 2 * page, ParentPageBytes: 6 * page, Mappings: 2, Files: 1},
	}
	if !slices.Equal(s.Processes, want) {
		t.Errorf("processes\n got %+v\nwant %+v", s.Processes, want)
	}
	// Shared memory counts in the total, not in any process.
	if s.PageSize != page || s.PageBytes != 9*page || s.ParentPageBytes != 6*page || s.PagesFileBytes != 9*page {
		t.Errorf("totals: page size %d, pages %d, in parent %d, pages files %d; want %d, %d, %d, %d",
			s.PageSize, s.PageBytes, s.ParentPageBytes, s.PagesFileBytes, page, 9*page, 6*page, 9*page)
	}
	if err := s.Check(); err != nil {
		t.Errorf("Check of consistent images: %v", err)
	}
}

// A zombie has no mm, pagemap or ids image: it has no memory, not an error.
func TestSummarizeZombie(t *testing.T) {
	dir := serverImages(t)
	for _, kind := range []string{"mm", "pagemap", "ids", "fdinfo", "pages"} {
		name := kind + "-7.img"
		if kind == "pages" {
			name = "pages-2.img"
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	s, err := criuimage.Summarize(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Processes[1], (criuimage.Process{PID: 7, PPID: 1, Command: "worker"}); got != want {
		t.Errorf("zombie = %+v, want %+v", got, want)
	}
	if err := s.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}
}

// Pagemaps of old CRIU releases count pages in the 32-bit field (go-criu
// v7's nr_pages) and, before flags, mark pages in the parent with in_parent
// alone; the rest are stored. (serverImages' pagemaps are CRIU 4.2.1's.)
func TestSummarizeLegacyPagemap(t *testing.T) {
	dir := serverImages(t)
	criuimagetest.Encode(t, dir, "pagemap-1.img", "PAGEMAP",
		&pagemap.PagemapHead{PagesId: proto.Uint32(1)},
		&pagemap.PagemapEntry{Vaddr: proto.Uint64(0x1000), NrPages: proto.Uint32(3)},
		&pagemap.PagemapEntry{Vaddr: proto.Uint64(0x9000), NrPages: proto.Uint32(5), InParent: proto.Bool(true)},
	)
	s, err := criuimage.Summarize(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p := s.Processes[0]; p.PageBytes != 3*page || p.ParentPageBytes != 5*page {
		t.Errorf("legacy pagemap: %d bytes stored, %d in parent; want %d, %d", p.PageBytes, p.ParentPageBytes, 3*page, 5*page)
	}
}

func TestCheckMismatch(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		file   string
		want   string
	}{
		{"pages file short", func(t *testing.T, dir string) {
			truncate(t, filepath.Join(dir, "pages-2.img"), page)
		}, "pages-2.img", "4096 bytes, but its pagemaps (pagemap-7.img) put 2 pages of 4096 bytes (8192 bytes) in it"},
		{"pages file missing", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "pages-1.img"))
		}, "pages-1.img", "missing, but its pagemaps (pagemap-1.img) put 3 pages (12288 bytes) in it"},
		{"pages file nobody names", func(t *testing.T, dir string) {
			criuimagetest.WritePages(t, dir, 5, 1)
		}, "pages-5.img", "4096 bytes that no pagemap places pages in"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if page != 4096 {
				t.Skip("the messages are written for 4 KiB pages")
			}
			dir := serverImages(t)
			tt.damage(t, dir)
			err := criuimage.Check(dir)
			fe, ok := errors.AsType[*criuimage.FileError](err)
			if !ok || fe.Name != tt.file || fe.Err.Error() != tt.want {
				t.Fatalf("Check = %v, want %s: %s", err, tt.file, tt.want)
			}
			if want := filepath.Join(dir, tt.file) + ": " + tt.want; err.Error() != want {
				t.Errorf("error %q, want %q", err, want)
			}
		})
	}
}

func TestSummarizeUndecodable(t *testing.T) {
	tests := []struct {
		name, file string
		// content is what the file is replaced with; nil removes it.
		content func(t *testing.T, dir string) []byte
		want    string
	}{
		{"no pstree", "pstree.img", nil, "pstree.img: no such file or directory"},
		{"garbage pstree", "pstree.img", func(*testing.T, string) []byte { return []byte("not a CRIU image at all") },
			"pstree.img: cannot decode: unknown magic"},
		{"pstree of another kind", "pstree.img", func(t *testing.T, dir string) []byte { return read(t, dir, "core-1.img") },
			"pstree.img: is a CORE image, want PSTREE"},
		{"truncated pagemap", "pagemap-7.img", func(t *testing.T, dir string) []byte {
			data := read(t, dir, "pagemap-7.img")
			return data[:len(data)-3]
		}, "pagemap-7.img: cannot decode"},
		{"no core", "core-7.img", nil, "core-7.img: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := serverImages(t)
			path := filepath.Join(dir, tt.file)
			if tt.content == nil {
				os.Remove(path)
			} else if err := os.WriteFile(path, tt.content(t, dir), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := criuimage.Summarize(dir)
			if want := filepath.Join(dir, tt.want); err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("Summarize = %v, want %s...", err, want)
			}
			if err := criuimage.Check(dir); err == nil {
				t.Error("Check passed images Summarize cannot read")
			}
		})
	}
}

func read(t *testing.T, dir, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}
