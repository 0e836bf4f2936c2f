// Package install puts the snapshot shim on a node and wires it into
// containerd: binaries, one options TOML per runtime handler, a containerd
// drop-in declaring the handlers, and an import of the drop-in directory in
// containerd's main config. It records what it changed in a state file so
// that a rerun with the same inputs changes nothing (and does not restart
// containerd) and an uninstall takes back exactly what it added.
//
// Every path in Config except the binary sources is a path on the node as
// containerd sees it. The installer reaches them under HostRoot, so a
// Kubernetes DaemonSet can mount the host at /host and pass HostRoot "/host"
// while the files it writes (ConfigPath, imports, runtime_path) still name
// the host's own paths.
package install

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
)

// Defaults of Config, also the command's flag defaults.
const (
	DefaultHostRoot         = "/"
	DefaultBinDir           = "/usr/local/bin"
	DefaultContainerdConfig = "/etc/containerd/config.toml"
	DefaultDropinDir        = "/etc/containerd/conf.d"
	DefaultOptionsDir       = "/etc/containerd-shim-snapshot"
	DefaultRestartCmd       = "systemctl restart containerd"
)

// Names of what the installer writes.
const (
	ShimBinary = containerdconfig.ShimBinary
	CLIBinary  = "gpusnap"
	CRIUBinary = "criu"
	DropinName = "containerd-shim-snapshot.toml"
	StateName  = "installed.json"
	// RegistryCredentialsName is the registry credentials file, in the
	// options directory (mode 0600).
	RegistryCredentialsName = "registry-credentials.json"
)

// Config is one run of the installer.
type Config struct {
	// HostRoot is where the node's root file system is reachable.
	HostRoot string
	// BinDir receives the binaries (node path).
	BinDir string
	// Shim, CLI and CRIU are binaries to install, as paths in the
	// installer's own file system (not under HostRoot); empty skips one.
	Shim, CLI, CRIU string
	// Handlers are the runtime handlers to declare; at least one on install.
	Handlers []Handler
	// RegistryCredentials is a docker-style config.json (a Kubernetes
	// dockerconfigjson Secret's file) to install as the registry
	// credentials of every handler with a registry and no
	// registry_credentials of its own; empty installs none.
	RegistryCredentials string
	// ContainerdConfig is containerd's main config file (node path).
	ContainerdConfig string
	// DropinDir holds the drop-in; the main config must import *.toml from it.
	DropinDir string
	// OptionsDir holds the handlers' options files and the state file.
	OptionsDir string
	// RestartCmd is run with "sh -c" when containerd's config changed;
	// empty never restarts. It runs in the installer's own namespaces.
	RestartCmd string
	// DryRun reports what would change and changes nothing.
	DryRun bool
	// Out receives one line per change; nil discards them.
	Out io.Writer
}

// Handler is one containerd runtime handler (a RuntimeClass handler name)
// served by the shim, with its options in the order given.
type Handler struct {
	Name    string
	Options []Option
}

// Option is one key of the shim's handler options TOML (shim/options).
type Option struct{ Key, Value string }

// withDefaults fills unset fields, so that a zero Config installs to the
// standard places.
func (c Config) withDefaults() Config {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.HostRoot, DefaultHostRoot)
	def(&c.BinDir, DefaultBinDir)
	def(&c.ContainerdConfig, DefaultContainerdConfig)
	def(&c.DropinDir, DefaultDropinDir)
	def(&c.OptionsDir, DefaultOptionsDir)
	if c.Out == nil {
		c.Out = io.Discard
	}
	return c
}

// validatePaths refuses relative node paths (they would silently depend on
// the installer's working directory) and an options dir that is also the
// drop-in dir, where containerd would import options files as its config.
func (c Config) validatePaths() error {
	for flag, p := range map[string]string{"host-root": c.HostRoot, "bin-dir": c.BinDir,
		"containerd-config": c.ContainerdConfig, "dropin-dir": c.DropinDir, "options-dir": c.OptionsDir} {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("--%s %q: must be an absolute path", flag, p)
		}
	}
	if filepath.Clean(c.DropinDir) == filepath.Clean(c.OptionsDir) {
		return errors.New("--dropin-dir and --options-dir must differ: containerd would load the options files as config")
	}
	return nil
}

// validateHandlers checks names; options are checked when rendered.
func (c Config) validateHandlers() error {
	if len(c.Handlers) == 0 {
		return errors.New("no handler given (--handler name=NAME,...)")
	}
	seen := map[string]bool{}
	for _, h := range c.Handlers {
		if err := checkHandlerName(h.Name); err != nil {
			return err
		}
		if seen[h.Name] {
			return fmt.Errorf("handler %q given twice", h.Name)
		}
		seen[h.Name] = true
	}
	return nil
}

// dnsLabel is what Kubernetes accepts as a RuntimeClass handler; it is also
// a bare TOML key and a safe file name.
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func checkHandlerName(name string) error {
	if !dnsLabel.MatchString(name) {
		return fmt.Errorf("handler name %q: must be a DNS label (lowercase letters, digits and '-', at most 63), as a RuntimeClass handler is", name)
	}
	return nil
}

// ParseHandler reads the command line form of a handler:
// "name=snapshot,store=/var/lib/gpusnap/store,restore=auto". Keys other
// than name are shim options keys; ignore_env takes a ':'-separated list.
// Values cannot contain ','.
func ParseHandler(spec string) (Handler, error) {
	var h Handler
	seen := map[string]bool{}
	for _, part := range strings.Split(spec, ",") {
		key, value, ok := strings.Cut(part, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			return Handler{}, fmt.Errorf("handler %q: %q is not key=value", spec, part)
		}
		if seen[key] {
			return Handler{}, fmt.Errorf("handler %q: key %q given twice", spec, key)
		}
		seen[key] = true
		if key == "name" {
			h.Name = value
			continue
		}
		h.Options = append(h.Options, Option{Key: key, Value: value})
	}
	if h.Name == "" {
		return Handler{}, fmt.Errorf("handler %q: name=NAME is required", spec)
	}
	return h, checkHandlerName(h.Name)
}
