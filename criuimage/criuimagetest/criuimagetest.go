// Package criuimagetest writes small but real CRIU image directories with
// go-criu's crit encoder, so that tests of code that reads checkpoints
// (criuimage, gpusnap) run on the files CRIU would write, not on stand-ins.
package criuimagetest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/checkpoint-restore/go-criu/v7/crit"
	criu_core "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/vma"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Process is one process to write. Its pages go to pages-<PagesID>.img,
// pages-<PID>.img when PagesID is 0.
type Process struct {
	PID, PPID uint32
	Comm      string
	// Pages are stored in the image; ParentPages are flagged as left in a
	// parent image and stored nowhere.
	Pages, ParentPages int
	Mappings, Files    int
	PagesID            uint32
}

// PageSize is the page size the pages files are written in, the one
// criuimage reads them in.
var PageSize = os.Getpagesize()

// Write writes into dir pstree.img and, per process, core-, mm-, ids-,
// fdinfo- and pagemap-<pid>.img, and pages-<id>.img of Pages pages.
func Write(tb testing.TB, dir string, procs ...Process) {
	tb.Helper()
	tree := make([]proto.Message, 0, len(procs))
	for _, p := range procs {
		tree = append(tree, &pstree.PstreeEntry{
			Pid: proto.Uint32(p.PID), Ppid: proto.Uint32(p.PPID),
			Pgid: proto.Uint32(p.PID), Sid: proto.Uint32(p.PID), Threads: []uint32{p.PID},
		})
	}
	Encode(tb, dir, "pstree.img", "PSTREE", tree...)
	for _, p := range procs {
		writeProcess(tb, dir, p)
	}
}

func writeProcess(tb testing.TB, dir string, p Process) {
	tb.Helper()
	name := func(kind string) string { return fmt.Sprintf("%s-%d.img", kind, p.PID) }
	Encode(tb, dir, name("core"), "CORE", core(p))
	Encode(tb, dir, name("mm"), "MM", mmEntry(p))
	Encode(tb, dir, name("ids"), "IDS", &criu_core.TaskKobjIdsEntry{
		VmId: proto.Uint32(p.PID), FilesId: proto.Uint32(p.PID),
		FsId: proto.Uint32(p.PID), SighandId: proto.Uint32(p.PID),
	})
	var fds []proto.Message
	for fd := range p.Files {
		fds = append(fds, &fdinfo.FdinfoEntry{
			Id: proto.Uint32(uint32(fd + 1)), Flags: proto.Uint32(0),
			Type: fdinfo.FdTypes_REG.Enum(), Fd: proto.Uint32(uint32(fd)),
		})
	}
	Encode(tb, dir, name("fdinfo"), "FDINFO", fds...)
	pagesID := p.PagesID
	if pagesID == 0 {
		pagesID = p.PID
	}
	Encode(tb, dir, name("pagemap"), "PAGEMAP", Pagemap(pagesID, p.Pages, p.ParentPages)...)
	WritePages(tb, dir, pagesID, p.Pages)
}

func core(p Process) *criu_core.CoreEntry {
	return &criu_core.CoreEntry{
		Mtype: criu_core.CoreEntry_X86_64.Enum(),
		Tc: &criu_core.TaskCoreEntry{
			TaskState: proto.Uint32(1), ExitCode: proto.Uint32(0), Personality: proto.Uint32(0),
			Flags: proto.Uint32(0), BlkSigset: proto.Uint64(0), Comm: proto.String(p.Comm),
		},
	}
}

// mmEntry has Mappings anonymous private mappings of one page each.
func mmEntry(p Process) *mm.MmEntry {
	zero := proto.Uint64(0)
	m := &mm.MmEntry{
		MmStartCode: zero, MmEndCode: zero, MmStartData: zero, MmEndData: zero,
		MmStartStack: zero, MmStartBrk: zero, MmBrk: zero, MmArgStart: zero,
		MmArgEnd: zero, MmEnvStart: zero, MmEnvEnd: zero, ExeFileId: proto.Uint32(1),
	}
	for i := range p.Mappings {
		start := uint64(0x400000 + 2*i*PageSize)
		m.Vmas = append(m.Vmas, &vma.VmaEntry{
			Start: proto.Uint64(start), End: proto.Uint64(start + uint64(PageSize)),
			Pgoff: zero, Shmid: zero, Prot: proto.Uint32(3), Flags: proto.Uint32(0x22),
			Status: proto.Uint32(1 | 1<<5), Fd: proto.Int64(-1),
		})
	}
	return m
}

// Pagemap is a pagemap's entries as CRIU 4.2.1 writes them: its head naming
// pages-<pagesID>.img, then one entry of stored pages and one of pages in
// the parent image.
func Pagemap(pagesID uint32, pages, parentPages int) []proto.Message {
	const present, inParent = 1 << 2, 1 << 0
	entries := []proto.Message{&pagemap.PagemapHead{PagesId: proto.Uint32(pagesID)}}
	add := func(vaddr uint64, n int, flags uint32) {
		if n > 0 {
			entries = append(entries, PagemapEntry(vaddr, uint64(n), flags))
		}
	}
	add(0x7f0000000000, pages, present)
	add(0x7f8000000000, parentPages, inParent)
	return entries
}

// PagemapEntry is an entry of n pages as CRIU 4.2.1 writes it: the count in
// nr_pages (field 5), which go-criu v7's pagemap.proto lacks, so it goes
// among the unknown fields, and 0 in the old 32-bit count.
func PagemapEntry(vaddr, n uint64, flags uint32) *pagemap.PagemapEntry {
	e := &pagemap.PagemapEntry{Vaddr: proto.Uint64(vaddr), NrPages: proto.Uint32(0), Flags: proto.Uint32(flags)}
	field := protowire.AppendTag(nil, 5, protowire.VarintType)
	e.ProtoReflect().SetUnknown(protowire.AppendVarint(field, n))
	return e
}

// WritePages writes pages-<id>.img of n pages, each filled with one byte.
func WritePages(tb testing.TB, dir string, id uint32, n int) {
	tb.Helper()
	data := make([]byte, n*PageSize)
	for i := range data {
		data[i] = byte('a' + i/PageSize%26)
	}
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("pages-%d.img", id)), data, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// Encode writes entries as the image dir/name of the given magic.
func Encode(tb testing.TB, dir, name, magic string, entries ...proto.Message) {
	tb.Helper()
	img := &crit.CriuImage{Magic: magic}
	for _, e := range entries {
		img.Entries = append(img.Entries, &crit.CriuEntry{Message: e})
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := crit.New(nil, f, dir, false, false).Encode(img); err != nil {
		tb.Fatalf("encode %s: %v", name, err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
}
