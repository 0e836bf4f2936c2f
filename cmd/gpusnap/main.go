// Command gpusnap is the operator's view of a checkpoint store and of a
// node's readiness for the snapshot shim: list, inspect, verify, remove and
// prune checkpoints, make signing keys with keygen and encryption keys with
// enckey, and check the node with doctor. It reads the same store the shim writes, so it never needs the
// shim or containerd to be running.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// Exit statuses: a failed check or operation is 1, a command line that
// can't be understood is 2, as with most Unix tools.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

const usage = `Usage: gpusnap [global flags] COMMAND [flags] [args]

Operate the checkpoint store of containerd-shim-snapshot-v2 and check a node.

Commands:
  ls [REPOSITORY]         list checkpoints, broken ones with their error; with a
                          registry repository (host/repository), those pushed there
  inspect NAME [--trusted-key PATH]...
                          show a checkpoint's manifest, its signature, its
                          encryption, whether it fits this node, and its
                          processes with their memory
  verify NAME... | --all [--trusted-key PATH]...
                          check every file against its manifest digest and the
                          signature against the trusted keys (default: the
                          handler's trusted_keys), then the CRIU images' pages
                          files against their pagemaps
  keygen PREFIX           make a signing key pair: PREFIX.key (signing_key)
                          and PREFIX.pub (trusted_keys)
  enckey PATH             make an encryption key for encryption_key (never
                          overwrites)
  prefetch NAME... | --latest [--cache DIR]
                          copy checkpoints into the node-local cache_dir
  push NAME REPOSITORY    push a checkpoint to an OCI registry (tag = its name)
  pull REPOSITORY:NAME [--cache DIR]
                          pull a checkpoint from an OCI registry, verified, resumable
  rm NAME...              remove checkpoints
  prune [--keep N] [--max-bytes SIZE] [--stale DURATION]
                          remove old generations, stay under a byte budget,
                          clean up leftovers of interrupted writers
  doctor [--containerd-config FILE]
                          check CRIU, kernel, cgroups, network lock tools, the
                          containerd handler, the store and the GPU driver
  status [--since DURATION] [--events-dir DIR]
                          the node's recent restores and checkpoints, newest
                          first, with phase timings and fallback reasons
  metrics [--listen ADDR] [--events-dir DIR]
                          restore and checkpoint metrics in the Prometheus
                          text format, printed once or served at /metrics

Global flags (accepted before or after the command):
  --store DIR             the checkpoint store
  --handler-config FILE   read the store (and criu_path) from a handler's
                          options TOML, the file containerd's ConfigPath names
  --json                  machine-readable output on stdout

Exit status: 0 success, 1 a check or operation failed, 2 bad usage.
Run 'gpusnap COMMAND -h' for a command's flags.
`

// command is one subcommand. setup adds its flags to a fresh FlagSet and
// returns the function that does the work once the command line is parsed;
// flag values live in setup's closure, so each run starts from defaults.
type command struct {
	summary string
	args    string // synopsis of positional arguments, for -h
	setup   func(fs *flag.FlagSet) runFunc
}

type runFunc func(e *env, args []string) int

// noFlags is setup for a command without flags of its own.
func noFlags(run runFunc) func(*flag.FlagSet) runFunc {
	return func(*flag.FlagSet) runFunc { return run }
}

// commands is filled by each subcommand's file, keeping main to dispatch.
var commands = map[string]*command{}

// globals are the flags every command accepts.
type globals struct {
	store         string
	handlerConfig string
	json          bool
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.store, "store", "", "checkpoint store `DIR`")
	fs.StringVar(&g.handlerConfig, "handler-config", "", "handler options TOML `FILE` that names the store")
	fs.BoolVar(&g.json, "json", false, "machine-readable output")
}

// merge applies flags given after the command over those given before it.
func (g *globals) merge(after globals) {
	g.store = or(after.store, g.store)
	g.handlerConfig = or(after.handlerConfig, g.handlerConfig)
	g.json = g.json || after.json
}

// env is what a running command needs: its flags and where to write.
type env struct {
	globals
	name           string
	stdout, stderr io.Writer
	// opts holds the handler options when --handler-config was given.
	opts *options.Options
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole program, with its streams passed in so tests can run
// commands in-process.
func run(args []string, stdout, stderr io.Writer) int {
	var g globals
	top := flag.NewFlagSet("gpusnap", flag.ContinueOnError)
	top.SetOutput(stderr)
	top.Usage = func() { fmt.Fprint(stderr, usage) }
	g.register(top)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if top.NArg() == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	name, rest := top.Arg(0), top.Args()[1:]
	if name == "help" {
		if len(rest) == 0 {
			fmt.Fprint(stdout, usage)
			return exitOK
		}
		name, rest = rest[0], []string{"-h"}
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "gpusnap: unknown command %q\n\n%s", name, usage)
		return exitUsage
	}

	fs := flag.NewFlagSet("gpusnap "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: gpusnap %s\n\n%s\n\nFlags:\n", strings.TrimSpace(name+" [flags] "+cmd.args), cmd.summary)
		fs.PrintDefaults()
	}
	var after globals
	after.register(fs)
	runCmd := cmd.setup(fs)
	positional, err := parseInterleaved(fs, rest)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	g.merge(after)
	if g.store != "" && g.handlerConfig != "" {
		fmt.Fprintln(stderr, "gpusnap: --store and --handler-config both name a store; pass one")
		return exitUsage
	}
	e := &env{globals: g, name: name, stdout: stdout, stderr: stderr}
	return runCmd(e, positional)
}

// parseInterleaved parses flags anywhere among the arguments, so that
// "verify a b --json" works as "verify --json a b"; "--" still ends flags.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(positional, rest...), nil
		}
		if len(rest) == 0 {
			return positional, nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// errorf reports a failure of the command on stderr and returns exitFail.
func (e *env) errorf(format string, a ...any) int {
	fmt.Fprintf(e.stderr, "gpusnap %s: %s\n", e.name, fmt.Sprintf(format, a...))
	return exitFail
}

// usageErrorf reports a command line the command can't act on.
func (e *env) usageErrorf(format string, a ...any) int {
	fmt.Fprintf(e.stderr, "gpusnap %s: %s (see 'gpusnap %s -h')\n", e.name, fmt.Sprintf(format, a...), e.name)
	return exitUsage
}

// storeDir resolves the store from --store or --handler-config.
func (e *env) storeDir() (string, error) {
	switch {
	case e.store != "":
		return e.store, nil
	case e.handlerConfig != "":
		o, err := e.handlerOptions()
		if err != nil {
			return "", err
		}
		if o.Store == "" {
			return "", fmt.Errorf("handler config %s sets no store", e.handlerConfig)
		}
		return o.Store, nil
	}
	return "", errors.New("no store: pass --store DIR or --handler-config FILE")
}

// handlerOptions loads --handler-config once; nil options without it.
func (e *env) handlerOptions() (*options.Options, error) {
	if e.handlerConfig == "" || e.opts != nil {
		return e.opts, nil
	}
	o, err := options.Load(e.handlerConfig)
	if err != nil {
		return nil, err
	}
	e.opts = &o
	return e.opts, nil
}

// criuPath is the CRIU the handler config names, or "" for PATH.
func (e *env) criuPath() string {
	if o, err := e.handlerOptions(); err == nil && o != nil {
		return o.CRIUPath
	}
	return ""
}

// openStore opens an existing store. storage.Open would create a missing
// directory, which an operator's typo should never do.
func (e *env) openStore() (*storage.Store, error) {
	dir, err := e.storeDir()
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("store %s does not exist", dir)
	case err != nil:
		return nil, fmt.Errorf("store %s: %w", dir, err)
	case !fi.IsDir():
		return nil, fmt.Errorf("store %s is not a directory", dir)
	}
	return storage.Open(dir)
}

// getCheckpoint is Store.Get with an error that names the store.
func getCheckpoint(s *storage.Store, name string) (*storage.Checkpoint, error) {
	c, err := s.Get(name)
	if err != nil {
		return nil, nameError(s, name, err)
	}
	return c, nil
}

// nameError turns storage's errors about a name into the message an
// operator expects. A malformed name that is also absent from the store is
// simply not found; a broken manifest's error already names its file.
func nameError(s *storage.Store, name string, err error) error {
	if errors.Is(err, storage.ErrNotFound) || !errors.Is(err, storage.ErrManifest) && !exists(filepath.Join(s.Root, name)) {
		return fmt.Errorf("checkpoint %q not found in store %s", name, s.Root)
	}
	return err
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// writeJSON writes v as indented JSON, the --json output of every command.
func (e *env) writeJSON(v any) int {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return e.errorf("write JSON: %v", err)
	}
	return exitOK
}

// table writes aligned columns for human output.
func table(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// humanBytes formats n in binary units: 512 B, 4.0 KiB, 1.2 GiB.
func humanBytes(n int64) string {
	value, unit := scaleBytes(n, n)
	if unit == "B" {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f %s", value, unit)
}

// scaleBytes expresses n in the unit that suits ref, so a progress line can
// show done and total in one unit.
func scaleBytes(n, ref int64) (float64, string) {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	v, r := float64(n), float64(ref)
	i := 0
	for r >= 1024 && i < len(units)-1 {
		v, r = v/1024, r/1024
		i++
	}
	return v, units[i]
}
