// Command gpusnap-install installs containerd-shim-snapshot-v2 on a node:
// binaries, one options file per runtime handler, a containerd drop-in that
// declares the handlers, and the import of the drop-in directory in
// containerd's main config. It is idempotent (a rerun with the same flags
// changes nothing and does not restart containerd) and --uninstall takes
// back exactly what it added. It runs as a plain command on a node, or in a
// privileged pod with the host mounted and --host-root pointing at it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/gpusnap/containerd-shim-snapshot-v2/install"
)

// Exit statuses, as gpusnap's: 1 a failed run, 2 a command line that can't
// be understood.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

const usage = `Usage: gpusnap-install [flags] --handler name=NAME[,KEY=VALUE...] ...
       gpusnap-install --uninstall [--options-dir DIR] [--host-root DIR] [--restart-cmd CMD]

Install containerd-shim-snapshot-v2 on this node and declare its runtime
handlers to containerd (config version 3). Rerunning with the same flags
changes nothing; containerd is restarted only when its configuration changed.

--handler KEYs are the shim's options keys (store, checkpoint, restore,
auto_checkpoint, control_dir, criu_path, ignore_env, lock_timeout,
checkpoint_timeout, prepare_timeout, restore_timeout, ...); ignore_env takes a ':'-separated list.
Example:
  --handler name=snapshot,store=/var/lib/gpusnap/store,restore=auto,auto_checkpoint=on-ready,control_dir=/run/snapshot

Flags:
`

// handlers collects repeated --handler flags.
type handlers []install.Handler

func (h *handlers) String() string { return fmt.Sprint(len(*h), " handlers") }

func (h *handlers) Set(spec string) error {
	parsed, err := install.ParseHandler(spec)
	if err != nil {
		return err
	}
	*h = append(*h, parsed)
	return nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole program with its streams passed in, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, uninstall, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "gpusnap-install: %v (see gpusnap-install -h)\n", err)
		return exitUsage
	}
	cfg.Out = stdout
	do := install.Install
	if uninstall {
		do = install.Uninstall
	}
	res, err := do(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "gpusnap-install: %v\n", err)
		return exitFail
	}
	if !res.Changed {
		fmt.Fprintln(stdout, "nothing to change")
	}
	return exitOK
}

// parseFlags turns the command line into a Config.
func parseFlags(args []string, stderr io.Writer) (install.Config, bool, error) {
	var (
		cfg       install.Config
		hs        handlers
		uninstall bool
	)
	fs := flag.NewFlagSet("gpusnap-install", flag.ContinueOnError)
	// The flag package's own messages are silenced: run prints one line
	// per error, and the full usage only for -h.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&cfg.HostRoot, "host-root", install.DefaultHostRoot, "where the node's root file system is mounted (`DIR`; /host in a DaemonSet)")
	fs.StringVar(&cfg.BinDir, "bin-dir", install.DefaultBinDir, "node `DIR` for the binaries")
	fs.StringVar(&cfg.Shim, "shim", "", "containerd-shim-snapshot-v2 binary to install (`FILE` in the installer's file system)")
	fs.StringVar(&cfg.CLI, "cli", "", "gpusnap binary to install (`FILE`)")
	fs.StringVar(&cfg.CRIU, "criu", "", "criu binary to install as <bin-dir>/criu (`FILE`); handlers without criu_path then use it")
	fs.StringVar(&cfg.RegistryCredentials, "registry-credentials", "", "docker-style config.json (`FILE`) installed as the registry credentials of every handler with a registry")
	fs.Var(&hs, "handler", "runtime `handler` as name=NAME,KEY=VALUE,... (repeatable, at least one)")
	fs.StringVar(&cfg.ContainerdConfig, "containerd-config", install.DefaultContainerdConfig, "containerd's main config `FILE` (node path)")
	fs.StringVar(&cfg.DropinDir, "dropin-dir", install.DefaultDropinDir, "containerd drop-in `DIR` (node path)")
	fs.StringVar(&cfg.OptionsDir, "options-dir", install.DefaultOptionsDir, "`DIR` for handler options and the installer's state file (node path)")
	fs.StringVar(&cfg.RestartCmd, "restart-cmd", install.DefaultRestartCmd, "shell `COMMAND` that restarts containerd when its config changed; empty never restarts")
	fs.BoolVar(&uninstall, "uninstall", false, "take back what an earlier install added")
	fs.BoolVar(&cfg.DryRun, "dry-run", false, "print what would change and change nothing")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, usage)
			fs.SetOutput(stderr)
			fs.PrintDefaults()
		}
		return cfg, false, err
	}
	if fs.NArg() > 0 {
		return cfg, false, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if uninstall && len(hs) > 0 {
		return cfg, false, errors.New("--uninstall takes no --handler: it removes what the state file records")
	}
	cfg.Handlers = hs
	return cfg, uninstall, nil
}
