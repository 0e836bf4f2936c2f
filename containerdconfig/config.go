// Package containerdconfig reads containerd's config files (the main
// config and the files it imports) for the parts this project cares about:
// the version, the imports and the runtime handlers. The installer edits
// them and gpusnap doctor checks them; both read them through this one
// package, with the TOML decoder containerd itself uses.
package containerdconfig

import (
	"errors"
	"maps"
	"os"
	"slices"

	"github.com/BurntSushi/toml"
)

// RuntimeType is the runtime type under which containerd knows the snapshot
// shim: the runtime_type of a handler in containerd's config, the --runtime
// of ctr, and the name the shim registers itself with.
const RuntimeType = "io.containerd.snapshot.v2"

// ShimBinary is the binary containerd runs for RuntimeType, by its naming
// rule (io.containerd.NAME.vN: containerd-shim-NAME-vN on its PATH).
const ShimBinary = "containerd-shim-snapshot-v2"

// criRuntimes is the table under which containerd 2.x (config version 3)
// declares CRI runtime handlers, one sub-table each.
var criRuntimes = []string{"plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes"}

// File is one containerd config file, decoded: table and key names to
// values, as BurntSushi/toml decodes into a map (integers are int64, arrays
// []any, tables map[string]any).
type File map[string]any

// Parse decodes a config file's content.
func Parse(data []byte) (File, error) {
	var f File
	if _, err := toml.Decode(string(data), &f); err != nil {
		return nil, err
	}
	return f, nil
}

// ReadFile reads and decodes a config file.
func ReadFile(path string) (File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data)
}

// Version is the file's config version; containerd reads a file without
// one as version 1.
func (f File) Version() (int64, error) {
	raw, present := f["version"]
	if !present {
		return 1, nil
	}
	v, ok := raw.(int64)
	if !ok {
		return 0, errors.New("version is not an integer")
	}
	return v, nil
}

// Imports are the file's top-level import patterns, as written (relative
// ones are relative to the file's directory, globs allowed). When imports
// is not a list of strings it returns the strings it holds and an error.
func (f File) Imports() ([]string, error) {
	raw, present := f["imports"]
	if !present {
		return nil, nil
	}
	list, ok := raw.([]any)
	var out []string
	for _, v := range list {
		s, isString := v.(string)
		if !isString {
			ok = false
			continue
		}
		out = append(out, s)
	}
	if !ok {
		return out, errors.New("imports is not a list of strings")
	}
	return out, nil
}

// CRIRuntimes are the names of the CRI runtime handlers the file declares
// (under config version 3's table), whatever their runtime type.
func (f File) CRIRuntimes() map[string]bool {
	names := map[string]bool{}
	node := any(map[string]any(f))
	for _, key := range criRuntimes {
		m, ok := node.(map[string]any)
		if !ok {
			return names
		}
		node = m[key]
	}
	if m, ok := node.(map[string]any); ok {
		for name := range m {
			names[name] = true
		}
	}
	return names
}

// Handler is a runtime handler of the snapshot shim: a table whose
// runtime_type is RuntimeType, with the options containerd passes to the
// shim.
type Handler struct {
	// Name is the handler's name, the last part of its table's name (the
	// RuntimeClass handler in Kubernetes).
	Name string
	// ConfigPath and ConfigBody are options.ConfigPath and
	// options.ConfigBody: the shim's options file, or its content inline.
	ConfigPath, ConfigBody string
}

// Handlers are the file's tables, at any depth and under any config
// version's plugin names, whose runtime_type is RuntimeType, in the order of
// their table names.
func (f File) Handlers() []Handler {
	var out []Handler
	var walk func(path []string, table map[string]any)
	walk = func(path []string, table map[string]any) {
		if len(path) > 0 && table["runtime_type"] == RuntimeType {
			opts, _ := table["options"].(map[string]any)
			configPath, _ := opts["ConfigPath"].(string)
			configBody, _ := opts["ConfigBody"].(string)
			out = append(out, Handler{Name: path[len(path)-1], ConfigPath: configPath, ConfigBody: configBody})
		}
		for _, k := range slices.Sorted(maps.Keys(table)) {
			if sub, ok := table[k].(map[string]any); ok {
				walk(append(slices.Clip(path), k), sub)
			}
		}
	}
	walk(nil, f)
	return out
}
