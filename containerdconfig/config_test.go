package containerdconfig

import (
	"maps"
	"reflect"
	"slices"
	"testing"
)

func TestHandlers(t *testing.T) {
	tests := []struct {
		name, config string
		want         []Handler
	}{
		{"containerd 2.x (config version 3)", `
version = 3
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.snapshot] # the shim
  runtime_type = "io.containerd.snapshot.v2"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.snapshot.options]
    ConfigPath = "/etc/snapshot.toml"
`, []Handler{{Name: "snapshot", ConfigPath: "/etc/snapshot.toml"}}},
		{"config version 2, dotted and inline keys", `
version = 2
[plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.gpu-a]
runtime_type = 'io.containerd.snapshot.v2'
options.ConfigPath = '/etc/a.toml'
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes."gpu.b"]
runtime_type = "io.containerd.snapshot.v2"
options = { ConfigPath = "/etc/b.toml", SystemdCgroup = true }
`, []Handler{{Name: "gpu-a", ConfigPath: "/etc/a.toml"}, {Name: "gpu.b", ConfigPath: "/etc/b.toml"}}},
		{"inline ConfigBody", `
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.snap]
runtime_type = "io.containerd.snapshot.v2"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.snap.options]
ConfigBody = """
store = "/s"
"""
`, []Handler{{Name: "snap", ConfigBody: "store = \"/s\"\n"}}},
		{"commented out", `
# runtime_type = "io.containerd.snapshot.v2"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
runtime_type = "io.containerd.runc.v2" # not "io.containerd.snapshot.v2"
`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse([]byte(tt.config))
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Handlers(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("handlers = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestVersionImportsRuntimes(t *testing.T) {
	tests := []struct {
		config     string
		version    int64
		versionErr bool
		imports    []string
		importsErr bool
		runtimes   []string
	}{
		{config: "", version: 1},
		{config: "version = 3\nimports = [\n  \"conf.d/*.toml\",  # drop-ins\n  '/etc/x.toml',\n]\n", version: 3, imports: []string{"conf.d/*.toml", "/etc/x.toml"}},
		{config: "version = \"3\"\nimports = \"a.toml\"\n", versionErr: true, importsErr: true},
		{config: "version = 2\nimports = [\"a.toml\", 3]\n", version: 2, imports: []string{"a.toml"}, importsErr: true},
		{config: `version = 3
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.gpu]
  runtime_type = "io.containerd.snapshot.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.old]
  runtime_type = "io.containerd.runc.v2"
`, version: 3, runtimes: []string{"gpu", "runc"}},
	}
	for _, tt := range tests {
		f, err := Parse([]byte(tt.config))
		if err != nil {
			t.Fatalf("%q: %v", tt.config, err)
		}
		if v, err := f.Version(); (err != nil) != tt.versionErr || (err == nil && v != tt.version) {
			t.Errorf("%q: version %d, %v; want %d, error %v", tt.config, v, err, tt.version, tt.versionErr)
		}
		if l, err := f.Imports(); (err != nil) != tt.importsErr || !reflect.DeepEqual(l, tt.imports) {
			t.Errorf("%q: imports %q, %v; want %q, error %v", tt.config, l, err, tt.imports, tt.importsErr)
		}
		if names := slices.Sorted(maps.Keys(f.CRIRuntimes())); !slices.Equal(names, tt.runtimes) {
			t.Errorf("%q: runtimes %q, want %q", tt.config, names, tt.runtimes)
		}
	}
}

func TestParseRefusesBrokenTOML(t *testing.T) {
	if _, err := Parse([]byte("[plugins\nversion = 3\n")); err == nil {
		t.Error("broken TOML parsed")
	}
}
