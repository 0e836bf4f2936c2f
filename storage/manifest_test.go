package storage

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpusnap/containerd-shim-snapshot-v2/cudackpt"
)

// editManifest returns an edit that rewrites the decoded manifest.
func editManifest(t *testing.T, edit func(m map[string]any)) func([]byte) []byte {
	return func(data []byte) []byte {
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		edit(m)
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
}

func setFilePath(p string) func(m map[string]any) {
	return func(m map[string]any) { m["files"].([]any)[0].(map[string]any)["path"] = p }
}

func TestReadManifestRejects(t *testing.T) {
	tests := []struct {
		name string
		edit func([]byte) []byte
		want string
	}{
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }, "malformed or truncated JSON"},
		{"trailing data", func(b []byte) []byte { return append(b, "{}"...) }, "malformed or truncated JSON"},
		{"unknown field", func(b []byte) []byte { return bytes.Replace(b, []byte("{"), []byte(`{"bogus":1,`), 1) }, `unknown field "bogus"`},
		{"newer schema", editManifest(t, func(m map[string]any) { m["schema"] = 2; m["new_field"] = true }), "unsupported schema 2"},
		{"no schema", editManifest(t, func(m map[string]any) { delete(m, "schema") }), "unsupported schema 0"},
		{"dot-dot path", editManifest(t, setFilePath("../../etc/passwd")), `"../../etc/passwd" contains ".."`},
		{"inner dot-dot", editManifest(t, setFilePath("checkpoint/../../x")), `contains ".."`},
		{"absolute path", editManifest(t, setFilePath("/etc/passwd")), "is absolute"},
		{"backslash", editManifest(t, setFilePath(`checkpoint\x`)), "contains a backslash"},
		{"unclean path", editManifest(t, setFilePath("checkpoint//x")), "is not clean"},
		{"empty path", editManifest(t, setFilePath("")), "is empty"},
		{"manifest path", editManifest(t, setFilePath("manifest.json")), "is the manifest itself"},
		{"duplicate", editManifest(t, func(m map[string]any) {
			files := m["files"].([]any)
			m["files"] = append(files, files[0])
		}), "listed twice"},
		{"bad digest", editManifest(t, func(m map[string]any) { m["files"].([]any)[0].(map[string]any)["sha256"] = "xyz" }), `invalid sha256 "xyz"`},
		{"blocks and a sha256", editManifest(t, func(m map[string]any) {
			m["files"].([]any)[0].(map[string]any)["blocks"] = []string{strings.Repeat("a", 64)}
		}), "both a sha256 and block digests"},
		{"blocks for a small file", editManifest(t, func(m map[string]any) {
			f := m["files"].([]any)[0].(map[string]any)
			delete(f, "sha256")
			f["blocks"] = []string{strings.Repeat("a", 64)}
		}), "1 block digests for 0 bytes, want 0"},
		{"too few blocks", editManifest(t, func(m map[string]any) {
			f := m["files"].([]any)[0].(map[string]any)
			delete(f, "sha256")
			f["size"], f["blocks"] = 2*BlockSize+1, []string{strings.Repeat("a", 64), strings.Repeat("b", 64)}
		}), "2 block digests for 134217729 bytes, want 3"},
		{"a bad block digest", editManifest(t, func(m map[string]any) {
			f := m["files"].([]any)[0].(map[string]any)
			delete(f, "sha256")
			f["size"], f["blocks"] = BlockSize+1, []string{strings.Repeat("a", 64), "B"}
		}), `block 1: invalid sha256 "B"`},
		{"bad key", editManifest(t, func(m map[string]any) { m["key"] = "../x" }), "is not a lowercase hex sha256"},
		{"unknown encryption", editManifest(t, func(m map[string]any) {
			m["encryption"] = map[string]any{"algorithm": "aes-128-ctr", "key_id": "0011223344556677"}
		}), `this build reads "aes-256-gcm-chunked"`},
		{"bad key id", editManifest(t, func(m map[string]any) {
			m["encryption"] = map[string]any{"algorithm": "aes-256-gcm-chunked", "key_id": "../x"}
		}), `key id "../x"`},
		{"other name", editManifest(t, func(m map[string]any) { m["name"] = testKey("m")[:16] + "-g000009" }), "but the directory is"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			c := publish(t, s, &Manifest{Key: testKey("m")}, map[string]string{"checkpoint/a.img": ""})
			file := filepath.Join(c.Dir, manifestName)
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, tt.edit(data), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = s.Get(c.Name)
			if err == nil || !errors.Is(err, ErrManifest) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), file) {
				t.Errorf("Get error = %v, want ErrManifest naming %s and containing %q", err, file, tt.want)
			}
		})
	}
}

func TestManifestRoundTrip(t *testing.T) {
	s := openStore(t)
	in := &Manifest{
		Key:           testKey("rt"),
		Identity:      map[string]string{"image": "docker.io/x:1", "args": `["serve"]`},
		Node:          Fingerprint{Arch: "amd64", Kernel: "6.8.0-45-generic", CRIUVersion: "4.1.1", CgroupVersion: 2},
		Source:        Source{ContainerID: "abc", Namespace: "k8s.io", Hostname: "pod-1"},
		Phases:        map[string]float64{"cuda_checkpoint": 1.5, "criu_dump": 12.25},
		GPUs:          []GPU{{UUID: cudackpt.UUID{1}, Product: "NVIDIA H100 80GB HBM3", MemoryBytes: 85 << 30}},
		DriverVersion: "570.86.15",
		Encryption:    &Encryption{Algorithm: "aes-256-gcm-chunked", KeyID: "0011223344556677"},
	}
	c := publish(t, s, in, map[string]string{"spec.dump": "{}"})
	got, err := s.Get(c.Name)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(in)
	b, _ := json.Marshal(got.Manifest)
	if !bytes.Equal(a, b) {
		t.Errorf("read back\n%s\nwant\n%s", b, a)
	}
}

// TestGPUJSON: a GPU's UUID is written as NVML prints it, as when manifests
// held it as a string, and reads back to the same bytes.
func TestGPUJSON(t *testing.T) {
	const in = `{"uuid":"GPU-6d2f3c1a-0b4e-4f59-9a7c-2e8d1f0a3b5c","product":"NVIDIA H100 80GB HBM3","memory_bytes":85520809984}`
	var g GPU
	if err := json.Unmarshal([]byte(in), &g); err != nil {
		t.Fatal(err)
	}
	if want := (cudackpt.UUID{0x6d, 0x2f, 0x3c, 0x1a, 0x0b, 0x4e, 0x4f, 0x59, 0x9a, 0x7c, 0x2e, 0x8d, 0x1f, 0x0a, 0x3b, 0x5c}); g.UUID != want {
		t.Errorf("uuid = %v, want %v", g.UUID, want)
	}
	out, err := json.Marshal(g)
	if err != nil || string(out) != in {
		t.Errorf("marshal = %s, %v; want %s", out, err, in)
	}
	if err := json.Unmarshal([]byte(`{"uuid":"GPU-1"}`), &g); err == nil {
		t.Error("a malformed uuid decoded")
	}
}
