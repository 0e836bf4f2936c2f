package install

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
)

// mainV3 is a node's containerd config as an admin wrote it: comments,
// odd spacing, tables, no imports.
const mainV3 = `# node config, hand-written
version = 3
root = "/var/lib/containerd"   # keep

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = "runc"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
`

// bed is a fake node: a host root, binaries to install, and a restart
// command that appends a line to a file outside the host root.
type bed struct {
	t       *testing.T
	root    string
	src     string
	marker  string
	out     bytes.Buffer
	handler []Handler
}

func newBed(t *testing.T, mainConfig string) *bed {
	t.Helper()
	b := &bed{t: t, root: t.TempDir(), src: t.TempDir()}
	b.marker = filepath.Join(b.src, "restarted")
	for _, name := range []string{ShimBinary, CLIBinary, CRIUBinary} {
		b.writeSrc(name, "binary "+name)
	}
	if mainConfig != "" {
		b.writeHost(DefaultContainerdConfig, mainConfig, 0o640)
	}
	b.handler = []Handler{mustHandler(t, "name=snapshot,store=/var/lib/gpusnap/store,restore=auto,auto_checkpoint=on-ready,control_dir=/run/snapshot,ignore_env=HOSTNAME:POD_IP")}
	return b
}

func mustHandler(t *testing.T, spec string) Handler {
	t.Helper()
	h, err := ParseHandler(spec)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (b *bed) writeSrc(name, content string) {
	if err := os.WriteFile(filepath.Join(b.src, name), []byte(content), 0o755); err != nil {
		b.t.Fatal(err)
	}
}

func (b *bed) writeHost(path, content string, mode fs.FileMode) {
	b.t.Helper()
	hp := filepath.Join(b.root, path)
	if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(hp, []byte(content), mode); err != nil {
		b.t.Fatal(err)
	}
}

func (b *bed) read(path string) string {
	b.t.Helper()
	data, err := os.ReadFile(filepath.Join(b.root, path))
	if err != nil {
		b.t.Fatal(err)
	}
	return string(data)
}

func (b *bed) exists(path string) bool {
	_, err := os.Lstat(filepath.Join(b.root, path))
	return err == nil
}

func (b *bed) config() Config {
	return Config{
		HostRoot:   b.root,
		Shim:       filepath.Join(b.src, ShimBinary),
		CLI:        filepath.Join(b.src, CLIBinary),
		CRIU:       filepath.Join(b.src, CRIUBinary),
		Handlers:   b.handler,
		RestartCmd: "echo restart >> " + b.marker,
		Out:        &b.out,
	}
}

func (b *bed) install() Result {
	b.t.Helper()
	res, err := Install(b.config())
	if err != nil {
		b.t.Fatalf("install: %v\noutput:\n%s", err, b.out.String())
	}
	return res
}

func (b *bed) uninstall() Result {
	b.t.Helper()
	res, err := Uninstall(b.config())
	if err != nil {
		b.t.Fatalf("uninstall: %v\noutput:\n%s", err, b.out.String())
	}
	return res
}

// restarts counts how often the restart command ran.
func (b *bed) restarts() int {
	data, _ := os.ReadFile(b.marker)
	return strings.Count(string(data), "restart\n")
}

// snapshot maps every path under the host root to its mode, size and
// digest, and for files their mtime: equal snapshots mean nothing was
// written. (Directory mtimes move with any entry written inside.)
func (b *bed) snapshot() map[string]string {
	return b.snap(true)
}

// contents is snapshot without mtimes: equal contents, whoever wrote them.
func (b *bed) contents() map[string]string {
	return b.snap(false)
}

func (b *bed) snap(times bool) map[string]string {
	b.t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(b.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(b.root, p)
		snap[rel] = st.Mode().String()
		if st.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			snap[rel] += fmt.Sprintf(" %x", sha256.Sum256(data))
			if times {
				snap[rel] += fmt.Sprint(" ", st.ModTime().UnixNano())
			}
		}
		return nil
	})
	if err != nil {
		b.t.Fatal(err)
	}
	return snap
}

// diff lists the paths whose snapshot entry differs.
func diff(a, b map[string]string) []string {
	var out []string
	for k, v := range a {
		if b[k] != v {
			out = append(out, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	return out
}

func mode(t *testing.T, p string) fs.FileMode {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

var (
	dropinPath = filepath.Join(DefaultDropinDir, DropinName)
	globLine   = `imports = ["/etc/containerd/conf.d/*.toml"]`
)

func TestFreshInstall(t *testing.T) {
	b := newBed(t, mainV3)
	res := b.install()
	if !res.Changed || !res.ContainerdChanged || !res.Restarted || b.restarts() != 1 {
		t.Fatalf("result %+v, %d restarts", res, b.restarts())
	}
	for _, name := range []string{ShimBinary, CLIBinary, CRIUBinary} {
		p := filepath.Join(b.root, DefaultBinDir, name)
		if got := b.read(filepath.Join(DefaultBinDir, name)); got != "binary "+name || mode(t, p) != 0o755 {
			t.Errorf("%s: %q mode %v", name, got, mode(t, p))
		}
	}
	if m := mode(t, filepath.Join(b.root, DefaultOptionsDir)); m != 0o755 {
		t.Errorf("options dir mode %v", m)
	}
	optPath := filepath.Join(DefaultOptionsDir, "snapshot.toml")
	if m := mode(t, filepath.Join(b.root, optPath)); m != 0o644 {
		t.Errorf("options file mode %v", m)
	}
	o, err := options.Load(filepath.Join(b.root, optPath))
	if err != nil {
		t.Fatal(err)
	}
	if o.Store != "/var/lib/gpusnap/store" || o.AutoCheckpoint != "on-ready" || o.CRIUPath != "/usr/local/bin/criu" ||
		strings.Join(o.IgnoreEnv, ",") != "HOSTNAME,POD_IP" {
		t.Errorf("options %+v", o)
	}
	want := strings.Replace(mainV3, "version = 3\n", "version = 3\n"+globLine+"\n", 1)
	if got := b.read(DefaultContainerdConfig); got != want {
		t.Errorf("main config:\n%s\nwant:\n%s", got, want)
	}
	if m := mode(t, filepath.Join(b.root, DefaultContainerdConfig)); m != 0o640 {
		t.Errorf("main config mode changed to %v", m)
	}
	checkDropin(t, b.read(dropinPath), map[string]string{"snapshot": "/etc/containerd-shim-snapshot/snapshot.toml"})
	if !b.exists(filepath.Join(DefaultOptionsDir, StateName)) {
		t.Error("no state file")
	}
}

// checkDropin parses the drop-in as containerd would see it and checks
// that it declares exactly the given handlers.
func checkDropin(t *testing.T, body string, want map[string]string) {
	t.Helper()
	type runtime struct {
		RuntimeType    string            `toml:"runtime_type"`
		RuntimePath    string            `toml:"runtime_path"`
		PodAnnotations []string          `toml:"pod_annotations"`
		Options        map[string]string `toml:"options"`
	}
	var d struct {
		Version int `toml:"version"`
		Plugins map[string]struct {
			Containerd struct {
				Runtimes map[string]runtime `toml:"runtimes"`
			} `toml:"containerd"`
		} `toml:"plugins"`
	}
	md, err := toml.Decode(body, &d)
	if err != nil {
		t.Fatalf("drop-in does not parse: %v\n%s", err, body)
	}
	if len(md.Undecoded()) > 0 {
		t.Errorf("drop-in has unexpected keys %v", md.Undecoded())
	}
	rts := d.Plugins["io.containerd.cri.v1.runtime"].Containerd.Runtimes
	if d.Version != 3 || len(d.Plugins) != 1 || len(rts) != len(want) {
		t.Fatalf("drop-in structure: %+v", d)
	}
	for name, cfgPath := range want {
		rt := rts[name]
		if rt.RuntimeType != containerdconfig.RuntimeType || rt.RuntimePath != "/usr/local/bin/"+ShimBinary || rt.Options["ConfigPath"] != cfgPath ||
			len(rt.PodAnnotations) != 1 || rt.PodAnnotations[0] != "gpusnap.io/*" {
			t.Errorf("runtime %s: %+v", name, rt)
		}
	}
}

func TestSecondInstallChangesNothing(t *testing.T) {
	b := newBed(t, mainV3)
	b.install()
	before := b.snapshot()
	b.out.Reset()
	res := b.install()
	if res.Changed || res.Restarted || b.restarts() != 1 {
		t.Fatalf("second run: %+v, %d restarts\n%s", res, b.restarts(), b.out.String())
	}
	if d := diff(before, b.snapshot()); len(d) > 0 {
		t.Fatalf("second run touched %v", d)
	}
	if strings.Contains(b.out.String(), "wrote") || !strings.Contains(b.out.String(), "unchanged "+dropinPath) {
		t.Errorf("output:\n%s", b.out.String())
	}
}

func TestChangedOptionsRewriteOnlyOptions(t *testing.T) {
	b := newBed(t, mainV3)
	b.install()
	before := b.snapshot()
	b.handler = []Handler{mustHandler(t, "name=snapshot,store=/var/lib/gpusnap/store,restore=required")}
	res := b.install()
	if !res.Changed || res.ContainerdChanged || res.Restarted || b.restarts() != 1 {
		t.Fatalf("%+v, %d restarts", res, b.restarts())
	}
	got := diff(before, b.snapshot())
	want := map[string]bool{"etc/containerd-shim-snapshot/snapshot.toml": true, "etc/containerd-shim-snapshot/installed.json": true}
	if len(got) != len(want) || !want[got[0]] || !want[got[1]] {
		t.Fatalf("changed %v, want the options and state files only", got)
	}
	if !strings.Contains(b.read(filepath.Join(DefaultOptionsDir, "snapshot.toml")), `restore = "required"`) {
		t.Error("options not rewritten")
	}
}

func TestNewHandlerChangesDropinAndRestarts(t *testing.T) {
	b := newBed(t, mainV3)
	b.install()
	mainBefore := b.read(DefaultContainerdConfig)
	b.handler = append(b.handler, mustHandler(t, "name=snapshot-strict,store=/var/lib/gpusnap/store,restore=required"))
	res := b.install()
	if !res.ContainerdChanged || !res.Restarted || b.restarts() != 2 {
		t.Fatalf("%+v, %d restarts", res, b.restarts())
	}
	checkDropin(t, b.read(dropinPath), map[string]string{
		"snapshot":        "/etc/containerd-shim-snapshot/snapshot.toml",
		"snapshot-strict": "/etc/containerd-shim-snapshot/snapshot-strict.toml",
	})
	if b.read(DefaultContainerdConfig) != mainBefore {
		t.Error("main config changed again")
	}
	// Dropping it again removes its options file and restarts.
	b.handler = b.handler[:1]
	b.install()
	if b.exists(filepath.Join(DefaultOptionsDir, "snapshot-strict.toml")) || b.restarts() != 3 {
		t.Errorf("dropped handler: options file left or no restart (%d)", b.restarts())
	}
}

func TestUninstallRestoresExactly(t *testing.T) {
	b := newBed(t, mainV3)
	foreign := map[string]string{
		filepath.Join(DefaultDropinDir, "10-other.toml"): "version = 3\n",
		filepath.Join(DefaultBinDir, "runc"):             "someone's runc",
		filepath.Join(DefaultBinDir, CRIUBinary):         "distro criu",
	}
	for p, c := range foreign {
		b.writeHost(p, c, 0o700)
	}
	before := b.contents()
	b.install()
	if b.read(filepath.Join(DefaultBinDir, CRIUBinary)) != "binary criu" {
		t.Fatal("criu not replaced")
	}
	// Someone else adds a file in the options dir after the install.
	b.writeHost(filepath.Join(DefaultOptionsDir, "mine.toml"), "x", 0o644)
	res := b.uninstall()
	if !res.ContainerdChanged || b.restarts() != 2 {
		t.Fatalf("%+v, %d restarts", res, b.restarts())
	}
	if got := b.read(DefaultContainerdConfig); got != mainV3 {
		t.Fatalf("main config not restored byte for byte:\n%q\nwant\n%q", got, mainV3)
	}
	after := b.contents()
	delete(after, "etc/containerd-shim-snapshot/mine.toml")
	delete(after, "etc/containerd-shim-snapshot")
	if d := diff(before, after); len(d) > 0 {
		t.Fatalf("uninstall left differences %v\n%s", d, b.out.String())
	}
	if b.read(filepath.Join(DefaultOptionsDir, "mine.toml")) != "x" || b.exists(filepath.Join(DefaultOptionsDir, StateName)) {
		t.Error("foreign options-dir file lost or state file left")
	}
	// Nothing recorded any more: a second uninstall is a no-op.
	if res := b.uninstall(); res.Changed || b.restarts() != 2 {
		t.Errorf("second uninstall %+v", res)
	}
}

func TestUninstallRemovesCreatedConfigAndDirs(t *testing.T) {
	b := newBed(t, "")
	b.install()
	if got, want := b.read(DefaultContainerdConfig), "version = 3\n"+globLine+"\n"; got != want {
		t.Fatalf("created main config %q, want %q", got, want)
	}
	b.uninstall()
	for _, p := range []string{"etc", "usr"} {
		if b.exists(p) {
			t.Errorf("%s left after uninstall:\n%s", p, b.out.String())
		}
	}
}

func TestExtendExistingImports(t *testing.T) {
	cfg := "version = 3\nimports = [\n  \"/etc/containerd/extra.toml\", # vendor\n]\n\n[grpc]\n  address = \"/run/containerd/containerd.sock\"\n"
	b := newBed(t, cfg)
	b.install()
	var tree struct{ Imports []string }
	if _, err := toml.Decode(b.read(DefaultContainerdConfig), &tree); err != nil {
		t.Fatal(err)
	}
	if strings.Join(tree.Imports, " ") != "/etc/containerd/extra.toml /etc/containerd/conf.d/*.toml" {
		t.Errorf("imports %v:\n%s", tree.Imports, b.read(DefaultContainerdConfig))
	}
	b.uninstall()
	if got := b.read(DefaultContainerdConfig); got != cfg {
		t.Errorf("not restored:\n%q\nwant\n%q", got, cfg)
	}
}

func TestExistingImportCoversDropin(t *testing.T) {
	cfg := "version = 3\nimports = [\"conf.d/*.toml\"]\n"
	b := newBed(t, cfg)
	b.install()
	b.uninstall()
	if b.read(DefaultContainerdConfig) != cfg || !strings.Contains(b.out.String(), "unchanged "+DefaultContainerdConfig) {
		t.Errorf("admin's covering import was edited:\n%s", b.out.String())
	}
}

func TestOldMainConfigRefused(t *testing.T) {
	for _, cfg := range []string{"version = 2\n", "root = \"/var/lib/containerd\"\n"} {
		b := newBed(t, cfg)
		before := b.snapshot()
		_, err := Install(b.config())
		if err == nil || !strings.Contains(err.Error(), "version") || !strings.Contains(err.Error(), DefaultContainerdConfig) {
			t.Errorf("%q: got %v, want a version error naming the file", cfg, err)
		}
		if d := diff(before, b.snapshot()); len(d) > 0 || b.restarts() != 0 {
			t.Errorf("%q: refused install changed %v", cfg, d)
		}
	}
}

func TestBadOptionRefusedNamingKey(t *testing.T) {
	for spec, key := range map[string]string{
		"name=snapshot,restore=sometimes":        "restore",
		"name=snapshot,lock_timeout=soon":        "lock_timeout",
		"name=snapshot,stor=/var/lib/x":          `unknown key "stor"`,
		"name=snapshot,store=relative":           "store",
		"name=snapshot,auto_checkpoint=on-ready": "auto_checkpoint",
	} {
		b := newBed(t, mainV3)
		b.handler = []Handler{mustHandler(t, spec)}
		before := b.snapshot()
		_, err := Install(b.config())
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: got %v, want an error naming %s", spec, err, key)
		}
		if d := diff(before, b.snapshot()); len(d) > 0 {
			t.Errorf("%s: refused install changed %v", spec, d)
		}
	}
}

func TestParseHandlerRefusals(t *testing.T) {
	for spec, want := range map[string]string{
		"store=/s":                 "name=NAME is required",
		"name=Snap":                "DNS label",
		"name=a,store=/s,store=/t": `"store" given twice`,
		"name=a,store":             "not key=value",
	} {
		if _, err := ParseHandler(spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", spec, err, want)
		}
	}
}

func TestHandlerNameConflict(t *testing.T) {
	b := newBed(t, mainV3)
	b.handler = []Handler{mustHandler(t, "name=runc")}
	if _, err := Install(b.config()); err == nil || !strings.Contains(err.Error(), "already declared in "+DefaultContainerdConfig) {
		t.Errorf("got %v", err)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	b := newBed(t, mainV3)
	before := b.snapshot()
	cfg := b.config()
	cfg.DryRun = true
	res, err := Install(cfg)
	if err != nil || !res.ContainerdChanged || res.Restarted {
		t.Fatalf("%+v %v", res, err)
	}
	if d := diff(before, b.snapshot()); len(d) > 0 || b.restarts() != 0 {
		t.Errorf("dry run changed %v", d)
	}
	for _, want := range []string{"would write " + dropinPath, "would add import", "would restart containerd"} {
		if !strings.Contains(b.out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.out.String())
		}
	}
}

func TestFailedRestartIsRetried(t *testing.T) {
	b := newBed(t, mainV3)
	cfg := b.config()
	cfg.RestartCmd = "false"
	if _, err := Install(cfg); err == nil || !strings.Contains(err.Error(), "retries the restart") {
		t.Fatalf("got %v", err)
	}
	res := b.install()
	if res.Changed || !res.Restarted || b.restarts() != 1 {
		t.Fatalf("retry: %+v, %d restarts", res, b.restarts())
	}
	if res := b.install(); res.Restarted {
		t.Error("restarted a third time")
	}
}

func TestChangedFileLeftAloneOnUninstall(t *testing.T) {
	b := newBed(t, mainV3)
	b.install()
	opt := filepath.Join(DefaultOptionsDir, "snapshot.toml")
	b.writeHost(opt, "store = \"/edited\"\n", 0o644)
	b.uninstall()
	if b.read(opt) != "store = \"/edited\"\n" || !strings.Contains(b.out.String(), "left "+opt+" alone") {
		t.Errorf("edited file not left alone:\n%s", b.out.String())
	}
}

func TestAbsoluteSymlinkUnderHostRootRefused(t *testing.T) {
	b := newBed(t, "")
	if err := os.Symlink("/etc", filepath.Join(b.root, "etc")); err != nil {
		t.Fatal(err)
	}
	if _, err := Install(b.config()); err == nil || !strings.Contains(err.Error(), "outside --host-root") {
		t.Errorf("got %v", err)
	}
}

func TestInsertImport(t *testing.T) {
	const g = "/d/*.toml"
	for _, tt := range []struct{ in, want string }{
		{"version = 3\n[a]\nx = 1\n", "version = 3\nimports = [\"/d/*.toml\"]\n[a]\nx = 1\n"},
		{"version = 3", "version = 3\nimports = [\"/d/*.toml\"]"},
		{"version = 3\r\nroot = \"/r\"\r\n", "version = 3\r\nimports = [\"/d/*.toml\"]\r\nroot = \"/r\"\r\n"},
		{"version = 3\nimports = []\n", "version = 3\nimports = [\"/d/*.toml\"]\n"},
		{"version = 3\nimports = ['/a.toml']\n", "version = 3\nimports = ['/a.toml', \"/d/*.toml\"]\n"},
		{"version = 3\nimports = [\"/a,]#.toml\",] # c\n", "version = 3\nimports = [\"/a,]#.toml\", \"/d/*.toml\",] # c\n"},
		{"version = 3\n[x]\nimports = [\"/a\"]\n", "version = 3\nimports = [\"/d/*.toml\"]\n[x]\nimports = [\"/a\"]\n"},
	} {
		at, text, err := insertImport(tt.in, g)
		got := tt.in[:at] + text + tt.in[at:]
		if err != nil || got != tt.want {
			t.Errorf("insertImport(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			continue
		}
		if err := verifyImportEdit([]byte(tt.in), []byte(got), g); err != nil {
			t.Errorf("verify %q: %v", got, err)
		}
		back, ok := revertImport([]byte(got), ImportEdit{Offset: at, Text: text})
		if !ok || string(back) != tt.in {
			t.Errorf("revert %q = %q", got, back)
		}
	}
}

// TestContainerdReadsDropin has the real containerd (when installed) load
// the edited main config and check it sees the handler through the import.
func TestContainerdReadsDropin(t *testing.T) {
	bin, err := exec.LookPath("containerd")
	if err != nil {
		t.Skip("containerd not installed")
	}
	dir, b := t.TempDir(), newBed(t, "")
	main := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(main, []byte(mainV3), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := b.config()
	cfg.HostRoot, cfg.ContainerdConfig, cfg.RestartCmd = "/", main, ""
	cfg.BinDir, cfg.DropinDir, cfg.OptionsDir = filepath.Join(dir, "bin"), filepath.Join(dir, "conf.d"), filepath.Join(dir, "opts")
	if _, err := Install(cfg); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--config", main, "config", "dump").CombinedOutput()
	if err != nil {
		t.Fatalf("containerd config dump: %v\n%s", err, out)
	}
	for _, want := range []string{"runtimes.snapshot]", "runtime_type = '" + containerdconfig.RuntimeType + "'",
		"ConfigPath = '" + filepath.Join(dir, "opts", "snapshot.toml") + "'", "runtimes.runc]"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("containerd's merged config lacks %q:\n%s", want, out)
		}
	}
}

// TestIntOptions: restore_threads and prefetch_readers are written as TOML
// integers, and a value that is not one is refused with the key named.
func TestIntOptions(t *testing.T) {
	h, err := ParseHandler("name=snapshot,store=/var/lib/gpusnap/store,restore_threads=4,prefetch_readers=2")
	if err != nil {
		t.Fatal(err)
	}
	data, err := Config{OptionsDir: "/etc/containerd-shim-snapshot"}.renderOptions(h)
	if err != nil || !strings.Contains(string(data), "restore_threads = 4\n") || !strings.Contains(string(data), "prefetch_readers = 2\n") {
		t.Fatalf("rendered %q, %v", data, err)
	}
	h, _ = ParseHandler("name=snapshot,store=/var/lib/gpusnap/store,restore_threads=many")
	if _, err := (Config{OptionsDir: "/etc/containerd-shim-snapshot"}).renderOptions(h); err == nil || !strings.Contains(err.Error(), "restore_threads") {
		t.Fatalf("want an error naming restore_threads, got %v", err)
	}
}

// TestBoolOption: restore_huge_pages is written as a TOML boolean, and a
// value that is not one is refused with the key named.
func TestBoolOption(t *testing.T) {
	h, err := ParseHandler("name=snapshot,store=/var/lib/gpusnap/store,restore_huge_pages=false")
	if err != nil {
		t.Fatal(err)
	}
	data, err := Config{OptionsDir: "/etc/containerd-shim-snapshot"}.renderOptions(h)
	if err != nil || !strings.Contains(string(data), "restore_huge_pages = false\n") {
		t.Fatalf("rendered %q, %v", data, err)
	}
	h, err = ParseHandler("name=snapshot,store=/var/lib/gpusnap/store,require_signature=true,trusted_keys=/k/a.pub:/k/b.pub")
	if err != nil {
		t.Fatal(err)
	}
	data, err = Config{OptionsDir: "/etc/containerd-shim-snapshot"}.renderOptions(h)
	if err != nil || !strings.Contains(string(data), "require_signature = true\n") || !strings.Contains(string(data), `trusted_keys = ["/k/a.pub", "/k/b.pub"]`) {
		t.Fatalf("rendered %q, %v", data, err)
	}
	h, _ = ParseHandler("name=snapshot,store=/var/lib/gpusnap/store,restore_huge_pages=maybe")
	if _, err := (Config{OptionsDir: "/etc/containerd-shim-snapshot"}).renderOptions(h); err == nil || !strings.Contains(err.Error(), "restore_huge_pages") {
		t.Fatalf("want an error naming restore_huge_pages, got %v", err)
	}
}

// TestRegistryCredentials: --registry-credentials installs the file
// root-only in the options directory and names it in every handler with a
// registry that names no credentials of its own; a file that is not a
// docker config.json is refused before anything is written.
func TestRegistryCredentials(t *testing.T) {
	b := newBed(t, "")
	b.writeSrc("config.json", `{"auths": {"registry.example:5000": {"auth": "dXNlcjpwYXNz"}}}`)
	b.handler = []Handler{
		mustHandler(t, "name=pulls,store=/var/lib/gpusnap/store,registry=registry.example:5000/ck"),
		mustHandler(t, "name=own,store=/var/lib/gpusnap/store,registry=registry.example:5000/ck,registry_credentials=/etc/other.json"),
		mustHandler(t, "name=local,store=/var/lib/gpusnap/store"),
	}
	cfg := b.config()
	cfg.RegistryCredentials = filepath.Join(b.src, "config.json")
	if _, err := Install(cfg); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(DefaultOptionsDir, RegistryCredentialsName)
	if got := b.read(path); !strings.Contains(got, "dXNlcjpwYXNz") {
		t.Errorf("credentials file: %q", got)
	}
	if fi, err := os.Stat(filepath.Join(b.root, path)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("credentials file mode: %v, %v", fi.Mode(), err)
	}
	want := map[string]string{"pulls": "registry_credentials = \"" + path + "\"\n", "own": "registry_credentials = \"/etc/other.json\"\n", "local": ""}
	for name, line := range want {
		got := b.read(filepath.Join(DefaultOptionsDir, name+".toml"))
		if line != "" && !strings.Contains(got, line) || line == "" && strings.Contains(got, "registry_credentials") || strings.Count(got, "registry_credentials") > 1 {
			t.Errorf("%s.toml:\n%s\nwant %q", name, got, line)
		}
	}

	bad := newBed(t, "")
	bad.writeSrc("config.json", `{"user": "x"}`)
	cfg = bad.config()
	cfg.RegistryCredentials = filepath.Join(bad.src, "config.json")
	if _, err := Install(cfg); err == nil || !strings.Contains(err.Error(), "not a docker-style config.json") {
		t.Fatalf("want the file refused, got %v", err)
	}
	if bad.exists(filepath.Join(DefaultOptionsDir, RegistryCredentialsName)) || bad.exists(filepath.Join(DefaultOptionsDir, "snapshot.toml")) {
		t.Error("a refused install wrote files")
	}
}
