package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// testKey is a valid identity key derived from a label.
func testKey(label string) string {
	sum := sha256.Sum256([]byte(label))
	return hex.EncodeToString(sum[:])
}

func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// stageFiles stages files (slash path to content) the way a writer would.
func stageFiles(t *testing.T, s *Store, files map[string]string) *Staging {
	t.Helper()
	st, err := s.Stage()
	if err != nil {
		t.Fatal(err)
	}
	for p, content := range files {
		full := filepath.Join(st.Dir(), filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

func publish(t *testing.T, s *Store, m *Manifest, files map[string]string) *Checkpoint {
	t.Helper()
	c, err := stageFiles(t, s, files).Publish(m)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rootEntries lists everything in the store root, hidden entries included.
func rootEntries(t *testing.T, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(s.Root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func names(cs []*Checkpoint) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

var sampleFiles = map[string]string{
	"checkpoint/pages-1.img":     strings.Repeat("p", 4096),
	"checkpoint/inventory.img":   "inventory",
	"rootfs-diff.tar":            "tar",
	"spec.dump":                  "{}",
	"checkpoint/sub/deep/a.img":  "deep",
	"checkpoint/empty-file.img":  "",
	"config.dump":                "{}",
	"deleted.files":              "[]",
	"checkpoint/sub/deep/b.img":  "deep2",
	"checkpoint/zz-last-one.img": "z",
}

func TestPublishGetListLatest(t *testing.T) {
	s := openStore(t)
	keyA, keyB := testKey("a"), testKey("b")
	a1 := publish(t, s, &Manifest{Key: keyA, Labels: map[string]string{"v": "1"}}, sampleFiles)
	a2 := publish(t, s, &Manifest{Key: keyA}, map[string]string{"spec.dump": "2"})
	b1 := publish(t, s, &Manifest{Key: keyB}, map[string]string{"spec.dump": "b"})

	if want := keyA[:16] + "-g000002"; a2.Name != want {
		t.Errorf("second publish named %s, want %s", a2.Name, want)
	}
	got, err := s.Get(a1.Name)
	if err != nil {
		t.Fatal(err)
	}
	m := got.Manifest
	if m.Schema != SchemaVersion || m.Name != a1.Name || m.Key != keyA || m.Created.IsZero() || m.Labels["v"] != "1" {
		t.Errorf("manifest = %+v", m)
	}
	if len(m.Files) != len(sampleFiles) || !slices.IsSortedFunc(m.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) }) {
		t.Errorf("files not complete and sorted: %+v", m.Files)
	}
	for _, f := range m.Files {
		sum := sha256.Sum256([]byte(sampleFiles[f.Path]))
		if f.SHA256 != hex.EncodeToString(sum[:]) || f.Size != int64(len(sampleFiles[f.Path])) {
			t.Errorf("file %s recorded as %+v", f.Path, f)
		}
	}
	if err := got.Verify(context.Background(), nil); err != nil {
		t.Error(err)
	}

	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	wantNames := []string{a1.Name, a2.Name, b1.Name}
	slices.Sort(wantNames) // prefixes differ, so this is the listing order too
	if !slices.Equal(names(list), wantNames) {
		t.Errorf("List = %v, want %v", names(list), wantNames)
	}
	if latest, err := s.Latest(keyA); err != nil || latest.Name != a2.Name {
		t.Errorf("Latest(a) = %v, %v; want %s", latest, err, a2.Name)
	}
	if _, err := s.Latest(testKey("none")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Latest(unknown) error = %v, want ErrNotFound", err)
	}
	if _, err := s.Get(testKey("none")[:16] + "-g000001"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(missing) error = %v, want ErrNotFound", err)
	}
}

func TestPublishedModes(t *testing.T) {
	s := openStore(t)
	c := publish(t, s, &Manifest{Key: testKey("m")}, sampleFiles)
	err := filepath.WalkDir(c.Dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		want := os.FileMode(fileMode)
		if d.IsDir() {
			want = os.ModeDir | dirMode
		}
		if err == nil && info.Mode() != want {
			t.Errorf("%s has mode %v, want %v", p, info.Mode(), want)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestGetRejectsBadNames(t *testing.T) {
	s := openStore(t)
	prefix := testKey("x")[:16]
	for _, name := range []string{
		"", ".", "..", "../" + prefix + "-g000001", prefix + "-g000001/..", "a/b",
		".staging-123", ".trash-" + prefix + "-g000001", prefix + "-g1", prefix + "-g0000001",
		prefix + "-g000000", strings.ToUpper(prefix) + "-g000001", prefix[:15] + "-g000001",
	} {
		if _, err := s.Get(name); err == nil || !strings.Contains(err.Error(), "invalid checkpoint name") {
			t.Errorf("Get(%q) error = %v, want invalid name", name, err)
		}
		if err := s.Remove(name); err == nil || !strings.Contains(err.Error(), "invalid checkpoint name") {
			t.Errorf("Remove(%q) error = %v, want invalid name", name, err)
		}
	}
}

func TestListShowsBrokenCheckpoint(t *testing.T) {
	s := openStore(t)
	key := testKey("k")
	good := publish(t, s, &Manifest{Key: key}, map[string]string{"spec.dump": "{}"})
	broken := filepath.Join(s.Root, key[:16]+"-g000002")
	for _, dir := range []string{broken, filepath.Join(s.Root, "lost+found")} {
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[1].Err == nil || !errors.Is(list[1].Err, ErrManifest) || list[1].Manifest != nil {
		t.Fatalf("List = %+v, want the good checkpoint and the broken one with Err", list)
	}
	if !strings.Contains(list[1].Err.Error(), filepath.Join(broken, manifestName)) {
		t.Errorf("error %q does not name the manifest", list[1].Err)
	}
	if latest, err := s.Latest(key); err != nil || latest.Name != good.Name {
		t.Errorf("Latest = %v, %v; want fallback to %s", latest, err, good.Name)
	}
	next := publish(t, s, &Manifest{Key: key}, map[string]string{"spec.dump": "{}"})
	if next.Generation != 3 {
		t.Errorf("publish after a broken generation 2 got generation %d, want 3", next.Generation)
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	s := openStore(t)
	st := stageFiles(t, s, sampleFiles)
	if err := st.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := st.Abort(); err != nil {
		t.Errorf("second Abort: %v", err)
	}
	if _, err := st.Publish(&Manifest{Key: testKey("a")}); err == nil {
		t.Error("Publish after Abort succeeded")
	}
	if got := rootEntries(t, s); len(got) != 0 {
		t.Errorf("store root holds %v after Abort", got)
	}
}

func TestFailedPublishLeavesNothing(t *testing.T) {
	tests := []struct {
		name    string
		key     string
		prepare func(dir string) error
		want    string
	}{
		{"bad key", "not-a-key", nil, `key "not-a-key" is not a lowercase hex sha256`},
		{"symlink", testKey("s"), func(dir string) error {
			return os.Symlink("/etc/passwd", filepath.Join(dir, "checkpoint", "link.img"))
		}, "checkpoint/link.img is a symlink"},
		{"backslash", testKey("s"), func(dir string) error {
			return os.WriteFile(filepath.Join(dir, `a\b`), nil, 0o600)
		}, "contains a backslash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			st := stageFiles(t, s, sampleFiles)
			if tt.prepare != nil {
				if err := tt.prepare(st.Dir()); err != nil {
					t.Fatal(err)
				}
			}
			_, err := st.Publish(&Manifest{Key: tt.key})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Publish error = %v, want it to contain %q", err, tt.want)
			}
			if got := rootEntries(t, s); len(got) != 0 {
				t.Errorf("store root holds %v after a failed publish", got)
			}
		})
	}
}

// A writer killed mid-publish leaves only its staging directory, and no
// lock on it, since the kernel drops flocks of dead processes.
func TestKilledWriter(t *testing.T) {
	s := openStore(t)
	dir, err := os.MkdirTemp(s.Root, stagingPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "spec.dump"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if list, err := s.List(); err != nil || len(list) != 0 {
		t.Errorf("List = %v, %v; want nothing", names(list), err)
	}
	if removed, err := s.Prune(PrunePolicy{StaleStaging: time.Hour}); err != nil || len(removed) != 0 {
		t.Errorf("Prune(1h) = %v, %v; want a fresh staging dir kept", removed, err)
	}
	removed, err := s.Prune(PrunePolicy{})
	if err != nil || !slices.Equal(removed, []string{filepath.Base(dir)}) {
		t.Errorf("Prune(0) = %v, %v; want %s removed", removed, err, filepath.Base(dir))
	}
	if got := rootEntries(t, s); len(got) != 0 {
		t.Errorf("store root holds %v after Prune", got)
	}
}

func TestPruneSparesLiveWriter(t *testing.T) {
	s := openStore(t)
	st := stageFiles(t, s, map[string]string{"spec.dump": "{}"})
	if removed, err := s.Prune(PrunePolicy{}); err != nil || len(removed) != 0 {
		t.Fatalf("Prune = %v, %v; want the live staging dir kept", removed, err)
	}
	if _, err := st.Publish(&Manifest{Key: testKey("live")}); err != nil {
		t.Errorf("Publish after Prune: %v", err)
	}
}

func TestRemove(t *testing.T) {
	s := openStore(t)
	c := publish(t, s, &Manifest{Key: testKey("r")}, sampleFiles)
	if err := s.Remove(c.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(c.Name); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Remove error = %v, want ErrNotFound", err)
	}
	if got := rootEntries(t, s); len(got) != 0 {
		t.Errorf("store root holds %v after Remove", got)
	}
	if err := s.Remove(c.Name); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove error = %v, want ErrNotFound", err)
	}
}

func TestOpenNamesPath(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(filepath.Join(file, "store")); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("Open under a file: error = %v, want it to name the path", err)
	}
}
