// Package cgroupfs empties and removes a container's cgroup directly through
// the cgroup file system, for the one case runc cannot: processes that a
// CRIU killed mid-restore had already restored into the container's cgroup.
// runc has no state for them (its restore failed), yet its next create in
// that cgroup fails with "container's cgroup is not empty".
package cgroupfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Root is where the cgroup hierarchies are mounted.
var Root = "/sys/fs/cgroup"

// Resolve turns an OCI spec's linux.cgroupsPath into the cgroup's path
// relative to each hierarchy's root, the way runc does: a plain path as it
// is, and systemd's "slice:prefix:name" as <expanded slice>/<prefix>-<name>.scope.
func Resolve(cgroupsPath string) (string, error) {
	parts := strings.Split(cgroupsPath, ":")
	if len(parts) != 3 {
		if cgroupsPath == "" || strings.Contains(cgroupsPath, "..") {
			return "", fmt.Errorf("cgroupsPath %q: not a usable cgroup path", cgroupsPath)
		}
		return filepath.Clean("/" + cgroupsPath), nil
	}
	slice, prefix, name := parts[0], parts[1], parts[2]
	if slice == "" {
		slice = "system.slice"
	}
	dir, err := expandSlice(slice)
	if err != nil {
		return "", fmt.Errorf("cgroupsPath %q: %w", cgroupsPath, err)
	}
	unit := name
	if !strings.HasSuffix(name, ".slice") {
		if prefix != "" {
			unit = prefix + "-" + name
		}
		unit += ".scope"
	}
	if strings.Contains(unit, "/") || name == "" {
		return "", fmt.Errorf("cgroupsPath %q: invalid unit name", cgroupsPath)
	}
	return filepath.Join(dir, unit), nil
}

// expandSlice turns a systemd slice name into its path: a-b-c.slice lives
// at /a.slice/a-b.slice/a-b-c.slice.
func expandSlice(slice string) (string, error) {
	name, ok := strings.CutSuffix(slice, ".slice")
	if !ok || name == "" || strings.Contains(name, "/") {
		return "", fmt.Errorf("invalid slice name %q", slice)
	}
	if name == "-" {
		return "/", nil
	}
	var path, prefix string
	for _, part := range strings.Split(name, "-") {
		if part == "" {
			return "", fmt.Errorf("invalid slice name %q", slice)
		}
		path += "/" + prefix + part + ".slice"
		prefix += part + "-"
	}
	return path, nil
}

// Dirs lists the directories of the cgroup rel in every mounted hierarchy
// (the unified one, or each v1 controller), deepest descendants first.
func Dirs(rel string) []string {
	var dirs []string
	candidates := []string{filepath.Join(Root, rel)}
	hierarchies, _ := filepath.Glob(filepath.Join(Root, "*"))
	for _, h := range hierarchies {
		if fi, err := os.Lstat(h); err == nil && fi.IsDir() {
			candidates = append(candidates, filepath.Join(h, rel))
		}
	}
	for _, top := range candidates {
		if _, err := os.Stat(filepath.Join(top, "cgroup.procs")); err != nil {
			continue
		}
		var tree []string
		filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				tree = append(tree, p)
			}
			return nil
		})
		for i := len(tree) - 1; i >= 0; i-- {
			dirs = append(dirs, tree[i])
		}
	}
	return dirs
}

// Pids lists the processes in the cgroup rel and its descendants.
func Pids(rel string) []int {
	seen := map[int]bool{}
	var pids []int
	for _, d := range Dirs(rel) {
		data, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
				seen[pid] = true
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// KillAndRemove kills every process in the cgroup rel with SIGKILL, waits
// until the cgroup is empty, and removes its directories in every
// hierarchy. A cgroup that does not exist is no error.
func KillAndRemove(rel string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		pids := Pids(rel)
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s still holds processes %v after %s", rel, pids, within)
		}
		thaw(rel) // a frozen process cannot die
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var errs []error
	for _, d := range Dirs(rel) {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// thaw lifts a freeze of the cgroup rel (v1 freezer or v2 cgroup.freeze).
func thaw(rel string) {
	for _, d := range Dirs(rel) {
		if _, err := os.Stat(filepath.Join(d, "freezer.state")); err == nil {
			os.WriteFile(filepath.Join(d, "freezer.state"), []byte("THAWED"), 0o644)
		}
		if _, err := os.Stat(filepath.Join(d, "cgroup.freeze")); err == nil {
			os.WriteFile(filepath.Join(d, "cgroup.freeze"), []byte("0"), 0o644)
		}
	}
}
