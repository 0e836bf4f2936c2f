package runtime

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Files of a rootfs diff, top-level in a checkpoint directory. The first two
// are the Kubernetes checkpoint archive layout that checkpointctl, CRI-O and
// Podman read.
const (
	// RootfsDiffFile is a tar of everything the container added or changed
	// in its writable layer, with names relative to the container's root.
	RootfsDiffFile = "rootfs-diff.tar"
	// DeletedFilesFile is a JSON array of the absolute paths (in the
	// container) that the container deleted from its image.
	DeletedFilesFile = "deleted.files"
	// OpaqueDirsFile is a JSON array of the absolute paths of directories
	// that the container replaced as a whole (overlay opaque directories:
	// deleted, then made again). Applying one empties the directory before
	// the tar puts the new content back. It is a file of its own, written
	// only when there is such a directory, because Podman applies
	// deleted.files after the tar and would delete the new content too;
	// tools that do not know the file merely show the image's old entries.
	OpaqueDirsFile = "opaque.dirs"
)

// Limits on what ApplyRootfsDiff accepts. Variables so tests can lower them.
var (
	// maxEntrySize bounds one file in rootfs-diff.tar.
	maxEntrySize int64 = 64 << 30
	// maxListSize bounds deleted.files and opaque.dirs.
	maxListSize int64 = 64 << 20
)

// Overlay extended attributes, in the trusted namespace (overlay mounted by
// root) and the user namespace (overlay mounted with userxattr, rootless).
var (
	opaqueXattrs   = []string{"trusted.overlay.opaque", "user.overlay.opaque"}
	redirectXattrs = []string{"trusted.overlay.redirect", "user.overlay.redirect"}
	metacopyXattrs = []string{"trusted.overlay.metacopy", "user.overlay.metacopy"}
)

// UpperDir is the writable layer of an overlay rootfs, from the options of
// the mount containerd hands the shim (lowerdir=...,upperdir=...,workdir=...).
// A read-only or non-overlay rootfs has none.
func UpperDir(mountOptions []string) (string, bool) {
	for _, o := range mountOptions {
		if dir, ok := strings.CutPrefix(o, "upperdir="); ok && dir != "" {
			return dir, true
		}
	}
	return "", false
}

// CaptureRootfsDiff writes the changes in an overlay upper directory to
// destDir as RootfsDiffFile, DeletedFilesFile and, when needed,
// OpaqueDirsFile, all mode 0600.
//
// Directories, regular files (hard links kept as links), and symlinks go into
// the tar with their mode, uid/gid and mtime (sub-second, PAX). Whiteouts
// (0:0 character devices) become deleted paths; opaque directories go into
// the tar and into OpaqueDirsFile. Sockets, FIFOs and other device nodes are
// skipped: they cannot be restored meaningfully. Extended attributes (file
// capabilities, ACLs) are not captured.
//
// An upper directory that uses overlay redirect_dir or metacopy refers to
// content in the lower layers that a diff of the upper directory alone
// cannot carry, so it is refused rather than captured incompletely.
func CaptureRootfsDiff(upperDir, destDir string) (err error) {
	c := &capture{upper: upperDir, links: map[fileID]string{}}
	tarPath := filepath.Join(destDir, RootfsDiffFile)
	defer func() {
		if err != nil {
			for _, name := range []string{RootfsDiffFile, DeletedFilesFile, OpaqueDirsFile} {
				os.Remove(filepath.Join(destDir, name))
			}
		}
	}()
	f, err := os.OpenFile(tarPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := bufio.NewWriterSize(f, 1<<20)
	c.tw = tar.NewWriter(buf)
	if err := filepath.WalkDir(upperDir, c.visit); err != nil {
		return fmt.Errorf("capturing rootfs diff of %s: %w", upperDir, err)
	}
	if err := c.tw.Close(); err != nil {
		return err
	}
	if err := buf.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := writePathList(filepath.Join(destDir, DeletedFilesFile), c.deleted); err != nil {
		return err
	}
	if len(c.opaque) > 0 {
		return writePathList(filepath.Join(destDir, OpaqueDirsFile), c.opaque)
	}
	return nil
}

// fileID identifies an inode, to keep hard links as links.
type fileID struct{ dev, ino uint64 }

type capture struct {
	upper   string
	tw      *tar.Writer
	links   map[fileID]string
	deleted []string
	opaque  []string
}

func (c *capture) visit(p string, d fs.DirEntry, err error) error {
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(c.upper, p)
	if err != nil {
		return err
	}
	if rel == "." {
		return nil
	}
	name := filepath.ToSlash(rel)
	info, err := d.Info()
	if err != nil {
		return err
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: no stat information", p)
	}
	hdr := &tar.Header{
		Name:    name,
		Mode:    tarMode(info.Mode()),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: info.ModTime(),
		Format:  tar.FormatPAX,
	}
	switch mode := info.Mode(); {
	case mode&fs.ModeCharDevice != 0 && st.Rdev == 0:
		c.deleted = append(c.deleted, "/"+name)
		return nil
	case mode.IsDir():
		if x, ok := firstXattr(p, redirectXattrs); ok {
			return fmt.Errorf("%s: overlay redirect_dir (%s) is not supported: the directory's content is in a lower layer", p, x)
		}
		if v, ok := xattrValue(p, opaqueXattrs); ok && v == "y" {
			c.opaque = append(c.opaque, "/"+name)
		}
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case mode&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = target
	case mode.IsRegular():
		if x, ok := firstXattr(p, metacopyXattrs); ok {
			return fmt.Errorf("%s: overlay metacopy (%s) is not supported: the file's data is in a lower layer", p, x)
		}
		if st.Nlink > 1 {
			id := fileID{uint64(st.Dev), st.Ino}
			if first, seen := c.links[id]; seen {
				hdr.Typeflag = tar.TypeLink
				hdr.Linkname = first
				return c.tw.WriteHeader(hdr)
			}
			c.links[id] = name
		}
		hdr.Typeflag = tar.TypeReg
		hdr.Size = info.Size()
		return c.writeFile(p, hdr)
	default:
		return nil // sockets, FIFOs, device nodes
	}
	return c.tw.WriteHeader(hdr)
}

func (c *capture) writeFile(p string, hdr *tar.Header) error {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := c.tw.WriteHeader(hdr); err != nil {
		return err
	}
	if _, err := io.CopyN(c.tw, f, hdr.Size); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// tarMode is the permission and setuid/setgid/sticky bits in tar's encoding.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// xattrValue is the first of names set on p (not following symlinks).
// File systems without xattr support have none.
func xattrValue(p string, names []string) (string, bool) {
	buf := make([]byte, 256)
	for _, name := range names {
		n, err := unix.Lgetxattr(p, name, buf)
		if err == nil {
			return string(buf[:n]), true
		}
		if errors.Is(err, unix.ERANGE) {
			return "", true // set, with a value longer than any we read
		}
	}
	return "", false
}

func firstXattr(p string, names []string) (string, bool) {
	for _, name := range names {
		if _, ok := xattrValue(p, []string{name}); ok {
			return name, true
		}
	}
	return "", false
}

func writePathList(file string, paths []string) error {
	if paths == nil {
		paths = []string{}
	}
	data, err := json.Marshal(paths)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// ApplyRootfsDiff applies a rootfs diff from srcDir (as written by
// CaptureRootfsDiff, or by CRI-O/Podman; a missing file means no changes of
// that kind) to rootfs, the new container's root, before its processes are
// restored: it empties opaque directories, removes deleted paths, then
// extracts rootfs-diff.tar.
//
// The diff comes from a store that may be shared between nodes, so it is
// treated as hostile. Before anything is written, the whole archive and both
// lists are checked: names must be relative (list paths absolute), without
// "..", unique, and not below a symlink or file of the same archive; only
// directories, regular files, symlinks and hard links to earlier regular files
// of the archive are accepted (no device nodes or FIFOs); a file may not
// exceed the size limit or the bytes left in the archive; the archive must end
// with its end-of-archive marker (no truncation). While applying, each entry
// is checked against the rootfs before it is written: no path component may
// be a symlink, so nothing resolves outside rootfs, and every file operation
// goes through an os.Root, which refuses escapes even under a race.
// Symlink targets are stored as written: they are resolved inside the
// container, never by this function. Errors name the file, the entry and why,
// and wrap errdefs.ErrInvalidArgument (unsafe) or errdefs.ErrDataLoss
// (damaged).
func ApplyRootfsDiff(srcDir, rootfs string) error {
	opaque, err := readPathList(filepath.Join(srcDir, OpaqueDirsFile))
	if err != nil {
		return err
	}
	deleted, err := readPathList(filepath.Join(srcDir, DeletedFilesFile))
	if err != nil {
		return err
	}
	tarPath := filepath.Join(srcDir, RootfsDiffFile)
	f, err := os.Open(tarPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	dirs := map[string]bool{}
	if f != nil {
		defer f.Close()
		if dirs, err = scanArchive(f, tarPath); err != nil {
			return err
		}
	}
	for _, d := range opaque {
		if !dirs[d] {
			return unsafeEntry(OpaqueDirsFile, "/"+d, "opaque directory has no directory entry in "+RootfsDiffFile)
		}
	}

	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, l := range []struct {
		file  string
		paths []string
	}{{OpaqueDirsFile, opaque}, {DeletedFilesFile, deleted}} {
		for _, rel := range l.paths {
			if err := removeInRoot(root, rel); err != nil {
				return fmt.Errorf("%s: entry %q: %w", l.file, "/"+rel, err)
			}
		}
	}
	if f == nil {
		return nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	return extractArchive(root, f, tarPath)
}

func unsafeEntry(file, entry, why string) error {
	return fmt.Errorf("%s: entry %q: %s: %w", file, entry, why, errdefs.ErrInvalidArgument)
}

func damaged(file, entry, why string) error {
	if entry == "" {
		return fmt.Errorf("%s: %s: %w", file, why, errdefs.ErrDataLoss)
	}
	return fmt.Errorf("%s: entry %q: %s: %w", file, entry, why, errdefs.ErrDataLoss)
}

// readPathList reads deleted.files or opaque.dirs as paths relative to the
// container root; a missing file is an empty list.
func readPathList(file string) ([]string, error) {
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxListSize+1))
	if err != nil {
		return nil, err
	}
	base := filepath.Base(file)
	if int64(len(data)) > maxListSize {
		return nil, unsafeEntry(base, "", fmt.Sprintf("larger than %d bytes", maxListSize))
	}
	var paths []string
	if err := json.Unmarshal(data, &paths); err != nil {
		return nil, damaged(base, "", "not a JSON array of paths: "+err.Error())
	}
	rels := make([]string, 0, len(paths))
	for _, p := range paths {
		if !strings.HasPrefix(p, "/") {
			return nil, unsafeEntry(base, p, "path is not absolute")
		}
		rel, why := cleanName(strings.TrimLeft(p, "/"))
		if rel == "." || strings.Trim(p, "/") == "" {
			why = "names the container root"
		}
		if why != "" {
			return nil, unsafeEntry(base, p, why)
		}
		rels = append(rels, rel)
	}
	return rels, nil
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

// extractArchive writes the (already scanned) archive into root.
func extractArchive(root *os.Root, f *os.File, file string) error {
	base := filepath.Base(file)
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	r := &archiveReader{f: f}
	tr := tar.NewReader(r)
	s := newArchiveState(base)
	type dirTime struct {
		rel          string
		atime, mtime time.Time
	}
	var dirs []dirTime
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return headerError(s, err)
		}
		rel, err := s.check(hdr, fi.Size()-r.off)
		if err != nil {
			return err
		}
		if rel == "." {
			continue
		}
		if err := writeEntry(root, tr, hdr, rel); err != nil {
			return fmt.Errorf("%s: entry %q: %w", base, hdr.Name, err)
		}
		if hdr.Typeflag == tar.TypeDir {
			dirs = append(dirs, dirTime{rel, accessTime(hdr), hdr.ModTime})
		}
	}
	// Directory times last: creating their entries changed them.
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if err := root.Chtimes(d.rel, d.atime, d.mtime); err != nil {
			return fmt.Errorf("%s: entry %q: %w", base, d.rel+"/", err)
		}
	}
	return nil
}

func accessTime(hdr *tar.Header) time.Time {
	if hdr.AccessTime.IsZero() {
		return hdr.ModTime
	}
	return hdr.AccessTime
}

// writeEntry creates one checked entry in root.
func writeEntry(root *os.Root, tr *tar.Reader, hdr *tar.Header, rel string) error {
	if err := makeParents(root, rel); err != nil {
		return err
	}
	mode := fs.FileMode(hdr.Mode).Perm()
	if hdr.Mode&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if hdr.Mode&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if hdr.Mode&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	existing, err := clearLeaf(root, rel, hdr.Typeflag == tar.TypeDir)
	if err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if !existing {
			if err := root.Mkdir(rel, 0o700); err != nil {
				return err
			}
		}
		if err := root.Lchown(rel, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
		return root.Chmod(rel, mode)
	case tar.TypeReg:
		out, err := root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return err
		}
		defer out.Close()
		if _, err := io.CopyN(out, tr, hdr.Size); err != nil {
			return fmt.Errorf("%w: %v", errdefs.ErrDataLoss, err)
		}
		if err := out.Chown(hdr.Uid, hdr.Gid); err != nil {
			return err
		}
		if err := out.Chmod(mode); err != nil {
			return err
		}
		if err := out.Close(); err != nil {
			return err
		}
		return root.Chtimes(rel, accessTime(hdr), hdr.ModTime)
	case tar.TypeSymlink:
		if err := root.Symlink(hdr.Linkname, rel); err != nil {
			return err
		}
		if err := root.Lchown(rel, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
		return symlinkTimes(root, rel, accessTime(hdr), hdr.ModTime)
	case tar.TypeLink:
		target := path.Clean(hdr.Linkname)
		fi, err := root.Lstat(target)
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("hard link target %q is not a regular file: %w", hdr.Linkname, errdefs.ErrInvalidArgument)
		}
		return root.Link(target, rel)
	}
	return fmt.Errorf("unsupported entry type %q: %w", hdr.Typeflag, errdefs.ErrInvalidArgument)
}

// parentsOf lists the directories above rel, outermost first.
func parentsOf(rel string) []string {
	var dirs []string
	for dir := path.Dir(rel); dir != "."; dir = path.Dir(dir) {
		dirs = append([]string{dir}, dirs...)
	}
	return dirs
}

// checkParents makes sure every existing directory above rel is a real
// directory, not a symlink that could lead out of the rootfs. It reports
// whether they all exist.
func checkParents(root *os.Root, rel string) (bool, error) {
	for _, dir := range parentsOf(rel) {
		fi, err := root.Lstat(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return false, fmt.Errorf("parent %q is a symlink in the rootfs: %w", dir, errdefs.ErrInvalidArgument)
		}
		if !fi.IsDir() {
			return false, fmt.Errorf("parent %q is not a directory in the rootfs: %w", dir, errdefs.ErrInvalidArgument)
		}
	}
	return true, nil
}

func makeParents(root *os.Root, rel string) error {
	all, err := checkParents(root, rel)
	if err != nil || all {
		return err
	}
	return root.MkdirAll(path.Dir(rel), 0o755)
}

// clearLeaf removes whatever is at rel, except a directory when a directory
// is wanted (its content is merged). It reports whether one was kept.
func clearLeaf(root *os.Root, rel string, wantDir bool) (bool, error) {
	fi, err := root.Lstat(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if fi.IsDir() {
		if wantDir {
			return true, nil
		}
		return false, root.RemoveAll(rel)
	}
	return false, root.Remove(rel)
}

// removeInRoot deletes rel and anything below it; a path that is already
// gone is fine.
func removeInRoot(root *os.Root, rel string) error {
	all, err := checkParents(root, rel)
	if err != nil || !all {
		return err
	}
	if err := root.RemoveAll(rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// symlinkTimes sets a symlink's own times, relative to its parent directory
// opened inside root.
func symlinkTimes(root *os.Root, rel string, atime, mtime time.Time) error {
	dir, err := root.Open(path.Dir(rel))
	if err != nil {
		return err
	}
	defer dir.Close()
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	return unix.UtimesNanoAt(int(dir.Fd()), path.Base(rel), ts, unix.AT_SYMLINK_NOFOLLOW)
}
