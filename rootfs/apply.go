package rootfs

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// maxListSize bounds deleted.files and opaque.dirs. A variable so tests can
// lower it.
var maxListSize int64 = 64 << 20

// ApplyDiff applies a rootfs diff from srcDir (as written by
// CaptureDiff, or by CRI-O/Podman; a missing file means no changes of
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
func ApplyDiff(srcDir, rootfs string) error {
	opaque, err := readPathList(filepath.Join(srcDir, OpaqueDirsFile))
	if err != nil {
		return err
	}
	deleted, err := readPathList(filepath.Join(srcDir, DeletedFilesFile))
	if err != nil {
		return err
	}
	tarPath := filepath.Join(srcDir, DiffFile)
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
			return unsafeEntry(OpaqueDirsFile, "/"+d, "opaque directory has no directory entry in "+DiffFile)
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
