package shim

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gpusnap/containerd-shim-snapshot-v2/criu"
)

// CRIU configuration per container. runc hands CRIU the file named by the
// spec annotation org.criu.config, else /etc/criu/runc.conf; settings in
// that file override runc's own. The shim points every container at a file
// of its own in the bundle, made of the node's runc.conf plus tcp-close:
// a checkpoint is restored into a new pod with other addresses, where the
// workload's established TCP connections (probes, clients) cannot live on,
// so CRIU leaves them out of the dump and the restored process sees them
// closed. A client that asks for tcp-established gets its connections
// dumped instead. skip-in-flight is always set: a connection still in a
// listening socket's queue (a probe arriving during the dump) would fail the
// dump otherwise; dropped, its client simply retries. A spec that already
// names a CRIU configuration keeps it.
const (
	criuConfigAnnotation = "org.criu.config"
	nodeCRIUConfig       = "/etc/criu/runc.conf"
	criuConfigName       = "criu.conf"
)

// addCRIUConfig points the spec at the container's own CRIU configuration
// and writes it for restores; it reports whether the spec changed.
func addCRIUConfig(spec *specs.Spec, bundle string) (bool, error) {
	if _, set := spec.Annotations[criuConfigAnnotation]; set {
		return false, nil
	}
	path := filepath.Join(bundle, criuConfigName)
	if err := writeCRIUConfig(path, true); err != nil {
		return false, err
	}
	if spec.Annotations == nil {
		spec.Annotations = map[string]string{}
	}
	spec.Annotations[criuConfigAnnotation] = path
	return true, nil
}

// prepareCRIUConfigForDump rewrites the container's CRIU configuration for
// the dump r asks for: connections closed unless it wants them dumped, and
// the processes inherited (whose GPU device files came from a CUDA parent)
// named to CRIU, which leaves those files out. A spec that names its own CRIU configuration
// cannot carry the leftovers: their dump is refused with the reason.
func prepareCRIUConfigForDump(c *container, r *taskAPI.CheckpointTaskRequest, inherited []int) error {
	if c.spec.Annotations[criuConfigAnnotation] != filepath.Join(c.bundle, criuConfigName) {
		if len(inherited) > 0 {
			return fmt.Errorf("processes %v inherited GPU device files from a CUDA process, which CRIU must be told about, "+
				"but the container names its own CRIU configuration (%s): %w", inherited, criuConfigAnnotation, ErrGPUDeviceHeld)
		}
		return nil
	}
	return writeCRIUConfig(filepath.Join(c.bundle, criuConfigName), !wantsTCPEstablished(r), inherited...)
}

// writeCRIUConfig writes the node's runc.conf plus skip-in-flight, tcp-close
// if asked, and inherited-devices for the pids given (contrib/criu's 0003).
func writeCRIUConfig(path string, tcpClose bool, inherited ...int) error {
	base, err := os.ReadFile(nodeCRIUConfig)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	var b bytes.Buffer
	b.Write(base)
	if len(base) > 0 && base[len(base)-1] != '\n' {
		b.WriteByte('\n')
	}
	b.WriteString("skip-in-flight\n")
	if tcpClose {
		b.WriteString("tcp-close\n")
	}
	if len(inherited) > 0 {
		pids := make([]string, len(inherited))
		for i, pid := range inherited {
			pids[i] = strconv.Itoa(pid)
		}
		fmt.Fprintf(&b, "inherited-devices %s\n", strings.Join(pids, ","))
	}
	return os.WriteFile(path, b.Bytes(), 0o600)
}

// wantsTCPEstablished reports whether the checkpoint request asks CRIU to
// dump established TCP connections (ctr t checkpoint --tcp-established...).
func wantsTCPEstablished(r *taskAPI.CheckpointTaskRequest) bool {
	opts := checkpointOptions(r)
	return opts != nil && opts.OpenTcp
}

// useCRIU makes the CRIU at criuPath the one runc runs: runc starts `criu`
// from its PATH, which it inherits from this shim, so the directory of
// criu_path goes first in the shim's PATH (its base name is "criu", which
// the options check). One shim serves one pod, whose containers share the
// handler, so a process-wide setting is per handler.
func useCRIU(criuPath string) {
	if criuPath == "" {
		return
	}
	dir := filepath.Dir(criuPath)
	path := os.Getenv("PATH")
	if first, _, _ := strings.Cut(path, ":"); first == dir {
		return
	}
	os.Setenv("PATH", dir+":"+path)
}

// Where CRIU's logs of a container end up: containerd's runc shim copies a
// failed dump's log into the bundle, and runc restores with the bundle's
// work directory as CRIU's work path.
const (
	criuDumpLog    = "criu-dump.log"
	criuWorkLink   = "work"
	criuRestoreLog = criuWorkLink + "/restore.log"
)

// explainCRIU adds CRIU's own error lines (criu.ExplainLog) to the error of
// a failed dump or restore, so that the status file, the event and the
// error returned to containerd say what went wrong, not only where the log
// is. A log older than the step (since) is an earlier run's: runc failed
// before CRIU ran, and err is returned as is, as it is without a log.
func explainCRIU(err error, logPath string, since time.Time) error {
	if st, statErr := os.Stat(logPath); statErr != nil || st.ModTime().Before(since) {
		return err
	}
	var why *criu.LogError
	if errors.As(criu.ExplainLog(logPath), &why) && len(why.Errors) > 0 {
		return fmt.Errorf("%w; %v", err, why)
	}
	return err
}

// criuDumpWork is the work directory the shim gives CRIU's dump when the
// client names none.
const criuDumpWork = "criu-dump-work"

// keepDumpWorkDir makes the dump run in a work directory that outlives it,
// so that the shim can read CRIU's statistics afterwards: the client's
// (runc's WorkPath option), or criuDumpWork in the bundle, which remove
// deletes (containerd's runc shim deletes its own, statistics included, as
// soon as the dump returns). A request whose options are not runc's is left
// alone: work is then empty and there are no statistics.
func keepDumpWorkDir(c *container, r *taskAPI.CheckpointTaskRequest) (work string, remove func(), err error) {
	opts := checkpointOptions(r)
	switch {
	case opts != nil && opts.WorkPath != "":
		return opts.WorkPath, func() {}, nil
	case opts == nil && r.Options != nil:
		return "", func() {}, nil
	case opts == nil:
		opts = &runcoptions.CheckpointOptions{}
	}
	work = filepath.Join(c.bundle, criuDumpWork)
	if err := os.RemoveAll(work); err != nil {
		return "", nil, err
	}
	if err := os.Mkdir(work, 0o700); err != nil {
		return "", nil, err
	}
	opts.WorkPath = work
	if r.Options, err = typeurl.MarshalAnyToProto(opts); err != nil {
		os.RemoveAll(work)
		return "", nil, err
	}
	return work, func() { os.RemoveAll(work) }, nil
}
