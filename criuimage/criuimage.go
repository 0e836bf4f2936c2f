// Package criuimage reads what a CRIU image directory holds: the process
// tree, each process's memory mappings, open files and the memory pages the
// image carries for it. It reads through go-criu's crit decoder, so the
// project never parses CRIU's protobuf framing itself. gpusnap shows the
// summary to an operator (inspect) and proves with it that the pages files
// hold exactly the pages the pagemaps promise (verify): a checkpoint whose
// digests match can still have been written wrong, and CRIU would find out
// only halfway through a restore.
package criuimage

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit"
	criu_core "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pstree"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Summary is what an image directory holds.
type Summary struct {
	// Processes are in pstree.img's order: the root first, each parent
	// before its children.
	Processes []Process `json:"processes"`
	// PageSize is the bytes of one page, taken to be this node's: the
	// images do not record the dumping node's, and a checkpoint restores
	// only where CRIU's pages fit the kernel's.
	PageSize int64 `json:"page_size"`
	// PageBytes is the memory the image's pages files carry, shared memory
	// (pagemap-shmem-*.img) included, so it can exceed the processes' sum.
	PageBytes int64 `json:"page_bytes"`
	// ParentPageBytes is memory the pagemaps leave in a parent image (an
	// incremental dump): this image refers to it but does not hold it.
	ParentPageBytes int64 `json:"parent_page_bytes,omitempty"`
	// PagesFileBytes is the size of the pages-*.img files on disk, which
	// Check compares with PageBytes.
	PagesFileBytes int64 `json:"pages_file_bytes"`

	dir   string
	pages map[uint32]*pagesUse
}

// Process is one process of the dumped tree.
type Process struct {
	PID     uint32 `json:"pid"`
	PPID    uint32 `json:"ppid"`
	Command string `json:"command"`
	// PageBytes is the memory the image carries for the process; a zombie,
	// which has no memory, has none.
	PageBytes       int64 `json:"page_bytes"`
	ParentPageBytes int64 `json:"parent_page_bytes,omitempty"`
	// Mappings counts the process's memory mappings (VMAs).
	Mappings int `json:"mappings"`
	// Files counts the descriptors of its file table; processes that share
	// one table each count all of it.
	Files int `json:"files"`
}

// pagesUse is what the pagemaps place in one pages-<id>.img.
type pagesUse struct {
	pagemaps []string // the pagemap files that name it
	pages    int64    // pages stored in it
	fileSize int64    // its size on disk, -1 when it is missing
}

// FileError is what was wrong with one file of an image directory.
type FileError struct {
	Dir  string // the image directory Summarize was given
	Name string // the file's name in it
	Err  error
}

func (e *FileError) Error() string { return filepath.Join(e.Dir, e.Name) + ": " + e.Err.Error() }

func (e *FileError) Unwrap() error { return e.Err }

// Pagemap entry flags (pagemap.proto's pmap.flags).
const (
	pageInParent = 1 << 0 // the pages are in the parent image
	pagePresent  = 1 << 2 // the pages are in this image's pages file
)

// Summarize reads the image directory dir: pstree.img, and per process its
// core, mm, pagemap and ids/fdinfo images, then every other pagemap
// (shared memory) and the sizes of the pages files. A file that cannot be
// decoded is an error naming it.
func Summarize(dir string) (*Summary, error) {
	tree, err := decodeAll[*pstree.PstreeEntry](dir, "pstree.img", "PSTREE")
	if err != nil {
		return nil, err
	}
	if len(tree) == 0 {
		return nil, &FileError{dir, "pstree.img", errors.New("holds no process")}
	}
	s := &Summary{PageSize: int64(os.Getpagesize()), dir: dir, pages: map[uint32]*pagesUse{}}
	for _, entry := range tree {
		p, err := s.readProcess(entry)
		if err != nil {
			return nil, err
		}
		s.Processes = append(s.Processes, p)
	}
	if err := s.readSharedPagemaps(); err != nil {
		return nil, err
	}
	if err := s.readPagesFiles(); err != nil {
		return nil, err
	}
	return s, nil
}

// readProcess reads one process's images. A process without an mm,
// pagemap or ids image (a zombie has none) gets zeros.
func (s *Summary) readProcess(entry *pstree.PstreeEntry) (Process, error) {
	dir := s.dir
	pid := entry.GetPid()
	p := Process{PID: pid, PPID: entry.GetPpid()}
	core, err := decodeFirst[*criu_core.CoreEntry](dir, fmt.Sprintf("core-%d.img", pid), "CORE")
	if err != nil {
		return p, err
	}
	p.Command = core.GetTc().GetComm()
	if p.Mappings, err = countMappings(dir, pid); err != nil {
		return p, err
	}
	if p.Files, err = countFiles(dir, pid); err != nil {
		return p, err
	}
	stored, parent, err := s.readPagemap(fmt.Sprintf("pagemap-%d.img", pid))
	p.PageBytes, p.ParentPageBytes = stored*s.PageSize, parent*s.PageSize
	return p, err
}

// countMappings counts the VMAs of mm-<pid>.img.
func countMappings(dir string, pid uint32) (int, error) {
	m, err := decodeFirst[*mm.MmEntry](dir, fmt.Sprintf("mm-%d.img", pid), "MM")
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	return len(m.GetVmas()), err
}

// countFiles counts the entries of the file table ids-<pid>.img names.
func countFiles(dir string, pid uint32) (int, error) {
	ids, err := decodeFirst[*criu_core.TaskKobjIdsEntry](dir, fmt.Sprintf("ids-%d.img", pid), "IDS")
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	fds, err := decodeAll[*fdinfo.FdinfoEntry](dir, fmt.Sprintf("fdinfo-%d.img", ids.GetFilesId()), "FDINFO")
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	return len(fds), err
}

// readSharedPagemaps adds the pagemaps that belong to no process: shared
// memory's, which CRIU dumps once however many processes map it.
func (s *Summary) readSharedPagemaps() error {
	names, err := filepath.Glob(filepath.Join(s.dir, "pagemap-shmem-*.img"))
	if err != nil {
		return err
	}
	for _, name := range names {
		if _, _, err := s.readPagemap(filepath.Base(name)); err != nil {
			return err
		}
	}
	return nil
}

// readPagemap adds a pagemap's pages to the totals and to its pages file,
// and returns the pages it stores and those it leaves in a parent image.
// A missing pagemap stores nothing.
func (s *Summary) readPagemap(name string) (stored, parent int64, err error) {
	img, err := decode(s.dir, name, "PAGEMAP", &pagemap.PagemapEntry{})
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	if len(img.Entries) == 0 {
		return 0, 0, &FileError{s.dir, name, errors.New("has no pagemap head")}
	}
	head := img.Entries[0].Message.(*pagemap.PagemapHead)
	for _, e := range img.Entries[1:] {
		entry := e.Message.(*pagemap.PagemapEntry)
		n, err := pageCount(entry)
		if err != nil {
			return 0, 0, &FileError{s.dir, name, fmt.Errorf("entry at %#x: %w", entry.GetVaddr(), err)}
		}
		switch {
		case inParent(entry):
			parent += n
		case present(entry):
			stored += n
		}
	}
	use := s.pagesFile(head.GetPagesId())
	use.pagemaps = append(use.pagemaps, name)
	use.pages += stored
	s.PageBytes += stored * s.PageSize
	s.ParentPageBytes += parent * s.PageSize
	return stored, parent, nil
}

// nrPagesField is pagemap_entry's 64-bit nr_pages, field 5, which newer
// CRIU writes (4.2.1, the project's, does) so that one entry can cover 2^32
// pages or more; it then writes 0 to the old 32-bit count (field 2), the
// only one go-criu v7's pagemap.proto knows. Without this every pagemap of
// a real dump reads as empty.
const nrPagesField = 5

// pageCount is the entry's number of pages: nr_pages, which go-criu v7
// leaves among the entry's unknown fields, else the old 32-bit count that
// older CRIU releases wrote.
func pageCount(e *pagemap.PagemapEntry) (int64, error) {
	rest := e.ProtoReflect().GetUnknown()
	for len(rest) > 0 {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return 0, protowire.ParseError(n)
		}
		rest = rest[n:]
		if num == nrPagesField && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(rest)
			if n < 0 {
				return 0, protowire.ParseError(n)
			}
			return int64(v), nil
		}
		if n = protowire.ConsumeFieldValue(num, typ, rest); n < 0 {
			return 0, protowire.ParseError(n)
		}
		rest = rest[n:]
	}
	return int64(e.GetNrPages()), nil
}

// present reports whether the entry's pages are in this image's pages
// file. Entries of CRIU releases before flags had only in_parent.
func present(e *pagemap.PagemapEntry) bool {
	if e.Flags == nil {
		return !e.GetInParent()
	}
	return e.GetFlags()&pagePresent != 0
}

func inParent(e *pagemap.PagemapEntry) bool {
	if e.Flags == nil {
		return e.GetInParent()
	}
	return e.GetFlags()&pageInParent != 0
}

func (s *Summary) pagesFile(id uint32) *pagesUse {
	use := s.pages[id]
	if use == nil {
		use = &pagesUse{fileSize: -1}
		s.pages[id] = use
	}
	return use
}

// readPagesFiles records the size of every pages-<id>.img.
func (s *Summary) readPagesFiles() error {
	names, err := filepath.Glob(filepath.Join(s.dir, "pages-*.img"))
	if err != nil {
		return err
	}
	for _, name := range names {
		var id uint32
		base := filepath.Base(name)
		if _, err := fmt.Sscanf(base, "pages-%d.img", &id); err != nil || base != fmt.Sprintf("pages-%d.img", id) {
			return &FileError{s.dir, base, errors.New("is not named pages-<number>.img")}
		}
		fi, err := os.Stat(name)
		if err != nil {
			return &FileError{s.dir, base, err}
		}
		s.pagesFile(id).fileSize = fi.Size()
		s.PagesFileBytes += fi.Size()
	}
	return nil
}

// Check proves that every pages file holds exactly the pages its pagemaps
// place in it: CRIU reads a process's pages at offsets the pagemap
// implies, so a file of another size restores wrong memory or fails.
// Each mismatch is a *FileError naming the pages file and both numbers.
func (s *Summary) Check() error {
	var problems []error
	for _, id := range slices.Sorted(maps.Keys(s.pages)) {
		if err := s.checkPagesFile(s.pages[id]); err != nil {
			problems = append(problems, &FileError{s.dir, fmt.Sprintf("pages-%d.img", id), err})
		}
	}
	return errors.Join(problems...)
}

func (s *Summary) checkPagesFile(use *pagesUse) error {
	want := use.pages * s.PageSize
	switch {
	case len(use.pagemaps) == 0:
		return fmt.Errorf("%d bytes that no pagemap places pages in", use.fileSize)
	case use.fileSize < 0 && want > 0:
		return fmt.Errorf("missing, but its pagemaps (%s) put %d pages (%d bytes) in it",
			strings.Join(use.pagemaps, ", "), use.pages, want)
	case use.fileSize >= 0 && use.fileSize != want:
		return fmt.Errorf("%d bytes, but its pagemaps (%s) put %d pages of %d bytes (%d bytes) in it",
			use.fileSize, strings.Join(use.pagemaps, ", "), use.pages, s.PageSize, want)
	}
	return nil
}

// Check reads the image directory dir and checks its pages files; it is
// what verify runs on a checkpoint stored in the clear.
func Check(dir string) error {
	s, err := Summarize(dir)
	if err != nil {
		return err
	}
	return s.Check()
}

// decode reads one image with crit after checking its magic: crit decodes
// whatever a file holds as the entry type it is given, which for a file of
// another kind fails with a message about a protobuf field, or not at all.
func decode(dir, name, magic string, entry proto.Message) (*crit.CriuImage, error) {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return nil, &FileError{dir, name, unwrapPath(err)}
	}
	defer f.Close()
	got, err := crit.ReadMagic(f)
	switch {
	case err != nil:
		return nil, &FileError{dir, name, fmt.Errorf("cannot decode: %w", err)}
	case got != magic:
		return nil, &FileError{dir, name, fmt.Errorf("is a %s image, want %s", got, magic)}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, &FileError{dir, name, err}
	}
	img, err := crit.New(f, nil, dir, false, true).Decode(entry)
	if err != nil {
		return nil, &FileError{dir, name, fmt.Errorf("cannot decode: %w", err)}
	}
	return img, nil
}

// unwrapPath drops os.Open's *fs.PathError, whose path FileError already
// names.
func unwrapPath(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

// decodeAll decodes every entry of an image whose entries are all of type T.
func decodeAll[T proto.Message](dir, name, magic string) ([]T, error) {
	var zero T
	img, err := decode(dir, name, magic, zero.ProtoReflect().New().Interface())
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(img.Entries))
	for _, e := range img.Entries {
		out = append(out, e.Message.(T))
	}
	return out, nil
}

// decodeFirst decodes an image of one entry of type T.
func decodeFirst[T proto.Message](dir, name, magic string) (T, error) {
	var zero T
	all, err := decodeAll[T](dir, name, magic)
	if err != nil {
		return zero, err
	}
	if len(all) == 0 {
		return zero, &FileError{dir, name, errors.New("holds no entry")}
	}
	return all[0], nil
}
