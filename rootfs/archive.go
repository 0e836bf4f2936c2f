package rootfs

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// maxEntrySize bounds one file in rootfs-diff.tar. A variable so tests can
// lower it.
var maxEntrySize int64 = 64 << 30

func unsafeEntry(file, entry, why string) error {
	return fmt.Errorf("%s: entry %q: %s: %w", file, entry, why, errdefs.ErrInvalidArgument)
}

func damaged(file, entry, why string) error {
	if entry == "" {
		return fmt.Errorf("%s: %s: %w", file, why, errdefs.ErrDataLoss)
	}
	return fmt.Errorf("%s: entry %q: %s: %w", file, entry, why, errdefs.ErrDataLoss)
}

// cleanName is a relative entry name in canonical form ("." for the root),
// or why it is refused.
func cleanName(name string) (rel, why string) {
	switch {
	case name == "":
		return "", "empty name"
	case strings.ContainsRune(name, 0):
		return "", "name contains NUL"
	case strings.HasPrefix(name, "/"):
		return "", "absolute name"
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", `name contains a ".." component`
		}
	}
	return path.Clean(name), ""
}

// archiveState is what the checks of an archive's entries remember of the
// entries before them.
type archiveState struct {
	file    string
	types   map[string]byte // entry name -> tar type
	parents map[string]bool // every directory above an entry
	last    string          // name of the last accepted entry
}

func newArchiveState(file string) *archiveState {
	return &archiveState{file: file, types: map[string]byte{}, parents: map[string]bool{}}
}

// check validates one header; remaining is the number of archive bytes after
// it. It returns the entry's relative name, "." for an entry naming the root
// directory itself (which is skipped).
func (s *archiveState) check(hdr *tar.Header, remaining int64) (string, error) {
	s.last = hdr.Name
	rel, why := cleanName(hdr.Name)
	if why != "" {
		return "", unsafeEntry(s.file, hdr.Name, why)
	}
	bad := func(why string) (string, error) { return "", unsafeEntry(s.file, hdr.Name, why) }
	switch hdr.Typeflag {
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink:
	case tar.TypeChar, tar.TypeBlock:
		return bad("device node")
	case tar.TypeFifo:
		return bad("FIFO")
	default:
		return bad(fmt.Sprintf("unsupported entry type %q", hdr.Typeflag))
	}
	if rel == "." {
		if hdr.Typeflag != tar.TypeDir {
			return bad("non-directory entry names the root")
		}
		return ".", nil
	}
	if hdr.Uid < 0 || hdr.Gid < 0 {
		return bad("negative uid or gid")
	}
	if hdr.Typeflag == tar.TypeReg {
		if hdr.Size < 0 || hdr.Size > maxEntrySize {
			return bad(fmt.Sprintf("size %d exceeds the limit of %d bytes", hdr.Size, maxEntrySize))
		}
		if hdr.Size > remaining {
			return "", damaged(s.file, hdr.Name, fmt.Sprintf("size %d exceeds the %d bytes left in the archive (truncated)", hdr.Size, remaining))
		}
	} else if hdr.Size != 0 {
		return bad(fmt.Sprintf("%q entry with size %d", hdr.Typeflag, hdr.Size))
	}
	if _, dup := s.types[rel]; dup {
		return bad("duplicate entry")
	}
	if hdr.Typeflag != tar.TypeDir && s.parents[rel] {
		return bad("non-directory replaces a directory holding earlier entries")
	}
	for dir := path.Dir(rel); dir != "."; dir = path.Dir(dir) {
		if t, ok := s.types[dir]; ok && t != tar.TypeDir {
			return bad(fmt.Sprintf("parent %q is a %s in this archive", dir, typeName(t)))
		}
	}
	switch hdr.Typeflag {
	case tar.TypeSymlink:
		if hdr.Linkname == "" || strings.ContainsRune(hdr.Linkname, 0) || len(hdr.Linkname) >= unix.PathMax {
			return bad("invalid symlink target")
		}
	case tar.TypeLink:
		target, why := cleanName(hdr.Linkname)
		if why != "" {
			return bad("hard link target: " + why)
		}
		if s.types[target] != tar.TypeReg {
			return bad(fmt.Sprintf("hard link target %q is not an earlier regular file of this archive", hdr.Linkname))
		}
	}
	s.types[rel] = hdr.Typeflag
	for dir := path.Dir(rel); dir != "."; dir = path.Dir(dir) {
		s.parents[dir] = true
	}
	return rel, nil
}

// headerError is a header that archive/tar could not read.
func headerError(s *archiveState, err error) error {
	if s.last == "" {
		return damaged(s.file, "", "reading the first header: "+err.Error())
	}
	return damaged(s.file, s.last, "reading the header after this entry: "+err.Error())
}

func typeName(t byte) string {
	switch t {
	case tar.TypeReg:
		return "regular file"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hard link"
	}
	return fmt.Sprintf("type %q", t)
}

// archiveReader reads an archive file, tracking the offset (to bound entry
// sizes) and the zero bytes just read (to see the end-of-archive marker,
// which archive/tar does not require).
type archiveReader struct {
	f     *os.File
	off   int64
	zeros int64
}

func (r *archiveReader) Read(p []byte) (int, error) {
	n, err := r.f.Read(p)
	r.off += int64(n)
	i := n
	for i > 0 && p[i-1] == 0 {
		i--
	}
	if i == 0 {
		r.zeros += int64(n)
	} else {
		r.zeros = int64(n - i)
	}
	return n, err
}

func (r *archiveReader) Seek(offset int64, whence int) (int64, error) {
	off, err := r.f.Seek(offset, whence)
	if err == nil {
		r.off = off
		r.zeros = 0
	}
	return off, err
}

// scanArchive checks every entry of the archive without writing anything and
// returns its directories.
func scanArchive(f *os.File, file string) (map[string]bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	base := filepath.Base(file)
	r := &archiveReader{f: f}
	tr := tar.NewReader(r)
	s := newArchiveState(base)
	dirs := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, headerError(s, err)
		}
		rel, err := s.check(hdr, fi.Size()-r.off)
		if err != nil {
			return nil, err
		}
		if hdr.Typeflag == tar.TypeDir {
			dirs[rel] = true
		}
	}
	// The end of an archive is two zero blocks; archive/tar also accepts a
	// clean end of file there, which is what truncation at an entry boundary
	// looks like.
	if r.zeros < 2*512 {
		return nil, damaged(base, "", "no end-of-archive marker (truncated)")
	}
	return dirs, nil
}
