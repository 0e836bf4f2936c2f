package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
	"github.com/gpusnap/containerd-shim-snapshot-v2/criu"
	"github.com/gpusnap/containerd-shim-snapshot-v2/cudackpt"
	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

const defaultContainerdConfig = "/etc/containerd/config.toml"

func init() {
	commands["doctor"] = &command{
		summary: "Check that this node can checkpoint and restore: CRIU (found, version, `criu check`),\n" +
			"kernel, cgroup version, iptables-restore or nft for CRIU's network lock, a containerd\n" +
			"handler with runtime_type \"" + containerdconfig.RuntimeType + "\" and valid options, the store's\n" +
			"ownership and mode, the keys the handlers name (signing, trusted, encryption), whether\n" +
			"CRIU carries the project's patches, and the NVIDIA driver (absent is fine on CPU nodes).\n" +
			"Exits 1 if any check FAILs.",
		setup: func(fs *flag.FlagSet) runFunc {
			config := fs.String("containerd-config", defaultContainerdConfig, "containerd's config `FILE`")
			return func(e *env, args []string) int { return runDoctor(e, args, *config) }
		},
	}
}

// Check levels. INFO reports what was found without judging it.
const (
	levelPass = "PASS"
	levelInfo = "INFO"
	levelWarn = "WARN"
	levelFail = "FAIL"
)

// check is one line of doctor's report.
type check struct {
	Level  string `json:"level"`
	Check  string `json:"check"`
	Detail string `json:"detail"`
}

func pass(name, format string, a ...any) check {
	return check{levelPass, name, fmt.Sprintf(format, a...)}
}
func info(name, format string, a ...any) check {
	return check{levelInfo, name, fmt.Sprintf(format, a...)}
}
func warn(name, format string, a ...any) check {
	return check{levelWarn, name, fmt.Sprintf(format, a...)}
}
func fail(name, format string, a ...any) check {
	return check{levelFail, name, fmt.Sprintf(format, a...)}
}

func runDoctor(e *env, args []string, containerdConfig string) int {
	if len(args) > 0 {
		return e.usageErrorf("takes no arguments, got %q", args)
	}
	var checks []check
	add := func(cs ...check) { checks = append(checks, cs...) }

	// The containerd config is read first: its handlers' options may name
	// the CRIU binary and the stores that the other checks look at.
	handlerChecks, handlers := containerdChecks(containerdConfig)
	var stores []string
	criuPath := ""
	if e.handlerConfig != "" {
		o, err := e.handlerOptions()
		if err != nil {
			add(fail("handler options", "%v", err))
		} else {
			add(pass("handler options", "%s is valid", e.handlerConfig))
			add(keyChecks(e.handlerConfig, *o)...)
			criuPath, stores = o.CRIUPath, appendStore(stores, o.Store)
		}
	}
	stores = appendStore(stores, e.store)
	for _, h := range handlers {
		if h.opts != nil {
			add(keyChecks("handler "+h.Name, *h.opts)...)
			criuPath = or(criuPath, h.opts.CRIUPath)
			stores = appendStore(stores, h.opts.Store)
		}
	}

	add(criuChecks(criuPath)...)
	add(kernelCheck())
	add(cgroupCheck("/sys/fs/cgroup"))
	add(networkLockCheck())
	add(handlerChecks...)
	add(shimBinaryCheck())
	if len(stores) == 0 {
		add(warn("store", "no store configured: pass --store DIR, or set store in a handler's options"))
	}
	for _, dir := range stores {
		add(storeChecks(dir)...)
	}
	add(gpuChecks()...)

	counts := map[string]int{}
	for _, c := range checks {
		counts[c.Level]++
	}
	if e.json {
		e.writeJSON(struct {
			OK     bool    `json:"ok"`
			Checks []check `json:"checks"`
		}{counts[levelFail] == 0, checks})
	} else {
		w := table(e.stdout)
		for _, c := range checks {
			fmt.Fprintf(w, "%s\t%s\t%s\n", c.Level, c.Check, oneLine(c.Detail))
		}
		w.Flush()
		fmt.Fprintf(e.stdout, "\n%d passed, %d warnings, %d failed\n", counts[levelPass], counts[levelWarn], counts[levelFail])
	}
	if counts[levelFail] > 0 {
		return exitFail
	}
	return exitOK
}

func appendStore(stores []string, dir string) []string {
	if dir == "" || slices.Contains(stores, filepath.Clean(dir)) {
		return stores
	}
	return append(stores, filepath.Clean(dir))
}

func criuChecks(path string) []check {
	bin, err := criu.Find(path)
	if err != nil {
		return []check{fail("criu", "%v", err)}
	}
	v, err := criu.Version(bin)
	if err != nil {
		return []check{fail("criu version", "%v", err)}
	}
	checks := []check{pass("criu", "criu %s at %s (need %s or newer)", v, bin, criu.MinVersion), criuPatchCheck(bin)}
	if os.Geteuid() != 0 {
		return append(checks, warn("criu check", "skipped: `criu check` needs root; run doctor as root"))
	}
	if err := criu.Check(bin); err != nil {
		return append(checks, fail("criu check", "%v", err))
	}
	return append(checks, pass("criu check", "`%s check` passed", bin))
}

// criuPatches are the project's CRIU patches (contrib/criu), each with what
// a node whose CRIU lacks it loses.
var criuPatches = []struct {
	patch criu.Patch
	loss  string
}{
	{criu.PatchHugePages, "restore_huge_pages has no effect"},
	{criu.PatchThreads, "restore_threads has no effect (one page reader)"},
	{criu.PatchInheritedDevices, "containers whose processes inherited GPU device files (torch.compile's workers) cannot be checkpointed"},
	{criu.PatchPopulate, "restore_populate has no effect (restored pages fault in 4 KiB at a time)"},
}

// criuPatchCheck says whether the CRIU binary carries the project's patches
// and, where it does not, what the node loses.
func criuPatchCheck(bin string) check {
	var losses []string
	for _, p := range criuPatches {
		ok, err := criu.HasPatch(bin, p.patch)
		if err != nil {
			return warn("criu patches", "%v", err)
		}
		if !ok {
			losses = append(losses, p.loss)
		}
	}
	if len(losses) > 0 {
		return warn("criu patches", "%s lacks some of the project's CRIU patches (contrib/criu): %s; "+
			"install the CRIU that `make deps` builds", bin, strings.Join(losses, "; "))
	}
	return pass("criu patches", "%s carries the project's patches (restore_huge_pages, restore_threads, inherited devices, restore_populate)", bin)
}

// keyChecks loads the keys a handler's options name, as the shim does
// before a checkpoint or a restore: a key that does not load would fail
// every checkpoint, or turn restores into cold starts.
func keyChecks(handler string, o options.Options) []check {
	var checks []check
	try := func(what, path string, load func() error) {
		if err := load(); err != nil {
			checks = append(checks, fail(what, "%s: %v", handler, err))
		} else {
			checks = append(checks, pass(what, "%s: %s loads", handler, path))
		}
	}
	if o.SigningKey != "" {
		try("signing key", o.SigningKey, func() error { _, err := storage.LoadSigningKey(o.SigningKey); return err })
	}
	if len(o.TrustedKeys) > 0 {
		try("trusted keys", strings.Join(o.TrustedKeys, ", "), func() error { _, err := storage.LoadTrustedKeys(o.TrustedKeys); return err })
	}
	if o.EncryptionKey != "" {
		try("encryption key", o.EncryptionKey, func() error { _, err := storage.LoadEncryptionKey(o.EncryptionKey); return err })
	}
	return checks
}

func kernelCheck() check {
	release, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return fail("kernel", "read kernel release: %v", err)
	}
	return pass("kernel", "%s (checkpoints restore on the same major.minor)", strings.TrimSpace(string(release)))
}

// cgroup2Magic is CGROUP2_SUPER_MAGIC, the filesystem type of a cgroup v2
// (unified) hierarchy.
const cgroup2Magic = 0x63677270

func cgroupCheck(root string) check {
	var st syscall.Statfs_t
	if err := syscall.Statfs(root, &st); err != nil {
		return fail("cgroup", "statfs %s: %v", root, err)
	}
	if st.Type == cgroup2Magic {
		return pass("cgroup", "v2 (unified hierarchy at %s)", root)
	}
	return warn("cgroup", "v1 or hybrid at %s: containerd 2.x deprecates cgroup v1, and checkpoints "+
		"taken here restore only on cgroup v1 nodes", root)
}

// lookTool finds a system tool in PATH or the sbin directories, which a
// non-root PATH often lacks.
func lookTool(name string) (string, bool) {
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	for _, dir := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

func networkLockCheck() check {
	var found []string
	for _, tool := range []string{"iptables-restore", "nft"} {
		if p, ok := lookTool(tool); ok {
			found = append(found, p)
		}
	}
	if len(found) == 0 {
		return fail("network lock", "neither iptables-restore nor nft found: CRIU locks the container's "+
			"network with one of them during dump and restore (install iptables or nftables)")
	}
	return pass("network lock", "%s", strings.Join(found, ", "))
}

func shimBinaryCheck() check {
	const bin = containerdconfig.ShimBinary
	if p, ok := lookTool(bin); ok {
		return pass("shim binary", "%s", p)
	}
	for _, dir := range []string{"/usr/local/bin", "/usr/bin", "/opt/containerd/bin"} {
		if p := filepath.Join(dir, bin); exists(p) {
			return pass("shim binary", "%s", p)
		}
	}
	return warn("shim binary", "%s not found in PATH or /usr/local/bin: containerd must find it in its own PATH", bin)
}

// handler is a containerd runtime handler that uses the snapshot shim.
type handler struct {
	containerdconfig.Handler
	file string           // the config file that declares it
	opts *options.Options // nil unless valid options were read
}

// containerdChecks finds the snapshot shim's handlers in containerd's
// config and the files it imports, and validates each one's options.
func containerdChecks(file string) ([]check, []handler) {
	data, err := os.ReadFile(file)
	if err != nil {
		return []check{fail("containerd config", "%v", err)}, nil
	}
	files := []string{file}
	contents := map[string]string{file: string(data)}
	// A file that does not parse yields no imports and no handlers; the
	// text search below still notices one that names the shim.
	root, rootErr := containerdconfig.Parse(data)
	imports, _ := root.Imports()
	for _, pattern := range imports {
		if !filepath.IsAbs(pattern) {
			pattern = filepath.Join(filepath.Dir(file), pattern)
		}
		matches, _ := filepath.Glob(pattern)
		for _, m := range matches {
			if b, err := os.ReadFile(m); err == nil && !slices.Contains(files, m) {
				files = append(files, m)
				contents[m] = string(b)
			}
		}
	}

	var handlers []handler
	mentioned := false
	var unreadable []check
	for _, f := range files {
		mentioned = mentioned || strings.Contains(contents[f], containerdconfig.RuntimeType)
		config, err := root, rootErr
		if f != file {
			config, err = containerdconfig.Parse([]byte(contents[f]))
		}
		if err != nil {
			unreadable = append(unreadable, warn("containerd config", "%s: %v", f, err))
			continue
		}
		for _, h := range config.Handlers() {
			handlers = append(handlers, handler{Handler: h, file: f})
		}
	}
	where := file
	if len(files) > 1 {
		where = fmt.Sprintf("%s (and %d imported files)", file, len(files)-1)
	}
	switch {
	case len(handlers) == 0 && mentioned:
		return append(unreadable, warn("containerd handler", "%s mentions %s, but no runtime_type = %q line was understood; check the handler by hand",
			where, containerdconfig.RuntimeType, containerdconfig.RuntimeType)), nil
	case len(handlers) == 0:
		return append(unreadable, fail("containerd handler", "no runtime handler with runtime_type = %q in %s", containerdconfig.RuntimeType, where)), nil
	}

	checks := unreadable
	for i := range handlers {
		h := &handlers[i]
		name := fmt.Sprintf("handler %q", h.Name)
		checks = append(checks, pass("containerd handler", "%q in %s uses %s", h.Name, h.file, containerdconfig.RuntimeType))
		var o options.Options
		switch {
		case h.ConfigPath != "":
			o, err = options.Load(h.ConfigPath)
		case h.ConfigBody != "":
			o, err = options.Parse([]byte(h.ConfigBody), h.file+": inline ConfigBody")
		default:
			checks = append(checks, warn(name, "sets no options.ConfigPath: no store, so containers only cold-start"))
			continue
		}
		if err != nil {
			checks = append(checks, fail(name, "%v", err))
			continue
		}
		h.opts = &o
		if o.Store == "" {
			checks = append(checks, warn(name, "options %s set no store: containers only cold-start", o.Source))
			continue
		}
		checks = append(checks, pass(name, "options %s: store %s, checkpoint %s, restore %s, auto_checkpoint %s",
			o.Source, o.Store, o.Checkpoint, o.Restore, o.AutoCheckpoint))
	}
	return checks, handlers
}

// storeChecks checks that dir exists and passes the shim's rule for a store
// (storage.CheckRootOnly: a root-owned directory not writable by group or
// others, below directories only root can change): a checkpoint is code and
// memory that the shim restores as root, so whoever can write the store can
// run code as root on every node that restores from it.
func storeChecks(dir string) []check {
	name := "store " + dir
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return []check{fail(name, "does not exist")}
	case err != nil:
		return []check{fail(name, "%v", err)}
	case !fi.IsDir():
		return []check{fail(name, "is not a directory")}
	}
	if err := storage.CheckRootOnly(dir); err != nil {
		return untrustedStoreChecks(name, dir, err)
	}
	checks := []check{pass(name, "owned by root, mode %04o", fi.Mode().Perm())}

	s, err := storage.Open(dir)
	if err == nil {
		var list []*storage.Checkpoint
		if list, err = s.List(); err == nil {
			var broken []string
			var size int64
			for _, c := range list {
				if c.Err != nil {
					broken = append(broken, c.Name)
				}
				size += c.Size()
			}
			checks = append(checks, info(name, "%d checkpoints, %s", len(list), humanBytes(size)))
			if len(broken) > 0 {
				checks = append(checks, warn(name, "%d broken: %s (see 'gpusnap ls', remove with 'gpusnap rm')",
					len(broken), strings.Join(broken, ", ")))
			}
		}
	}
	if err != nil {
		checks = append(checks, fail(name, "%v", err))
	}
	return checks
}

// untrustedStoreChecks says what is wrong with a store that
// storage.CheckRootOnly refused, and how to fix it.
func untrustedStoreChecks(name, dir string, err error) []check {
	var u *storage.UntrustedPathError
	abs, _ := filepath.Abs(dir)
	if !errors.As(err, &u) || u.Err != nil || u.Path != abs {
		return []check{fail(name, "%v", err)} // a directory above it, or stat failed
	}
	var checks []check
	if u.UID != 0 {
		checks = append(checks, fail(name, "owned by uid %d, want root: the shim restores checkpoints as root (chown root %s)", u.UID, dir))
	}
	if mode := u.Mode & 0o777; mode&0o022 != 0 {
		checks = append(checks, fail(name, "mode %04o is writable by group or others: anyone who can write there can plant "+
			"a checkpoint that restores as root (chmod go-w %s)", mode, dir))
	}
	return checks
}

// gpuChecks reports the NVIDIA driver. Its absence is normal on a CPU
// node, so it is INFO; a driver that is present but unusable is a FAIL.
func gpuChecks() []check {
	gpus, drv, err := cudackpt.Inventory()
	if errors.Is(err, cudackpt.ErrNoDriver) {
		return []check{info("gpu", "no NVIDIA driver (%v): this node checkpoints CPU containers only", err)}
	}
	if err != nil {
		return []check{fail("gpu", "%v", err)}
	}
	var checks []check
	names := make([]string, len(gpus))
	for i, g := range gpus {
		names[i] = g.Name
		if !g.Persistence {
			checks = append(checks, warn("gpu", "GPU %d (%s) has persistence mode off: restore must initialise the driver first "+
				"(nvidia-smi -pm 1)", g.Index, g.UUID))
		}
	}
	checks = append([]check{pass("gpu", "driver %s (CUDA %s), %d GPU(s): %s", drv.Version, drv.CUDA, len(gpus), strings.Join(names, ", "))}, checks...)

	d, err := cudackpt.Load("")
	if err != nil {
		return append(checks, fail("cuda driver", "%v", err))
	}
	v, err := d.Version()
	if err != nil {
		return append(checks, fail("cuda checkpoint", "%v", err))
	}
	checks = append(checks, pass("cuda checkpoint", "%s (CUDA %s) has the checkpoint API", d.Path(), v))
	if !v.SupportsRemap() {
		checks = append(checks, warn("cuda checkpoint", "CUDA %s restores only onto the GPUs a checkpoint was taken on; "+
			"moving to other GPUs needs %s (driver 580+)", v, cudackpt.MinRemapVersion))
	}
	return checks
}
