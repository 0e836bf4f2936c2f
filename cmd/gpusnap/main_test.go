package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
	"github.com/gpusnap/containerd-shim-snapshot-v2/criuimage/criuimagetest"
	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// thisNode is what the tests pretend this node is, so inspect's
// compatibility check needs no CRIU.
var thisNode = storage.Fingerprint{Arch: "amd64", Kernel: "6.8.0-45-generic", CRIUVersion: "4.2.1", CgroupVersion: 2}

func TestMain(m *testing.M) {
	nodeFingerprint = func(string) (storage.Fingerprint, error) { return thisNode, nil }
	os.Exit(m.Run())
}

func testKey(label string) string {
	sum := sha256.Sum256([]byte(label))
	return hex.EncodeToString(sum[:])
}

// testStore is a store holding two generations of key "web" and one of
// key "db", published the way the shim publishes them.
type testStore struct {
	root           string
	web1, web2, db string
}

func newTestStore(t *testing.T) *testStore {
	t.Helper()
	s, err := storage.Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	return &testStore{
		root: s.Root,
		web1: publish(t, s, "web", base, 1).Name,
		web2: publish(t, s, "web", base.Add(time.Hour), 2).Name,
		db:   publish(t, s, "db", base.Add(2*time.Hour), 0).Name,
	}
}

func publish(t *testing.T, s *storage.Store, label string, created time.Time, pages int) *storage.Checkpoint {
	t.Helper()
	return publishWith(t, s, label, created, pages, func(*storage.Manifest) {})
}

// publishWith is publish with edit applied to the manifest before publishing.
// The checkpoint's CRIU images are real: one process, the label, whose
// pages (pages-1.img) number pages.
func publishWith(t *testing.T, s *storage.Store, label string, created time.Time, pages int, edit func(*storage.Manifest)) *storage.Checkpoint {
	t.Helper()
	return publishImages(t, s, label, created, edit, func(dir string) {
		writeImages(t, dir, criuimagetest.Process{PID: 1, Comm: label, Pages: pages, Mappings: 3, Files: 2, PagesID: 1})
	})
}

// publishImages publishes a checkpoint whose CRIU images images writes
// into its staging directory.
func publishImages(t *testing.T, s *storage.Store, label string, created time.Time, edit func(*storage.Manifest), images func(dir string)) *storage.Checkpoint {
	t.Helper()
	st, err := s.Stage()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Abort()
	images(st.Dir())
	files := map[string]string{
		"checkpoint/inventory.img": "inventory",
		"rootfs-diff.tar":          "tar",
		"spec.dump":                "{}",
	}
	for p, content := range files {
		full := filepath.Join(st.Dir(), filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m := &storage.Manifest{
		Key:      testKey(label),
		Identity: map[string]string{"image": "registry.local/" + label + ":1", "args": "serve"},
		Node:     thisNode,
		Source:   storage.Source{ContainerID: label + "-ctr", Namespace: "k8s.io", Hostname: "node-a"},
		Created:  created,
		Phases:   map[string]float64{"criu_dump": 1.25, "cuda_checkpoint": 0.5},
	}
	edit(m)
	c, err := st.Publish(m)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// writeImages writes real CRIU images of procs into dir/checkpoint.
func writeImages(t *testing.T, dir string, procs ...criuimagetest.Process) {
	t.Helper()
	images := filepath.Join(dir, "checkpoint")
	if err := os.MkdirAll(images, 0o700); err != nil {
		t.Fatal(err)
	}
	criuimagetest.Write(t, images, procs...)
}

// payload is the bytes the checkpoints under dir hold besides their manifests,
// summed from the disk rather than from the manifest that records them.
func payload(t *testing.T, dir string) (size int64, files int) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "manifest.json" {
			return err
		}
		fi, err := d.Info()
		size, files = size+fi.Size(), files+1
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return size, files
}

// human is the size of checkpoint name as gpusnap prints it.
func (ts *testStore) human(t *testing.T, name string) string {
	t.Helper()
	size, _ := payload(t, filepath.Join(ts.root, name))
	return humanBytes(size)
}

// gpusnap runs the CLI in-process.
func gpusnap(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// mustRun runs the CLI and fails the test unless it exits with want.
func mustRun(t *testing.T, want int, args ...string) (stdout, stderr string) {
	t.Helper()
	code, stdout, stderr := gpusnap(t, args...)
	if code != want {
		t.Fatalf("gpusnap %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, stdout, stderr)
	}
	return stdout, stderr
}

func decode[T any](t *testing.T, data string) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode JSON: %v\n%s", err, data)
	}
	return v
}

func contains(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s does not contain %q:\n%s", what, w, got)
		}
	}
}

func TestLs(t *testing.T) {
	ts := newTestStore(t)
	// A directory with a checkpoint's name but no manifest: ls shows it
	// with its error instead of hiding it.
	broken := filepath.Base(mkdir(t, ts.root, testKey("broken")[:16]+"-g000001"))

	out, _ := mustRun(t, exitOK, "--store", ts.root, "ls")
	contains(t, "ls", out, "NAME", "KEY", ts.web1, ts.web2, ts.db, testKey("web")[:16],
		"k8s.io/web-ctr", "amd64/6.8.0-45-generic/4.2.1", ts.human(t, ts.web1), broken, "BROKEN: invalid manifest")
	if strings.Contains(out, testKey("web")[:17]) {
		t.Errorf("ls shows more than 16 characters of the key:\n%s", out)
	}

	// --json after the command works as well as before it.
	out, _ = mustRun(t, exitOK, "ls", "--store", ts.root, "--json")
	entries := decode[[]lsEntry](t, out)
	if len(entries) != 4 {
		t.Fatalf("ls --json: %d entries, want 4", len(entries))
	}
	byName := map[string]lsEntry{}
	for _, e := range entries {
		byName[e.Name] = e
	}
	size, _ := payload(t, filepath.Join(ts.root, ts.web2))
	if e := byName[ts.web2]; e.Key != testKey("web") || e.Size != size || e.Source.ContainerID != "web-ctr" || *e.Node != thisNode || e.Error != "" {
		t.Errorf("ls --json entry %+v", e)
	}
	if e := byName[broken]; e.Error == "" || e.Key != "" {
		t.Errorf("broken entry %+v, want only an error", e)
	}
}

func TestLsEmptyAndMissingStore(t *testing.T) {
	empty := t.TempDir()
	out, _ := mustRun(t, exitOK, "--store", empty, "ls")
	contains(t, "ls", out, "no checkpoints in store "+empty)
	out, _ = mustRun(t, exitOK, "--store", empty, "--json", "ls")
	if got := decode[[]lsEntry](t, out); len(got) != 0 {
		t.Errorf("ls --json of an empty store = %v", got)
	}

	missing := filepath.Join(empty, "nope")
	_, errOut := mustRun(t, exitFail, "--store", missing, "ls")
	contains(t, "stderr", errOut, "store "+missing+" does not exist")
	if _, err := os.Stat(missing); err == nil {
		t.Error("ls created the missing store")
	}
	_, errOut = mustRun(t, exitFail, "ls")
	contains(t, "stderr", errOut, "no store: pass --store DIR or --handler-config FILE")
}

func TestHandlerConfig(t *testing.T) {
	ts := newTestStore(t)
	cfg := filepath.Join(t.TempDir(), "snapshot.toml")
	write(t, cfg, "store = \""+ts.root+"\"\nrestore = \"auto\"\n")
	out, _ := mustRun(t, exitOK, "--handler-config", cfg, "ls")
	contains(t, "ls", out, ts.web1, ts.db)

	write(t, cfg, "stor = \"/x\"\n")
	_, errOut := mustRun(t, exitFail, "--handler-config", cfg, "ls")
	contains(t, "stderr", errOut, cfg, `unknown key "stor"`)

	write(t, cfg, "restore = \"never\"\n")
	_, errOut = mustRun(t, exitFail, "--handler-config", cfg, "ls")
	contains(t, "stderr", errOut, "handler config "+cfg+" sets no store")

	mustRun(t, exitUsage, "--handler-config", cfg, "--store", ts.root, "ls")
}

func mkdir(t *testing.T, parent, name string) string {
	t.Helper()
	dir := filepath.Join(parent, name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestInspect(t *testing.T) {
	ts := newTestStore(t)
	size, files := payload(t, filepath.Join(ts.root, ts.web2))
	out, _ := mustRun(t, exitOK, "--store", ts.root, "inspect", ts.web2)
	contains(t, "inspect", out,
		"Name:", ts.web2, "Key:", testKey("web"), "Generation:  2",
		"container web-ctr, namespace k8s.io, host node-a",
		"arch amd64, kernel 6.8.0-45-generic, criu 4.2.1, cgroup v2",
		"This node:   compatible",
		fmt.Sprintf("Size:        %s (%d bytes in %d files)", humanBytes(size), size, files),
		"image", "registry.local/web:1", "criu_dump", "1.250s",
		"8.0 KiB", "checkpoint/pages-1.img", "spec.dump")

	out, _ = mustRun(t, exitOK, "--store", ts.root, "--json", "inspect", ts.web2)
	got := decode[inspectOutput](t, out)
	if got.Name != ts.web2 || got.Size != size || got.Manifest.Key != testKey("web") ||
		len(got.Manifest.Files) != files || !got.Compatibility.Compatible || got.Compatibility.Message != "compatible" {
		t.Errorf("inspect --json = %+v", got)
	}
}

func TestInspectIncompatible(t *testing.T) {
	ts := newTestStore(t)
	saved := nodeFingerprint
	t.Cleanup(func() { nodeFingerprint = saved })
	nodeFingerprint = func(string) (storage.Fingerprint, error) {
		n := thisNode
		n.Kernel = "6.18.44"
		return n, nil
	}
	out, _ := mustRun(t, exitOK, "--store", ts.root, "inspect", ts.db)
	contains(t, "inspect", out, "This node:   incompatible: kernel: checkpoint has 6.8.0-45-generic, node has 6.18.44 (major.minor must match)")

	out, _ = mustRun(t, exitOK, "--store", ts.root, "inspect", "--json", ts.db)
	got := decode[inspectOutput](t, out).Compatibility
	if got.Compatible || got.Mismatch == nil || got.Mismatch.Field != "kernel" || got.Mismatch.Node != "6.18.44" {
		t.Errorf("compatibility = %+v, mismatch %+v", got, got.Mismatch)
	}
}

func TestInspectErrors(t *testing.T) {
	ts := newTestStore(t)
	missing := testKey("other")[:16] + "-g000001"
	broken := testKey("broken")[:16] + "-g000001"
	write(t, filepath.Join(mkdir(t, ts.root, broken), "manifest.json"), "{")
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"inspect", missing}, exitFail, `checkpoint "` + missing + `" not found in store ` + ts.root},
		{[]string{"inspect", "x"}, exitFail, `checkpoint "x" not found in store ` + ts.root},
		{[]string{"inspect", broken}, exitFail, "invalid manifest: " + filepath.Join(ts.root, broken, "manifest.json") + ": malformed or truncated JSON"},
		{[]string{"inspect"}, exitUsage, "needs exactly one checkpoint name"},
		{[]string{"inspect", ts.db, ts.web1}, exitUsage, "needs exactly one checkpoint name"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"ls", "--bogus"}, exitUsage, "flag provided but not defined: -bogus"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, errOut := mustRun(t, tt.code, append([]string{"--store", ts.root}, tt.args...)...)
			contains(t, "stderr", errOut, tt.want)
		})
	}
}

func TestVerify(t *testing.T) {
	ts := newTestStore(t)
	out, _ := mustRun(t, exitOK, "--store", ts.root, "verify", ts.web1, ts.db)
	contains(t, "verify", out, "OK    "+ts.web1, "OK    "+ts.db)

	out, _ = mustRun(t, exitOK, "--store", ts.root, "verify", "--all", "--json")
	if got := decode[[]verifyResult](t, out); len(got) != 3 || !got[0].OK || !got[1].OK || !got[2].OK {
		t.Errorf("verify --all --json = %+v", got)
	}

	// Flip one byte of a CRIU image: verify names the checkpoint and file.
	pages := filepath.Join(ts.root, ts.web2, "checkpoint", "pages-1.img")
	f, err := os.OpenFile(pages, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("q"), 100)
	f.Close()

	out, errOut := mustRun(t, exitFail, "--store", ts.root, "verify", "--all")
	contains(t, "verify", out, "OK    "+ts.web1, "OK    "+ts.db, "FAIL  "+ts.web2, "checkpoint/pages-1.img: sha256: expected ")
	contains(t, "stderr", errOut, "1 of 3 checkpoints failed verification")

	out, _ = mustRun(t, exitFail, "--store", ts.root, "verify", ts.web2, "--json")
	got := decode[[]verifyResult](t, out)
	if len(got) != 1 || got[0].OK || len(got[0].Problems) != 1 || !strings.HasPrefix(got[0].Problems[0], "checkpoint/pages-1.img: sha256") {
		t.Errorf("verify --json = %+v", got)
	}

	// A missing file and an unknown name are reported alongside the rest.
	os.Remove(filepath.Join(ts.root, ts.db, "spec.dump"))
	out, errOut = mustRun(t, exitFail, "--store", ts.root, "verify", ts.web1, ts.db, "nope")
	contains(t, "verify", out, "OK    "+ts.web1, "FAIL  "+ts.db, "spec.dump: missing", `FAIL  nope: checkpoint "nope" not found in store `+ts.root)
	contains(t, "stderr", errOut, "2 of 3 checkpoints failed")

	mustRun(t, exitUsage, "--store", ts.root, "verify")
	mustRun(t, exitUsage, "--store", ts.root, "verify", "--all", ts.db)
}

func TestProgressLine(t *testing.T) {
	tests := []struct {
		done, total int64
		want        string
	}{
		{0, 0, "[####################] 100% 0.0/0.0 B c"},
		{0, 2 << 30, "[                    ]   0% 0.0/2.0 GiB c"},
		{1288490189, 2791728742, "[#########           ]  46% 1.2/2.6 GiB c"},
		{512 << 20, 512 << 20, "[####################] 100% 512.0/512.0 MiB c"},
	}
	for _, tt := range tests {
		if got := progressLine("c", tt.done, tt.total); got != tt.want {
			t.Errorf("progressLine(%d, %d) = %q, want %q", tt.done, tt.total, got, tt.want)
		}
	}
	// Buffers and pipes are not terminals: verify draws no bar into them.
	if newProgressBar(&bytes.Buffer{}) != nil {
		t.Error("progress bar on a bytes.Buffer")
	}
}

func TestRm(t *testing.T) {
	ts := newTestStore(t)
	size := ts.human(t, ts.web1)
	out, _ := mustRun(t, exitOK, "--store", ts.root, "rm", ts.web1)
	contains(t, "rm", out, "removed "+ts.web1+" ("+size+")")

	out, errOut := mustRun(t, exitFail, "--store", ts.root, "rm", ts.web1, ts.db, "--json")
	contains(t, "stderr", errOut, `checkpoint "`+ts.web1+`" not found in store `+ts.root)
	got := decode[[]removal](t, out)
	if len(got) != 2 || got[0].Error == "" || got[1].Error != "" || got[1].Name != ts.db {
		t.Errorf("rm --json = %+v", got)
	}

	out, _ = mustRun(t, exitOK, "--store", ts.root, "--json", "ls")
	if names := lsNames(decode[[]lsEntry](t, out)); !slices.Equal(names, []string{ts.web2}) {
		t.Errorf("after rm, ls = %v, want only %s", names, ts.web2)
	}
	mustRun(t, exitUsage, "--store", ts.root, "rm")

	// A broken checkpoint can be removed; it has no size to report.
	broken := mkdir(t, ts.root, testKey("broken")[:16]+"-g000003")
	out, _ = mustRun(t, exitOK, "--store", ts.root, "rm", filepath.Base(broken))
	if want := "removed " + filepath.Base(broken) + "\n"; out != want {
		t.Errorf("rm of a broken checkpoint printed %q, want %q", out, want)
	}
}

func lsNames(entries []lsEntry) []string {
	var names []string
	for _, e := range entries {
		names = append(names, e.Name)
	}
	slices.Sort(names)
	return names
}

func TestPrune(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		removed func(ts *testStore) []string
	}{
		{"no policy", nil, func(*testStore) []string { return nil }},
		{"keep newest per key", []string{"--keep", "1"}, func(ts *testStore) []string { return []string{ts.web1} }},
		// web2 (two pages) and db (none) fit in 10K; the oldest (web1) goes.
		{"byte budget", []string{"--max-bytes", "10K"}, func(ts *testStore) []string { return []string{ts.web1} }},
		{"tight byte budget", []string{"--max-bytes", "2k"}, func(ts *testStore) []string { return []string{ts.web1, ts.web2} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestStore(t)
			out, _ := mustRun(t, exitOK, append([]string{"--store", ts.root, "prune", "--json"}, tt.args...)...)
			got := decode[struct {
				Removed []removal `json:"removed"`
				Freed   int64     `json:"freed"`
				Error   string    `json:"error"`
			}](t, out)
			var names []string
			var freed int64
			for _, r := range got.Removed {
				names = append(names, r.Name)
				freed += *r.Size
			}
			want := tt.removed(ts)
			slices.Sort(names)
			slices.Sort(want)
			if !slices.Equal(names, want) || got.Freed != freed {
				t.Errorf("prune removed %v (freed %d), want %v", names, got.Freed, want)
			}
		})
	}
}

func TestPruneHuman(t *testing.T) {
	ts := newTestStore(t)
	// A staging directory left by a killed writer is cleaned with --stale 0.
	mkdir(t, ts.root, ".staging-dead")
	size := ts.human(t, ts.web1)
	out, _ := mustRun(t, exitOK, "--store", ts.root, "prune", "--keep", "1", "--stale", "0s")
	contains(t, "prune", out, "removed "+ts.web1+" ("+size+")", "removed leftover .staging-dead", "freed "+size)
	out, _ = mustRun(t, exitOK, "--store", ts.root, "prune", "--keep", "1")
	contains(t, "prune", out, "nothing to prune")

	_, errOut := mustRun(t, exitUsage, "--store", ts.root, "prune", "--max-bytes", "10X")
	contains(t, "stderr", errOut, `invalid size "10X"`)
	mustRun(t, exitUsage, "--store", ts.root, "prune", "--keep", "-1")
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "0", want: 0},
		{in: "1024", want: 1024},
		{in: "512B", want: 512},
		{in: "500M", want: 500 << 20},
		{in: "10G", want: 10 << 30},
		{in: "10g", want: 10 << 30},
		{in: "10GiB", want: 10 << 30},
		{in: "10GB", want: 10 << 30},
		{in: "1.5T", want: 3 << 39},
		{in: "4 K", want: 4096},
		{in: "", bad: true},
		{in: "G", bad: true},
		{in: "-1G", bad: true},
		{in: "10X", bad: true},
		{in: "99999999P", bad: true},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if tt.bad != (err != nil) || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.bad)
		}
	}
}

func TestContainerdChecks(t *testing.T) {
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.toml"), filepath.Join(dir, "bad.toml")
	write(t, good, "store = \"/var/lib/gpusnap\"\n")
	write(t, bad, "restore = \"sometimes\"\n")
	confd := filepath.Join(dir, "conf.d")
	os.Mkdir(confd, 0o700)
	write(t, filepath.Join(confd, "snapshot.toml"), `
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.bad]
runtime_type = "io.containerd.snapshot.v2"
options.ConfigPath = "`+bad+`"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.none]
runtime_type = "io.containerd.snapshot.v2"
`)
	config := filepath.Join(dir, "config.toml")
	write(t, config, `version = 3
imports = [
  "conf.d/*.toml",  # drop-ins
]
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.good]
runtime_type = "io.containerd.snapshot.v2"
options.ConfigPath = "`+good+`"
`)
	checks, handlers := containerdChecks(config)
	text := formatChecks(checks)
	contains(t, "checks", text,
		`PASS containerd handler: "good" in `+config,
		`PASS handler "good": options `+good+": store /var/lib/gpusnap",
		`PASS containerd handler: "bad" in `+filepath.Join(confd, "snapshot.toml"),
		`FAIL handler "bad": invalid snapshot shim options: `+bad+`: restore = "sometimes"`,
		`WARN handler "none": sets no options.ConfigPath`)
	if len(handlers) != 3 || handlers[0].opts == nil || handlers[1].opts != nil || handlers[0].opts.Store != "/var/lib/gpusnap" {
		t.Errorf("handlers = %+v", handlers)
	}

	write(t, config, "version = 3\n")
	checks, _ = containerdChecks(config)
	contains(t, "checks", formatChecks(checks), `FAIL containerd handler: no runtime handler with runtime_type = "`+containerdconfig.RuntimeType+`" in `+config)
	write(t, config, "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.x]\nruntime_type = \"io.containerd.snapshot.v2\"\nruntime_type = \"again\"\n")
	checks, _ = containerdChecks(config)
	contains(t, "checks", formatChecks(checks), "WARN containerd config: "+config+": ",
		"WARN containerd handler: "+config+" mentions "+containerdconfig.RuntimeType+`, but no runtime_type = "`+containerdconfig.RuntimeType+`" line was understood`)
	checks, _ = containerdChecks(filepath.Join(dir, "missing.toml"))
	contains(t, "checks", formatChecks(checks), "FAIL containerd config: open "+filepath.Join(dir, "missing.toml"))
}

func formatChecks(checks []check) string {
	var b strings.Builder
	for _, c := range checks {
		b.WriteString(c.Level + " " + c.Check + ": " + c.Detail + "\n")
	}
	return b.String()
}

func TestStoreChecks(t *testing.T) {
	ts := newTestStore(t)
	text := formatChecks(storeChecks(ts.root))
	if os.Geteuid() == 0 {
		contains(t, "checks", text, "PASS store "+ts.root+": owned by root, mode 0700")
	} else {
		contains(t, "checks", text, "FAIL store "+ts.root+": owned by uid ")
	}
	total, _ := payload(t, ts.root)
	contains(t, "checks", text, "INFO store "+ts.root+": 3 checkpoints, "+humanBytes(total))

	if err := os.Chmod(ts.root, 0o777); err != nil {
		t.Fatal(err)
	}
	contains(t, "checks", formatChecks(storeChecks(ts.root)), "FAIL store "+ts.root+": mode 0777 is writable by group or others")

	missing := filepath.Join(ts.root, "missing")
	contains(t, "checks", formatChecks(storeChecks(missing)), "FAIL store "+missing+": does not exist")

	// The store's own mode is fine; the directory above it is not.
	below := filepath.Join(ts.root, "below")
	if err := os.Mkdir(below, 0o700); err != nil {
		t.Fatal(err)
	}
	contains(t, "checks", formatChecks(storeChecks(below)), "FAIL store "+below+": untrusted store path: "+ts.root+" is writable by group or others (mode 0777)")
}

// TestDoctor runs the whole report; what passes depends on the machine, so
// it checks the report's shape and the checks that depend only on inputs.
func TestDoctor(t *testing.T) {
	ts := newTestStore(t)
	out, _ := gpusnapAny(t, "doctor", "--store", ts.root, "--containerd-config", filepath.Join(t.TempDir(), "none.toml"), "--json")
	got := decode[struct {
		OK     bool    `json:"ok"`
		Checks []check `json:"checks"`
	}](t, out)
	if got.OK {
		t.Error("doctor is OK without a containerd config")
	}
	seen := map[string]bool{}
	for _, c := range got.Checks {
		seen[c.Check] = true
		if !slices.Contains([]string{levelPass, levelInfo, levelWarn, levelFail}, c.Level) {
			t.Errorf("check %+v has an unknown level", c)
		}
	}
	for _, name := range []string{"kernel", "cgroup", "network lock", "containerd config", "store " + ts.root, "gpu"} {
		if !seen[name] {
			t.Errorf("doctor has no %q check: %+v", name, got.Checks)
		}
	}
	if !seen["criu"] && !seen["criu version"] {
		t.Errorf("doctor has no criu check: %+v", got.Checks)
	}

	out, _ = gpusnapAny(t, "doctor", "--store", ts.root, "--containerd-config", filepath.Join(t.TempDir(), "none.toml"))
	contains(t, "doctor", out, "FAIL  containerd config", "passed,", "failed")
}

// gpusnapAny runs a command whose exit status depends on the machine.
func gpusnapAny(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	code, stdout, stderr := gpusnap(t, args...)
	if code != exitOK && code != exitFail {
		t.Fatalf("gpusnap %v: exit %d\n%s", args, code, stderr)
	}
	return stdout, stderr
}

func TestUsage(t *testing.T) {
	_, errOut := mustRun(t, exitUsage)
	contains(t, "usage", errOut, "Usage: gpusnap", "verify NAME... | --all", "--handler-config FILE")
	out, _ := mustRun(t, exitOK, "help")
	contains(t, "help", out, "Commands:")
	_, errOut = mustRun(t, exitOK, "help", "prune")
	contains(t, "prune -h", errOut, "-keep N", "-max-bytes SIZE", "-stale DURATION", "-json")
}

func TestParseInterleaved(t *testing.T) {
	ts := newTestStore(t)
	// Flags after names, and "--" before a name that looks like a flag.
	out, _ := mustRun(t, exitOK, "verify", ts.db, "--store", ts.root, "--json", ts.web1)
	if got := decode[[]verifyResult](t, out); len(got) != 2 {
		t.Errorf("verify with interleaved flags = %+v", got)
	}
	_, errOut := mustRun(t, exitFail, "--store", ts.root, "rm", "--", "--all")
	contains(t, "stderr", errOut, `checkpoint "--all" not found`)
}

// TestCRIUPatchCheck: a CRIU binary is known to carry the project's patches
// by the variables they read (in the binary) and the options they add (in
// its --help); one without them is a warning naming what the node loses.
func TestCRIUPatchCheck(t *testing.T) {
	dir := t.TempDir()
	patched, upstream, half := filepath.Join(dir, "patched"), filepath.Join(dir, "upstream"), filepath.Join(dir, "half")
	// Scripts stand in for CRIU binaries: the variables' names are in
	// their text, the option in what they print for --help.
	fakeCRIU := func(path, text, help string) {
		write(t, path, "#!/bin/sh\n# "+text+"\necho '"+help+"'\n")
		if err := os.Chmod(path, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fakeCRIU(patched, "CRIU_RESTORE_HUGEPAGES CRIU_RESTORE_THREADS CRIU_RESTORE_POPULATE", "  --inherited-devices PID[,PID...]")
	fakeCRIU(upstream, "CRIU_LOG", "  --ghost-fiemap")
	fakeCRIU(half, "CRIU_RESTORE_HUGEPAGES CRIU_RESTORE_THREADS", "  --ghost-fiemap")
	contains(t, "checks", formatChecks([]check{criuPatchCheck(patched)}), "PASS criu patches: "+patched+" carries the project's patches")
	contains(t, "checks", formatChecks([]check{criuPatchCheck(upstream)}), "WARN criu patches: "+upstream+
		" lacks some of the project's CRIU patches (contrib/criu): restore_huge_pages has no effect; restore_threads has no effect (one page reader); containers whose processes inherited GPU device files")
	contains(t, "checks", formatChecks([]check{criuPatchCheck(half)}), "WARN criu patches: "+half+
		" lacks some of the project's CRIU patches (contrib/criu): containers whose processes inherited GPU device files (torch.compile's workers) cannot be checkpointed;")
	contains(t, "checks", formatChecks([]check{criuPatchCheck(filepath.Join(dir, "none"))}), "WARN criu patches: open "+filepath.Join(dir, "none"))
}

// TestKeyChecks: doctor loads the keys a handler names as the shim would,
// and fails the ones that do not load with the handler and the reason.
func TestKeyChecks(t *testing.T) {
	dir := t.TempDir()
	prefix, enc := filepath.Join(dir, "handler"), filepath.Join(dir, "handler.enc")
	mustRun(t, exitOK, "keygen", prefix)
	mustRun(t, exitOK, "enckey", enc)
	o := options.Default()
	o.SigningKey, o.TrustedKeys, o.EncryptionKey = prefix+".key", []string{prefix + ".pub"}, enc
	contains(t, "checks", formatChecks(keyChecks("handler snapshot", o)),
		"PASS signing key: handler snapshot: "+prefix+".key loads",
		"PASS trusted keys: handler snapshot: "+prefix+".pub loads",
		"PASS encryption key: handler snapshot: "+enc+" loads")

	missing := filepath.Join(dir, "missing.pub")
	o.TrustedKeys = []string{prefix + ".pub", missing}
	if err := os.Chmod(enc, 0o644); err != nil {
		t.Fatal(err)
	}
	text := formatChecks(keyChecks("handler snapshot", o))
	contains(t, "checks", text, "PASS signing key: handler snapshot:", "FAIL trusted keys: handler snapshot: ", missing, "FAIL encryption key: handler snapshot: ")
	if n := len(keyChecks("plain", options.Default())); n != 0 {
		t.Errorf("a handler without keys gets %d key checks", n)
	}
}
