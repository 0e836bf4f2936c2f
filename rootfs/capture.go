package rootfs

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
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

// CaptureDiff writes the changes in an overlay upper directory to
// destDir as DiffFile, DeletedFilesFile and, when needed,
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
func CaptureDiff(upperDir, destDir string) (err error) {
	c := &capture{upper: upperDir, links: map[fileID]string{}}
	tarPath := filepath.Join(destDir, DiffFile)
	defer func() {
		if err != nil {
			for _, name := range []string{DiffFile, DeletedFilesFile, OpaqueDirsFile} {
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
