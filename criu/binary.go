// Package criu finds and vets the CRIU binary that runc drives, records what
// of the node a CRIU image depends on, and turns CRIU's logs into errors an
// operator can act on without opening the log.
package criu

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/gpusnap/containerd-shim-snapshot-v2/internal/reaped"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// MinVersion is the oldest CRIU this shim supports. Older releases cannot
// handle the vDSO layout of current kernels: Debian 12's CRIU 3.17 fails
// `criu check` on kernel 6.18 with "Unexpected rt vDSO area bounds", while
// 4.1.1 and 4.2.1 pass.
const MinVersion = "4.1"

// ErrTooOld marks a CRIU binary older than MinVersion, so callers can tell
// "upgrade CRIU" apart from other failures with errors.Is.
var ErrTooOld = errors.New("too old")

// Find resolves the CRIU binary to use. An empty path means "criu" from
// PATH, which is what runc would run; a path without a slash is looked up
// in PATH too.
func Find(path string) (string, error) {
	where := path
	if path == "" {
		path, where = "criu", `"criu" in PATH`
	}
	bin, err := exec.LookPath(path)
	if err != nil {
		return "", fmt.Errorf("CRIU not found (looked for %s; `make deps` installs CRIU): %w", where, err)
	}
	return bin, nil
}

// Version returns the version of the CRIU at bin, e.g. "4.2.1". If it is
// older than MinVersion the error wraps ErrTooOld and the version is still
// returned, so a diagnostic can show it.
func Version(bin string) (string, error) {
	out, err := reaped.Output(exec.Command(bin, "--version"))
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", bin, err)
	}
	v, err := parseVersion(string(out))
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", bin, err)
	}
	return v, checkVersion(bin, v)
}

// parseVersion reads the output of `criu --version`:
//
//	Version: 4.2.1
//	GitID: v4.2.1-12-gabcdef
//
// The Version line wins; a build that prints only a GitID is read from its
// tag.
func parseVersion(out string) (string, error) {
	var fromGit string
	for line := range strings.Lines(out) {
		key, val, ok := strings.Cut(line, ":")
		fields := strings.Fields(val)
		if !ok || len(fields) == 0 {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(key)) {
		case "version":
			if v := fields[0]; startsWithDigit(v) {
				return v, nil
			}
		case "gitid":
			tag, _, _ := strings.Cut(strings.TrimPrefix(fields[0], "v"), "-")
			if startsWithDigit(tag) && fromGit == "" {
				fromGit = tag
			}
		}
	}
	if fromGit != "" {
		return fromGit, nil
	}
	return "", fmt.Errorf("no version in output %q", strings.TrimSpace(out))
}

func startsWithDigit(s string) bool { return s != "" && s[0] >= '0' && s[0] <= '9' }

func checkVersion(bin, v string) error {
	if storage.CompareVersions(v, MinVersion) < 0 {
		return fmt.Errorf("criu %s at %s is %w: need %s or newer", v, bin, ErrTooOld, MinVersion)
	}
	return nil
}

// Check runs `criu check`, CRIU's own test that this kernel and these
// privileges support checkpointing. The error carries CRIU's output, which
// names the missing feature.
func Check(bin string) error {
	out, err := reaped.CombinedOutput(exec.Command(bin, "check"))
	if err != nil {
		return fmt.Errorf("%s check failed: %w: %s", bin, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Patch names one of the project's CRIU patches (contrib/criu) by what
// only a CRIU carrying it has: the environment variable it reads or the
// option it adds.
type Patch struct {
	Name   string
	option bool // Name is an option, which `criu --help` lists
}

// The project's CRIU patches.
var (
	PatchHugePages        = Patch{Name: "CRIU_RESTORE_HUGEPAGES"}          // 0001: restore_huge_pages
	PatchThreads          = Patch{Name: "CRIU_RESTORE_THREADS"}            // 0002: restore_threads
	PatchInheritedDevices = Patch{Name: "inherited-devices", option: true} // 0003: leftovers of a CUDA parent
)

// HasPatch reports whether the CRIU at bin carries patch; CRIU has no
// feature query for them. An option is looked for in `criu --help`, which
// also answers through a wrapper script (a node whose CRIU needs its own
// libraries); an environment variable, which no output names, in the
// binary itself.
func HasPatch(bin string, patch Patch) (bool, error) {
	if patch.option {
		out, err := reaped.Output(exec.Command(bin, "--help"))
		if err != nil {
			return false, fmt.Errorf("%s --help: %w", bin, err)
		}
		return bytes.Contains(out, []byte("--"+patch.Name)), nil
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return false, err
	}
	return bytes.Contains(data, []byte(patch.Name)), nil
}
