package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/criuimage"
	"github.com/gpusnap/containerd-shim-snapshot-v2/criuimage/criuimagetest"
	"github.com/gpusnap/containerd-shim-snapshot-v2/crypt"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

var page = int64(criuimagetest.PageSize)

// serverAndWorker are the processes of a two-process checkpoint: the
// worker's memory is partly in a parent image.
var serverAndWorker = []criuimagetest.Process{
	{PID: 1, Comm: "server", Pages: 3, Mappings: 5, Files: 4, PagesID: 1},
	{PID: 7, PPID: 1, Comm: "worker", Pages: 2, ParentPages: 6, Mappings: 2, Files: 1, PagesID: 2},
}

func noEdit(*storage.Manifest) {}

func TestInspectProcesses(t *testing.T) {
	ts := newTestStore(t)
	s, _ := storage.Open(ts.root)
	c := publishImages(t, s, "multi", time.Now(), noEdit, func(dir string) { writeImages(t, dir, serverAndWorker...) })

	out, _ := mustRun(t, exitOK, "--store", ts.root, "inspect", c.Name)
	contains(t, "inspect", out, "Processes:\n",
		fmt.Sprintf("  Image pages: %s (%d bytes, shared memory included); %s more in the parent image\n",
			humanBytes(5*page), 5*page, humanBytes(6*page)))
	rows := map[string][]string{
		"PID":    {"PID", "PPID", "COMMAND", "PAGES", "MAPPINGS", "FILES"},
		"server": append([]string{"1", "0", "server"}, append(strings.Fields(humanBytes(3*page)), "5", "4")...),
		"worker": append([]string{"7", "1", "worker"}, append(strings.Fields(humanBytes(2*page)), "2", "1")...),
	}
	for key, want := range rows {
		if got := rowWith(out, key); !slices.Equal(got, want) {
			t.Errorf("inspect's %s row is %q, want %q:\n%s", key, got, want, out)
		}
	}
	if strings.Index(out, "Processes:") > strings.Index(out, "Files:") {
		t.Errorf("Processes come after Files:\n%s", out)
	}

	out, _ = mustRun(t, exitOK, "--store", ts.root, "--json", "inspect", c.Name)
	got := decode[inspectOutput](t, out)
	want := []criuimage.Process{
		{PID: 1, Command: "server", PageBytes: 3 * page, Mappings: 5, Files: 4},
		{PID: 7, PPID: 1, Command: "worker", PageBytes: 2 * page, ParentPageBytes: 6 * page, Mappings: 2, Files: 1},
	}
	if got.Images == nil || !slices.Equal(got.Images.Processes, want) || got.Images.PageBytes != 5*page ||
		got.Images.PagesFileBytes != 5*page || got.ImagesNote != "" {
		t.Errorf("inspect --json: images %+v, note %q", got.Images, got.ImagesNote)
	}
}

// rowWith is the fields of the first line of out whose fields include key.
func rowWith(out, key string) []string {
	for line := range strings.Lines(out) {
		if fields := strings.Fields(line); slices.Contains(fields, key) {
			return fields
		}
	}
	return nil
}

// TestInspectUnreadableImages: inspect still shows the manifest of a
// checkpoint whose images it cannot read, and says why.
func TestInspectUnreadableImages(t *testing.T) {
	ts := newTestStore(t)
	s, _ := storage.Open(ts.root)
	c := publishImages(t, s, "broken", time.Now(), noEdit, func(dir string) {
		writeImages(t, dir, serverAndWorker...)
		write(t, filepath.Join(dir, "checkpoint", "pstree.img"), "garbage")
	})
	out, _ := mustRun(t, exitOK, "--store", ts.root, "inspect", c.Name)
	contains(t, "inspect", out, "Key:", "Processes:   cannot read the CRIU images: "+filepath.Join(c.ImagesDir(), "pstree.img")+": cannot decode: unknown magic")
}

// TestVerifyImages: a checkpoint whose digests match but whose pages files
// disagree with its pagemaps fails verify, naming the file; an encrypted
// one's images are not read.
func TestVerifyImages(t *testing.T) {
	tests := []struct {
		name    string
		damage  func(t *testing.T, images string)
		encrypt bool
		problem string // "" for OK
	}{
		{"consistent", func(*testing.T, string) {}, false, ""},
		{"pages file short", func(t *testing.T, images string) {
			if err := os.Truncate(filepath.Join(images, "pages-1.img"), page); err != nil {
				t.Fatal(err)
			}
		}, false, fmt.Sprintf("checkpoint/pages-1.img: %d bytes, but its pagemaps (pagemap-1.img) put 3 pages of %d bytes (%d bytes) in it", page, page, 3*page)},
		{"pages file nobody names", func(t *testing.T, images string) { criuimagetest.WritePages(t, images, 5, 1) },
			false, fmt.Sprintf("checkpoint/pages-5.img: %d bytes that no pagemap places pages in", page)},
		{"undecodable pstree", func(t *testing.T, images string) { write(t, filepath.Join(images, "pstree.img"), "garbage") },
			false, "checkpoint/pstree.img: cannot decode: unknown magic"},
		{"encrypted, not read", func(t *testing.T, images string) { criuimagetest.WritePages(t, images, 5, 1) }, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestStore(t)
			s, _ := storage.Open(ts.root)
			edit := noEdit
			if tt.encrypt {
				edit = func(m *storage.Manifest) {
					m.Encryption = &storage.Encryption{Algorithm: crypt.Algorithm, KeyID: "0123456789abcdef"}
				}
			}
			c := publishImages(t, s, "v", time.Now(), edit, func(dir string) {
				writeImages(t, dir, serverAndWorker...)
				tt.damage(t, filepath.Join(dir, "checkpoint"))
			})

			if tt.problem == "" {
				out, _ := mustRun(t, exitOK, "--store", ts.root, "verify", c.Name)
				contains(t, "verify", out, "OK    "+c.Name)
				return
			}
			out, errOut := mustRun(t, exitFail, "--store", ts.root, "verify", c.Name, ts.web2)
			contains(t, "verify", out, "FAIL  "+c.Name+": 1 problem(s):\n        "+tt.problem, "OK    "+ts.web2)
			contains(t, "stderr", errOut, "1 of 2 checkpoints failed verification")
			out, _ = mustRun(t, exitFail, "--store", ts.root, "--json", "verify", c.Name)
			got := decode[[]verifyResult](t, out)
			if len(got) != 1 || got[0].OK || len(got[0].Problems) != 1 || !strings.HasPrefix(got[0].Problems[0], tt.problem) ||
				!strings.HasPrefix(got[0].Error, "CRIU images of "+c.Name+": "+tt.problem) {
				t.Errorf("verify --json = %+v", got)
			}
		})
	}
}

// TestInspectLargeFile: a file the manifest records by blocks (more than
// storage.BlockSize bytes) is listed with its block count, where a small
// file shows its digest.
func TestInspectLargeFile(t *testing.T) {
	ts := newTestStore(t)
	s, _ := storage.Open(ts.root)
	c := publishImages(t, s, "large", time.Now(), noEdit, func(dir string) {
		if err := os.MkdirAll(filepath.Join(dir, "checkpoint"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "checkpoint", "pages-9.img"), make([]byte, storage.BlockSize+1), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	out, _ := mustRun(t, exitOK, "--store", ts.root, "inspect", c.Name)
	if got := rowWith(out, "checkpoint/pages-9.img"); !slices.Contains(got, "blocks") || !slices.Contains(got, "2") {
		t.Errorf("inspect's row of a 64 MiB + 1 byte file is %q, want its 2 blocks:\n%s", got, out)
	}
}
