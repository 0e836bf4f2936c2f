package storage

import (
	"encoding/json"
	"path"
	"strings"
	"testing"
)

// FuzzDecodeManifest: any bytes either fail to decode or give a manifest
// whose file paths are safe to join under a checkpoint directory.
func FuzzDecodeManifest(f *testing.F) {
	good, _ := json.Marshal(&Manifest{Schema: SchemaVersion, Name: "abc-g000001", Key: strings.Repeat("a", 64),
		Files: []File{{Path: "checkpoint/pages-1.img", Size: 4096, SHA256: strings.Repeat("0", 64)}}})
	f.Add(good)
	f.Add([]byte(`{"schema":1,"files":[{"path":"../etc/passwd","size":1,"sha256":"x"}]}`))
	f.Add([]byte(`{"schema":2}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeManifest(data)
		if err != nil {
			return
		}
		for _, file := range m.Files {
			p := file.Path
			if p == "" || path.IsAbs(p) || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") {
				t.Fatalf("accepted unsafe path %q", p)
			}
			if file.Size < 0 {
				t.Fatalf("accepted negative size %d", file.Size)
			}
		}
	})
}
