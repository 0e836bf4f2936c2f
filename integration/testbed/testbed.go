// Package testbed runs a private containerd for tests, benchmarks and the
// demo: its own root, state, sockets and CNI network, a `runc` and a
// `snapshot` runtime handler, and local images. Stop tears it all down and
// Leftovers reports anything that survived (mounts, processes, cgroups,
// sockets, network namespaces).
package testbed

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
)

// The baseline runtime type the bed configures beside the shim's
// (containerdconfig.RuntimeType), and the shim's binary.
const (
	RuncRuntime = "io.containerd.runc.v2"
	ShimBinary  = containerdconfig.ShimBinary
)

// Config says what the bed runs.
type Config struct {
	// Dir holds everything the bed creates; it is removed by Stop.
	Dir string
	// ShimPath is the built containerd-shim-snapshot-v2. Empty starts a
	// containerd without it: no snapshot handler at all, as on a node the
	// installer has not run on yet.
	ShimPath string
	// ShimOptions is the TOML body of the snapshot handler's options file.
	ShimOptions string
	// Env is more environment for containerd and so for the shims it starts.
	Env []string
	// Handlers are more snapshot runtime handlers: name to options TOML.
	Handlers map[string]string
	// Namespace is the containerd namespace for ctr commands.
	Namespace string
	// Subnet is the CNI bridge subnet for pods.
	Subnet string
	// Bridge is the CNI bridge's name; a second bed next to another needs
	// its own (Stop deletes it).
	Bridge string
	// ConfigFile is containerd's main config, written by the bed;
	// Dir/config.toml unless set.
	ConfigFile string
}

// Bed is a running private containerd.
type Bed struct {
	Config
	Socket      string
	OptionsPath string
	// mu guards daemon and exited, which a restart replaces; exited is
	// closed when the daemon has exited.
	mu          sync.Mutex
	daemon      *exec.Cmd
	exited      chan struct{}
	logPath     string
	netnsBefore map[string]bool
	// controlBefore lists the shim's control directories before the bed started.
	controlBefore map[string]bool
}

// Start writes the configuration and starts containerd, waiting until it
// answers. On failure it returns containerd's log in the error.
func Start(cfg Config) (*Bed, error) {
	if cfg.Namespace == "" {
		cfg.Namespace = "snapshot-test"
	}
	if cfg.Subnet == "" {
		cfg.Subnet = "10.88.77.0/24"
	}
	if cfg.Bridge == "" {
		cfg.Bridge = "snaptest0"
	}
	if cfg.ConfigFile == "" {
		cfg.ConfigFile = filepath.Join(cfg.Dir, "config.toml")
	}
	b := &Bed{Config: cfg, Socket: filepath.Join(cfg.Dir, "containerd.sock"),
		OptionsPath: filepath.Join(cfg.Dir, "snapshot-options.toml"), logPath: filepath.Join(cfg.Dir, "containerd.log"),
		netnsBefore: netnsNames(), controlBefore: DirNames(controlRoot)}
	if err := b.writeConfig(); err != nil {
		return nil, err
	}
	if err := ShareNetnsDir(); err != nil {
		return nil, err
	}
	if err := b.startDaemon(); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *Bed) writeConfig() error {
	for _, d := range []string{"root", "state", "cni", "ipam", "logs", "bin"} {
		if err := os.MkdirAll(filepath.Join(b.Dir, d), 0o700); err != nil {
			return err
		}
	}
	// containerd finds shims for `ctr --runtime` on its PATH: give it the
	// built shim under its canonical name.
	if b.ShimPath != "" {
		shim := filepath.Join(b.Dir, "bin", ShimBinary)
		if err := os.Symlink(b.ShimPath, shim); err != nil && !os.IsExist(err) {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(b.Dir, "crictl.yaml"), []byte("runtime-endpoint: unix://"+b.Socket+"\n"), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.Dir, "bin", "criu"), []byte(criuWrapper(b.Dir)), 0o755); err != nil {
		return err
	}
	if err := writeCRIUKillResumed(b.Dir); err != nil {
		return err
	}
	if err := os.WriteFile(b.OptionsPath, []byte(b.ShimOptions), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.Dir, "cni", "10-snapshot-test.conflist"), []byte(b.cniConfig()), 0o600); err != nil {
		return err
	}
	config := b.containerdConfig()
	for name, body := range b.Handlers {
		path := filepath.Join(b.Dir, "handler-"+name+".toml")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			return err
		}
		config += fmt.Sprintf(`
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.%[1]s]
  runtime_type = %[2]q
  runtime_path = %[3]q
  pod_annotations = ["gpusnap.io/*"]

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.%[1]s.options]
  ConfigPath = %[4]q
`, name, containerdconfig.RuntimeType, b.ShimPath, path)
	}
	if err := os.MkdirAll(filepath.Dir(b.ConfigFile), 0o755); err != nil {
		return err
	}
	return os.WriteFile(b.ConfigFile, []byte(config), 0o600)
}

// containerdConfig is the main config: the runc handler and, with a shim,
// the snapshot handler.
func (b *Bed) containerdConfig() string {
	config := b.baseConfig()
	if b.ShimPath == "" {
		return config
	}
	return config + fmt.Sprintf(`
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.snapshot]
  runtime_type = %[1]q
  runtime_path = %[2]q
  pod_annotations = ["gpusnap.io/*"]

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.snapshot.options]
  ConfigPath = %[3]q
`, containerdconfig.RuntimeType, b.ShimPath, b.OptionsPath)
}

// baseConfig is everything but the snapshot handler.
func (b *Bed) baseConfig() string {
	return fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins.'io.containerd.grpc.v1.cri']
  enable_criu = true

[plugins.'io.containerd.nri.v1.nri']
  disable = true

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "registry.k8s.io/pause:3.10.2"

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]
  conf_dir = %[5]q

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = "runc"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = %[6]q
`, filepath.Join(b.Dir, "root"), filepath.Join(b.Dir, "state"), b.Socket, b.Socket+".ttrpc",
		filepath.Join(b.Dir, "cni"), RuncRuntime)
}

func (b *Bed) cniConfig() string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "snapshot-test",
  "plugins": [{
    "type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "dataDir": %q}
  }]
}`, b.Bridge, b.Subnet, filepath.Join(b.Dir, "ipam"))
}

func (b *Bed) startDaemon() error {
	// Appended to: a restarted containerd logs after the one before.
	logf, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("containerd", "--config", b.ConfigFile, "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(append(os.Environ(), b.Env...), "PATH="+filepath.Join(b.Dir, "bin")+":"+os.Getenv("PATH"))
	// Pdeathsig: a killed test run must not leave its containerd behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting containerd: %w", err)
	}
	exited := make(chan struct{})
	var waitErr error
	b.mu.Lock()
	b.daemon, b.exited = cmd, exited
	b.mu.Unlock()
	go func() { waitErr = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("containerd exited (%v); log:\n%s", waitErr, b.Log())
		case <-time.After(200 * time.Millisecond):
		}
		if _, err := b.Ctr("version"); err == nil {
			return nil
		}
	}
	cmd.Process.Kill()
	return fmt.Errorf("containerd did not answer within 30s; log:\n%s", b.Log())
}

// Log returns containerd's log so far (the last 16 KiB).
func (b *Bed) Log() string {
	data, _ := os.ReadFile(b.logPath)
	if len(data) > 16<<10 {
		data = data[len(data)-16<<10:]
	}
	return string(data)
}

// Ctr runs ctr against the bed in its namespace and returns its stdout.
func (b *Bed) Ctr(args ...string) (string, error) {
	return b.CtrNS(b.Namespace, args...)
}

// CtrNS runs ctr in the given namespace.
func (b *Bed) CtrNS(ns string, args ...string) (string, error) {
	return run(exec.Command("ctr", append([]string{"--address", b.Socket, "--namespace", ns}, args...)...))
}

// CtrCmd returns an unstarted ctr command, for tests that wire stdin or a tty.
func (b *Bed) CtrCmd(args ...string) *exec.Cmd {
	return exec.Command("ctr", append([]string{"--address", b.Socket, "--namespace", b.Namespace}, args...)...)
}

// Crictl runs crictl against the bed's CRI endpoint.
func (b *Bed) Crictl(args ...string) (string, error) {
	ep := "unix://" + b.Socket
	base := []string{"--config", filepath.Join(b.Dir, "crictl.yaml"), "--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "60s"}
	return run(exec.Command("crictl", append(base, args...)...))
}

// Import loads an OCI tarball into the bed's namespace and, for CRI, k8s.io.
func (b *Bed) Import(tarball string) error {
	for _, ns := range []string{b.Namespace, "k8s.io"} {
		if out, err := b.CtrNS(ns, "images", "import", tarball); err != nil {
			return fmt.Errorf("importing %s into %s: %v: %s", tarball, ns, err, out)
		}
	}
	return nil
}

// run runs a client command and returns its stdout; on failure the error
// holds stderr too.
func run(cmd *exec.Cmd) (string, error) {
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return out.String(), fmt.Errorf("%s: %w: %s%s", strings.Join(cmd.Args, " "), err, out.String(), strings.TrimSpace(errOut.String()))
		}
		return out.String(), nil
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		return out.String(), fmt.Errorf("%s: timed out", strings.Join(cmd.Args, " "))
	}
}

// CRIUKillFile, when it exists in the bed's directory, holds a delay in
// seconds: every CRIU started through containerd's PATH is then killed with
// SIGKILL that long after it starts (fault injection for tests).
const CRIUKillFile = "kill-criu-after"

// CRIUKillForked in CRIUKillFile, instead of a delay, kills each CRIU
// with SIGKILL as soon as it has forked a process it restores (one whose
// command line starts "criu: restore"), the moment after which those
// processes keep CRIU's socket to runc open.
const CRIUKillForked = "forked"

// CRIUKillResumed in CRIUKillFile kills each CRIU of a runc restore with
// SIGKILL right after the restored tree resumed, before CRIU answers runc:
// runc has recorded the container (CRIU's post-restore notification) and
// reports a failed restore while it runs. A CRIU action script does it, at
// "post-resume", from a configuration file the wrapper names in
// CRIU_CONFIG_FILE (CRIU reads that in RPC mode too).
const CRIUKillResumed = "resumed"

// The files of CRIUKillResumed in the bed's directory.
const (
	criuKillResumedConfig = "criu-kill-resumed.conf"
	criuKillResumedScript = "criu-kill-resumed.sh"
)

// writeCRIUKillResumed writes CRIUKillResumed's configuration file and
// action script. The script's parent is the CRIU that runs it.
func writeCRIUKillResumed(dir string) error {
	script := filepath.Join(dir, criuKillResumedScript)
	body := "#!/bin/sh\n[ \"$CRTOOLS_SCRIPT_ACTION\" = post-resume ] && kill -9 $PPID\nexit 0\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, criuKillResumedConfig), []byte("action-script "+script+"\n"), 0o644)
}

// CRIUDelayFile, when it exists in the bed's directory, holds a delay in
// seconds that every RPC-mode CRIU (runc's dumps and restores) sleeps
// before it starts: a slow disk, for tests of timeouts.
const CRIUDelayFile = "delay-criu"

// criuWrapper is the `criu` containerd's shims find first on their PATH: it
// runs the real CRIU, in the same process, unless CRIUKillFile asks for a
// SIGKILL after a delay. With CRIU_CALL_LOG set in containerd's environment
// it appends "criu * <pid> 0" to that file for every RPC-mode CRIU runc
// starts (its dumps and restores; not the shim's own version query over
// CRIU's RPC), so tests can check when CRIU ran relative to other
// calls logged there in the same format (the fake CUDA driver's). The
// append runs in a subshell: dash closes a builtin's fd 1 while it
// redirects it, and runc reads /proc/<criu>/fd/1 right after starting CRIU
// (a restore failed once in ~600 with "readlink /proc/<pid>/fd/1: no such
// file or directory").
func criuWrapper(dir string) string {
	return fmt.Sprintf(`#!/bin/sh
runc_rpc=
if [ "$1" = swrk ] && [ "$(cat /proc/$PPID/comm 2>/dev/null)" = runc ]; then
  runc_rpc=1
fi
if [ -n "$CRIU_CALL_LOG" ] && [ -n "$runc_rpc" ]; then
  (echo "criu * $$ 0" >> "$CRIU_CALL_LOG")
fi
d=%[1]q
if [ -f "$d" ] && [ -n "$runc_rpc" ]; then
  sleep "$(cat "$d")"
fi
f=%[2]q
if [ -f "$f" ] && [ "$(cat "$f")" = %[4]s ]; then
  (while [ -d /proc/$$ ]; do
    if pgrep -P $$ -f '^criu: restore' >/dev/null; then kill -9 $$; break; fi
    sleep 0.02
  done) &
elif [ -f "$f" ] && [ "$(cat "$f")" = %[5]s ]; then
  [ -n "$runc_rpc" ] && export CRIU_CONFIG_FILE=%[6]q
elif [ -f "$f" ]; then
  delay=$(cat "$f")
  (sleep "$delay"; kill -9 $$ 2>/dev/null) &
fi
PATH=$(echo "$PATH" | sed "s|%[3]s:||")
exec criu "$@"
`, filepath.Join(dir, CRIUDelayFile), filepath.Join(dir, CRIUKillFile), filepath.Join(dir, "bin"), CRIUKillForked,
		CRIUKillResumed, filepath.Join(dir, criuKillResumedConfig))
}
