package install

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
)

// optionsPath is where a handler's options file lives on the node.
func (c Config) optionsPath(name string) string {
	return filepath.Join(c.OptionsDir, name+".toml")
}

// registryCredentialsPath is where the registry credentials live on the node.
func (c Config) registryCredentialsPath() string {
	return filepath.Join(c.OptionsDir, RegistryCredentialsName)
}

// renderOptions writes a handler's options TOML and checks it with the
// shim's own parser, so that the node never gets a file the shim would
// refuse at container start; the parser's error names the key.
func (c Config) renderOptions(h Handler) ([]byte, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "# Options of runtime handler %q of %s.\n", h.Name, ShimBinary)
	b.WriteString("# Written by gpusnap-install: rerunning it rewrites this file.\n")
	set := map[string]bool{}
	for _, o := range h.Options {
		fmt.Fprintf(&b, "%s = %s\n", o.Key, tomlValue(o))
		set[o.Key] = true
	}
	// The credentials we install serve every handler with a registry.
	if c.RegistryCredentials != "" && set["registry"] && !set["registry_credentials"] {
		fmt.Fprintf(&b, "registry_credentials = %s\n", tomlString(c.registryCredentialsPath()))
	}
	// The CRIU we install is the one the shim should use, even when
	// containerd's PATH (which shims inherit) does not include BinDir.
	if c.CRIU != "" && !set["criu_path"] {
		fmt.Fprintf(&b, "criu_path = %s\n", tomlString(filepath.Join(c.BinDir, CRIUBinary)))
	}
	data := []byte(b.String())
	if _, err := options.Parse(data, c.optionsPath(h.Name)); err != nil {
		return nil, fmt.Errorf("handler %q: %w", h.Name, err)
	}
	return data, nil
}

// tomlValue renders an option value as the shim's options type it
// (options.ValueKind): booleans and integers bare, lists as arrays of
// strings split at ':'. Keys the shim does not know, and values that are
// not of their key's kind, are rendered as strings and then refused by
// options.Parse by name.
func tomlValue(o Option) string {
	switch options.ValueKind(o.Key) {
	case options.KindBool:
		if o.Value == "true" || o.Value == "false" {
			return o.Value
		}
	case options.KindInt:
		if _, err := strconv.Atoi(o.Value); err == nil {
			return o.Value
		}
	case options.KindList:
		return tomlList(o.Value)
	}
	return tomlString(o.Value)
}

// tomlList renders a ':'-separated value as a TOML array of strings.
func tomlList(value string) string {
	var items []string
	for _, v := range strings.Split(value, ":") {
		if v != "" {
			items = append(items, tomlString(v))
		}
	}
	return "[" + strings.Join(items, ", ") + "]"
}

// tomlString quotes s as a TOML basic string. strconv.Quote is not used:
// its \x escapes are not TOML.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// runtimeTable is the CRI runtime table of a handler in config version 3.
func runtimeTable(name string) string {
	return "plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes." + name
}

// renderDropin declares every handler for containerd. It says version = 3
// because containerd treats an unversioned drop-in as version 1 and
// migrates (renames) its plugin tables. runtime_path is set when this run
// installs the shim, so containerd finds it even if BinDir is not on its
// PATH.
func (c Config) renderDropin() []byte {
	var b strings.Builder
	b.WriteString("# Runtime handlers of " + ShimBinary + ", written by gpusnap-install.\n")
	b.WriteString("# Rerunning the installer rewrites this file; --uninstall removes it.\n")
	b.WriteString("version = 3\n")
	for _, h := range c.Handlers {
		t := runtimeTable(h.Name)
		fmt.Fprintf(&b, "\n[%s]\n  runtime_type = %s\n", t, tomlString(containerdconfig.RuntimeType))
		// The pod's only say: opting out of restore (shim.OptOutAnnotation).
		b.WriteString("  pod_annotations = [\"gpusnap.io/*\"]\n")
		if c.Shim != "" {
			fmt.Fprintf(&b, "  runtime_path = %s\n", tomlString(filepath.Join(c.BinDir, ShimBinary)))
		}
		fmt.Fprintf(&b, "\n[%s.options]\n  ConfigPath = %s\n", t, tomlString(c.optionsPath(h.Name)))
	}
	return []byte(b.String())
}
