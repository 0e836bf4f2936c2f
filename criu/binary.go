// Package criu finds and vets the CRIU binary that runc drives, records what
// of the node a CRIU image depends on, and turns CRIU's logs into errors an
// operator can act on without opening the log.
package criu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

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
//
// It asks CRIU itself over its RPC (`criu swrk`, messages from go-criu's
// rpc package), the interface runc drives CRIU through and reads the
// version from before a checkpoint: numbers rather than text to parse, and
// a CRIU that cannot answer there cannot serve runc either. go-criu's own
// client (Criu.GetCriuVersion) is not used: it waits for CRIU with
// exec.Cmd.Wait, which races with the shim's reaper (see internal/reaped),
// and it reports a git build as the next minor release, which would change
// the version a checkpoint's fingerprint records.
func Version(bin string) (string, error) {
	v, err := rpcVersion(bin)
	if err != nil {
		return "", fmt.Errorf("%s swrk, version request: %w", bin, err)
	}
	return v, checkVersion(bin, v)
}

// rpcTimeout bounds one RPC exchange with CRIU.
const rpcTimeout = 30 * time.Second

// rpcVersion sends CRIU one VERSION request and renders the answer as CRIU
// prints its version: major.minor, and .sublevel when it is not zero.
func rpcVersion(bin string) (string, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("socketpair: %w", err)
	}
	client, server := os.NewFile(uintptr(fds[0]), "criu-rpc"), os.NewFile(uintptr(fds[1]), "criu-rpc-swrk")
	defer client.Close()
	req, err := proto.Marshal(&rpc.CriuReq{Type: rpc.CriuReqType_VERSION.Enum()})
	if err != nil {
		server.Close()
		return "", err
	}
	// Queued before CRIU starts: swrk reads it first thing.
	if _, err := client.Write(req); err != nil {
		server.Close()
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "swrk", "3")
	cmd.ExtraFiles = []*os.File{server}
	exited := make(chan error, 1)
	go func() {
		_, err := reaped.Output(cmd)
		server.Close() // now a read with no answer queued ends in EOF
		exited <- err
	}()
	buf := make([]byte, 4096)
	n, readErr := client.Read(buf)
	client.Close() // swrk exits when its client hangs up
	if err := <-exited; err != nil {
		return "", err // with CRIU's standard error
	}
	if readErr != nil {
		return "", fmt.Errorf("exited without answering: %w", readErr)
	}
	var resp rpc.CriuResp
	if err := proto.Unmarshal(buf[:n], &resp); err != nil {
		return "", fmt.Errorf("answer: %w", err)
	}
	if !resp.GetSuccess() || resp.GetType() != rpc.CriuReqType_VERSION || resp.GetVersion() == nil {
		return "", fmt.Errorf("no version in the answer (type %v, success %v, errno %d, %s)",
			resp.GetType(), resp.GetSuccess(), resp.GetCrErrno(), resp.GetCrErrmsg())
	}
	ver := resp.GetVersion()
	v := fmt.Sprintf("%d.%d", ver.GetMajorNumber(), ver.GetMinorNumber())
	if ver.GetSublevel() != 0 {
		v += fmt.Sprintf(".%d", ver.GetSublevel())
	}
	return v, nil
}

func checkVersion(bin, v string) error {
	if storage.CompareVersions(v, MinVersion) < 0 {
		return fmt.Errorf("criu %s at %s is %w: need %s or newer", v, bin, ErrTooOld, MinVersion)
	}
	return nil
}

// Check runs `criu check`, CRIU's own test that this kernel and these
// privileges support checkpointing. The error carries CRIU's output, which
// names the missing feature. It stays a command: over the RPC a CHECK
// answers only yes or no (go-criu does not offer it, and its FeatureCheck
// covers only memory tracking, lazy pages and pidfd store, none of which
// this shim uses).
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
	PatchPopulate         = Patch{Name: "CRIU_RESTORE_POPULATE"}           // 0004: restore_populate
)

// HasPatch reports whether the CRIU at bin carries patch; CRIU has no
// feature query for them, and its RPC (go-criu) sees neither command-line
// options nor the environment. An option is looked for in `criu --help`, which
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
