package storage

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
)

// Fingerprint is what a CRIU image depends on from the node that wrote it.
// It is recorded in every manifest and compared with the restoring node
// before any restore step runs.
type Fingerprint struct {
	Arch          string `json:"arch"`
	Kernel        string `json:"kernel"`
	CRIUVersion   string `json:"criu_version"`
	CgroupVersion int    `json:"cgroup_version"`
}

// MismatchError is why a checkpoint can't be restored on a node. Its fields
// let the shim log and report the refusal without parsing the message.
type MismatchError struct {
	Field      string // manifest field, e.g. "criu_version"
	Checkpoint string // the checkpoint's value
	Node       string // this node's value
	Rule       string // what would have been compatible
}

func (e *MismatchError) Error() string {
	msg := fmt.Sprintf("%s: checkpoint has %s, node has %s", e.Field, orUnknown(e.Checkpoint), orUnknown(e.Node))
	if e.Rule != "" {
		msg += " (" + e.Rule + ")"
	}
	return msg
}

func orUnknown(v string) string { return cmp.Or(v, "unknown") }

// Compatible reports whether a checkpoint taken on f can be restored on
// node, as a *MismatchError naming the first field that differs. A value the
// checkpoint did not record can't be proven compatible, so it never is.
//
// The kernel must match in major.minor: CRIU images depend on kernel ABI
// details (syscalls, /proc formats, namespaces) that change between
// releases, while patch releases keep them. A stricter check can be
// configured later if a deployment needs it.
func (f Fingerprint) Compatible(node Fingerprint) error {
	switch {
	case f.Arch == "" || f.Arch != node.Arch:
		return &MismatchError{"arch", f.Arch, node.Arch, "must be equal"}
	case f.CgroupVersion == 0 || f.CgroupVersion != node.CgroupVersion:
		return &MismatchError{"cgroup_version", strconv.Itoa(f.CgroupVersion), strconv.Itoa(node.CgroupVersion), "must be equal"}
	case f.CRIUVersion == "" || node.CRIUVersion == "" || CompareVersions(node.CRIUVersion, f.CRIUVersion) < 0:
		return &MismatchError{"criu_version", f.CRIUVersion, node.CRIUVersion, "node must be the same or newer"}
	case f.Kernel == "" || kernelSeries(f.Kernel) != kernelSeries(node.Kernel):
		return &MismatchError{"kernel", f.Kernel, node.Kernel, "major.minor must match"}
	}
	return nil
}

// kernelSeries is the major.minor of a kernel release like
// 6.8.0-45-generic, or the whole release if it has no such form.
func kernelSeries(release string) string {
	major, rest, _ := strings.Cut(release, ".")
	minor, _, _ := strings.Cut(rest, ".")
	if major, minor = leadingDigits(major), leadingDigits(minor); major == "" || minor == "" {
		return release
	}
	return major + "." + minor
}

// CompareVersions compares dotted versions numerically ("4.10" > "4.9") and
// returns -1, 0 or +1. Missing components count as 0 ("4.1" == "4.1.0"), and
// only each component's leading digits count, so "4.1-rc1" == "4.1".
func CompareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(as), len(bs)) {
		if c := cmp.Compare(component(as, i), component(bs, i)); c != 0 {
			return c
		}
	}
	return 0
}

func component(parts []string, i int) int {
	if i >= len(parts) {
		return 0
	}
	n, _ := strconv.Atoi(leadingDigits(parts[i]))
	return n
}

func leadingDigits(s string) string {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i]
}
