package install

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// host maps a node path to where the installer reaches it.
func (c Config) host(p string) string {
	return filepath.Join(c.HostRoot, p)
}

// fileInfo is what the installer needs to know about a target file.
type fileInfo struct {
	exists bool
	data   []byte
	mode   fs.FileMode
}

// readTarget reads a file the installer may replace. Anything but a
// regular file is refused: renaming over a symlink would cut it, and
// uninstall could not put it back.
func readTarget(path string) (fileInfo, error) {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fileInfo{}, nil
	}
	if err != nil {
		return fileInfo{}, err
	}
	if !st.Mode().IsRegular() {
		return fileInfo{}, fmt.Errorf("%s exists and is not a regular file (%s); move it away first", path, st.Mode().Type())
	}
	data, err := os.ReadFile(path)
	return fileInfo{exists: true, data: data, mode: st.Mode().Perm()}, err
}

// writeAtomic replaces path in one rename: readers (containerd, a shim
// starting) see the old or the new file, never half of one, and replacing
// a running binary does not fail with "text file busy".
func writeAtomic(path string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename or removal in dir durable across a power loss.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// mkdirs creates dir (a host path) and its missing parents with mode 0755
// and returns the node paths it created, outermost first, so uninstall can
// remove them again.
func (c Config) mkdirs(dir string) ([]string, error) {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(c.host(d)); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		missing = append([]string{d}, missing...)
		if d == filepath.Dir(d) {
			break
		}
	}
	for _, d := range missing {
		if err := os.Mkdir(c.host(d), 0o755); err != nil {
			return nil, err
		}
		// Mkdir's mode goes through the umask; the brief is 0755.
		if err := os.Chmod(c.host(d), 0o755); err != nil {
			return nil, err
		}
	}
	return missing, nil
}

// removeDirs removes the directories the installer created, deepest first,
// when they are empty; one that still holds someone's file stays.
func (c Config) removeDirs(dirs []string) {
	sorted := append([]string(nil), dirs...)
	sort.Slice(sorted, func(i, j int) bool {
		return strings.Count(sorted[i], "/") > strings.Count(sorted[j], "/")
	})
	for _, d := range sorted {
		switch err := os.Remove(c.host(d)); {
		case err == nil:
			c.say("removed directory %s", d)
		case errors.Is(err, fs.ErrNotExist):
		default:
			c.say("kept directory %s (not empty)", d)
		}
	}
}

// checkHostRoot refuses a host root that is not there: a DaemonSet that
// forgot the host mount must fail, not install into its own container.
func (c Config) checkHostRoot() error {
	st, err := os.Stat(c.HostRoot)
	if err == nil && !st.IsDir() {
		err = errors.New("not a directory")
	}
	if err != nil {
		return fmt.Errorf("--host-root %s: %w", c.HostRoot, err)
	}
	return nil
}

// checkHostSymlinks refuses node paths that cross an absolute symlink when
// HostRoot is not "/": such a link would resolve inside the installer's
// container instead of on the host, and the write would land there.
func (c Config) checkHostSymlinks(paths ...string) error {
	if filepath.Clean(c.HostRoot) == "/" {
		return nil
	}
	for _, p := range paths {
		for d := p; d != filepath.Dir(d); d = filepath.Dir(d) {
			target, err := os.Readlink(c.host(d))
			if err == nil && filepath.IsAbs(target) {
				return fmt.Errorf("%s is a symlink to %s, which would resolve outside --host-root %s; pass the resolved path instead", d, target, c.HostRoot)
			}
		}
	}
	return nil
}
