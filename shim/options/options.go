// Package options reads the per-handler runtime options of the snapshot shim.
//
// A RuntimeClass handler in containerd's config names this shim as its
// runtime_type and points options.ConfigPath at a TOML file owned by the node
// admin (or inlines it as options.ConfigBody). Only this file decides where
// checkpoints come from: a pod can never name a store or a path itself.
package options

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Restore policies.
const (
	RestoreAuto     = "auto"     // restore on a match, cold-start otherwise
	RestoreRequired = "required" // restore or fail the container
	RestoreNever    = "never"    // always cold-start (still checkpointable)
)

// Auto-checkpoint policies.
const (
	AutoCheckpointOff     = "off"
	AutoCheckpointOnReady = "on-ready" // checkpoint when the workload writes ready-for-checkpoint
)

// CheckpointAuto selects the newest checkpoint whose identity key matches.
const CheckpointAuto = "auto"

// Registry policies (with registry set).
const (
	PushOff          = "off"
	PushOnCheckpoint = "on-checkpoint" // push each published checkpoint, in the background

	PullOnDemand   = "on-demand"  // no match in the store: pull within restore_timeout, then restore
	PullBackground = "background" // no match in the store: cold-start now, pull for the next container
	PullOff        = "off"
)

// Options are one handler's settings. Field tags are the TOML keys.
type Options struct {
	// Store is the checkpoint store directory; empty disables restore.
	Store string `toml:"store"`
	// Checkpoint is "auto" (look up by identity key) or a checkpoint name.
	Checkpoint string `toml:"checkpoint"`
	// Restore is the restore policy: auto, required or never.
	Restore string `toml:"restore"`
	// AutoCheckpoint is off or on-ready.
	AutoCheckpoint string `toml:"auto_checkpoint"`
	// ControlDir is where the per-container control directory is mounted
	// inside the container; empty mounts none.
	ControlDir string `toml:"control_dir"`
	// CRIUPath is the CRIU binary; empty means "criu" from PATH. runc runs
	// `criu` from its PATH, so the shim puts this file's directory first
	// in it: the base name must be criu.
	CRIUPath string `toml:"criu_path"`
	// IgnoreEnv lists environment variables left out of the identity key
	// (per-pod values such as HOSTNAME).
	IgnoreEnv []string `toml:"ignore_env"`
	// LockTimeout bounds the CUDA lock of each process at checkpoint.
	LockTimeout Duration `toml:"lock_timeout"`
	// CheckpointTimeout bounds a whole checkpoint.
	CheckpointTimeout Duration `toml:"checkpoint_timeout"`
	// PrepareTimeout bounds the wait for a workload that asked to prepare
	// before each checkpoint (prepare-on-checkpoint in its control
	// directory) to answer; one that does not is checkpointed as it is.
	PrepareTimeout Duration `toml:"prepare_timeout"`
	// RestoreTimeout bounds a whole restore attempt: verification at Create
	// plus the rootfs diff, CRIU and CUDA restore at Start (the wait between
	// Create and Start does not count). When it runs out, runc and CRIU are
	// killed, the half-restored container is removed and the fallback of
	// `restore` applies.
	RestoreTimeout Duration `toml:"restore_timeout"`
	// RestoreHugePages asks CRIU to fill the restored process's large
	// anonymous areas with transparent huge pages (the project's CRIU patch,
	// contrib/criu): page faults bound the restore once the image is in
	// memory. Unset, it is on for checkpoints of containers given GPUs and
	// off for the others (CRIURestoreHugePages): every H100 run measured
	// it faster (1.2-1.5x, 8 to 40 GiB), while on the 2-core dev VM, where
	// the CPU-only workloads were measured, it was 4x slower in November
	// and within 15% either way since (see docs/performance.md). The areas
	// keep the MADV_HUGEPAGE mark afterwards. A CRIU without the patch
	// ignores it.
	RestoreHugePages *bool `toml:"restore_huge_pages"`
	// RestoreThreads is how many threads CRIU reads a restored process's
	// pages back with (the project's CRIU patch, contrib/criu): once the
	// image is in memory, CRIU's single reader bounds the restore. 0, the
	// default, means one per CPU the shim may run on, at most
	// DefaultRestoreThreadsMax; 1 is CRIU's own single reader. A CRIU
	// without the patch ignores it.
	RestoreThreads int `toml:"restore_threads"`
	// RestorePopulate has CRIU's page readers (restore_threads > 1)
	// populate each run of pages with MADV_POPULATE_WRITE before reading
	// into it (the project's CRIU patch, contrib/criu/0004), instead of
	// faulting the restored memory in as they copy. Unset, it is on with
	// 4 KiB pages and off with huge pages (CRIURestorePopulate):
	// it made the dev VM's 4 KiB restore from memory 1.4x faster, gained
	// nothing there with huge pages, and on the H100 made the CRIU phase
	// with huge pages 16-20% slower (docs/performance.md). It cannot add
	// memory (only the image's pages are populated). A CRIU without the
	// patch, or a kernel before 5.14, ignores it.
	RestorePopulate *bool `toml:"restore_populate"`
	// CacheDir is a node-local store (local disk or tmpfs, root's, 0700)
	// holding copies of the store's checkpoints, filled by `gpusnap
	// prefetch`. A restore reads the copy there when it has the same
	// manifest as the store's checkpoint, which stays the one that decides
	// what is restored. With a registry, pulls land here, and a checkpoint
	// the store lacks is restored from here.
	CacheDir string `toml:"cache_dir"`
	// PrefetchReaders is how many readers bring the chosen checkpoint's
	// files into the page cache from Create on, ahead of CRIU's single
	// reader (package prefetch); 0, the default, turns prefetching off:
	// on the 2-core dev VM it made restores from a cold page cache slower
	// (docs/performance.md). Turn it on where `make bench` shows a gain.
	PrefetchReaders int `toml:"prefetch_readers"`
	// SigningKey is the ed25519 private key (PKCS#8 PEM, mode 0600, root's)
	// every checkpoint this handler publishes is signed with. Set it only
	// where checkpoints are made; a key that can't be loaded fails the
	// checkpoint rather than publish it unsigned.
	SigningKey string `toml:"signing_key"`
	// TrustedKeys are ed25519 public keys (PKIX PEM). When set, a signed
	// checkpoint is restored only if its signature verifies with one of
	// them; a bad signature is refused even without RequireSignature.
	TrustedKeys []string `toml:"trusted_keys"`
	// RequireSignature also refuses unsigned checkpoints. It needs
	// TrustedKeys: a signature nobody can check proves nothing.
	RequireSignature bool `toml:"require_signature"`
	// EncryptionKey is an AES-256 key file (32 raw bytes or 64 hex digits,
	// mode 0600, root's). When set, every checkpoint this handler publishes
	// is encrypted with it, and its encrypted checkpoints can be restored.
	// A checkpoint encrypted with another key is refused by key id before
	// anything is decrypted; unencrypted checkpoints still restore.
	EncryptionKey string `toml:"encryption_key"`
	// DecryptDir is the node-local, root-only directory an encrypted
	// checkpoint is decrypted into for the length of its restore (one
	// subdirectory per container, removed when the restore ends). The
	// plaintext is as large as the checkpoint: under /run, a tmpfs on most
	// nodes, it takes that much memory on top of the restored process for a
	// moment; on a local disk it costs writes instead. Never inside the
	// store.
	DecryptDir string `toml:"decrypt_dir"`

	// Registry is an OCI repository ("host[:port]/path", no tag) that
	// checkpoints travel through (docs/registry.md): Push puts the
	// handler's checkpoints there, Pull brings one into the store when the
	// store has no match.
	Registry string `toml:"registry"`
	// RegistryHostsDir holds containerd's hosts.toml files (mirrors, CAs,
	// plain HTTP), read as containerd reads them for images.
	RegistryHostsDir string `toml:"registry_hosts_dir"`
	// RegistryCredentials is a docker-style config.json (mode 0600,
	// root's) with the registry's credentials; empty means anonymous.
	RegistryCredentials string `toml:"registry_credentials"`
	// Push is off or on-checkpoint.
	Push string `toml:"push"`
	// Pull is on-demand, background or off.
	Pull string `toml:"pull"`

	// Source names where these options came from, for error messages.
	Source string `toml:"-"`
}

// Duration is a time.Duration written as a Go duration string ("30s").
type Duration struct{ time.Duration }

// UnmarshalText parses "30s", "5m", ...
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("not a duration (want e.g. \"30s\"): %q", b)
	}
	if v <= 0 {
		return fmt.Errorf("must be positive: %q", b)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration back as text.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Default returns the options a handler gets for keys it does not set.
func Default() Options {
	return Options{
		Checkpoint:        CheckpointAuto,
		Restore:           RestoreAuto,
		AutoCheckpoint:    AutoCheckpointOff,
		IgnoreEnv:         []string{"HOSTNAME"},
		LockTimeout:       Duration{30 * time.Second},
		CheckpointTimeout: Duration{10 * time.Minute},
		PrepareTimeout:    Duration{30 * time.Second},
		RestoreTimeout:    Duration{5 * time.Minute},
		DecryptDir:        DefaultDecryptDir,
		RegistryHostsDir:  DefaultRegistryHostsDir,
		Push:              PushOff,
		Pull:              PullOnDemand,
		Source:            "defaults",
	}
}

// DefaultRegistryHostsDir is containerd's usual hosts directory
// (config_path of its CRI registry settings).
const DefaultRegistryHostsDir = "/etc/containerd/certs.d"

// DefaultRestoreThreadsMax caps restore_threads = 0 (one per CPU).
const DefaultRestoreThreadsMax = 16

// CRIURestoreThreads is the number of threads restore_threads asks for,
// given the CPUs the shim may run on.
func (o Options) CRIURestoreThreads(cpus int) int {
	if o.RestoreThreads > 0 {
		return o.RestoreThreads
	}
	return max(1, min(cpus, DefaultRestoreThreadsMax))
}

// CRIURestoreHugePages says whether CRIU restores into huge pages:
// restore_huge_pages as set, else for a checkpoint of a container given
// GPUs (gpu) only.
func (o Options) CRIURestoreHugePages(gpu bool) bool {
	if o.RestoreHugePages != nil {
		return *o.RestoreHugePages
	}
	return gpu
}

// CRIURestorePopulate says whether CRIU's readers populate pages before
// reading into them: restore_populate as set, else only without huge
// pages (hugePages, from CRIURestoreHugePages).
func (o Options) CRIURestorePopulate(hugePages bool) bool {
	if o.RestorePopulate != nil {
		return *o.RestorePopulate
	}
	return !hugePages
}

// DefaultDecryptDir is decrypt_dir's default: beside the control
// directories under /run, so a reboot clears whatever a killed shim left.
const DefaultDecryptDir = "/run/containerd-shim-snapshot-decrypted"

// ErrInvalid marks options that were read but are not acceptable.
var ErrInvalid = errors.New("invalid snapshot shim options")

// Load reads options from the file at path.
func Load(path string) (Options, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Options{}, fmt.Errorf("snapshot shim options %s: %w", path, err)
	}
	return Parse(data, path)
}

// Parse decodes TOML options; source names the file (or "inline ConfigBody")
// in every error. Unknown keys and bad values are errors, never ignored.
func Parse(data []byte, source string) (Options, error) {
	o := Default()
	o.Source = source
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&o)
	if err != nil {
		return Options{}, fmt.Errorf("%w: %s: %v", ErrInvalid, source, err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return Options{}, fmt.Errorf("%w: %s: unknown key %q (known keys: %s)",
			ErrInvalid, source, keys[0], strings.Join(knownKeys(), ", "))
	}
	if err := o.validate(); err != nil {
		return Options{}, fmt.Errorf("%w: %s: %v", ErrInvalid, source, err)
	}
	return o, nil
}

func (o Options) validate() error {
	if err := oneOf("restore", o.Restore, RestoreAuto, RestoreRequired, RestoreNever); err != nil {
		return err
	}
	if err := oneOf("auto_checkpoint", o.AutoCheckpoint, AutoCheckpointOff, AutoCheckpointOnReady); err != nil {
		return err
	}
	for key, p := range map[string]string{"store": o.Store, "control_dir": o.ControlDir, "criu_path": o.CRIUPath, "cache_dir": o.CacheDir, "signing_key": o.SigningKey,
		"encryption_key": o.EncryptionKey, "decrypt_dir": o.DecryptDir, "registry_hosts_dir": o.RegistryHostsDir, "registry_credentials": o.RegistryCredentials} {
		if p != "" && !filepath.IsAbs(p) {
			return fmt.Errorf("%s = %q: must be an absolute path", key, p)
		}
	}
	if o.CRIUPath != "" && filepath.Base(o.CRIUPath) != "criu" {
		return fmt.Errorf("criu_path = %q: must name a file called criu (runc runs `criu` from PATH; the shim puts this directory first)", o.CRIUPath)
	}
	for _, p := range o.TrustedKeys {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("trusted_keys: %q: must be an absolute path", p)
		}
	}
	if o.DecryptDir == "" {
		return errors.New(`decrypt_dir = "": must be an absolute path`)
	}
	if o.Store != "" && within(o.DecryptDir, o.Store) {
		return fmt.Errorf("decrypt_dir = %q is inside the store %q: the plaintext of encrypted checkpoints must stay off the store", o.DecryptDir, o.Store)
	}
	if o.CacheDir != "" && within(o.DecryptDir, o.CacheDir) {
		return fmt.Errorf("decrypt_dir = %q is inside cache_dir %q: the cache holds checkpoints as stored, the plaintext goes elsewhere", o.DecryptDir, o.CacheDir)
	}
	if o.CacheDir != "" && o.Store != "" && (within(o.CacheDir, o.Store) || within(o.Store, o.CacheDir)) {
		return fmt.Errorf("cache_dir = %q and store = %q overlap: the cache is a separate, node-local store", o.CacheDir, o.Store)
	}
	if o.RequireSignature && len(o.TrustedKeys) == 0 {
		return errors.New("require_signature = true needs trusted_keys (the public keys a signature may verify with)")
	}
	if o.Checkpoint == "" || strings.ContainsAny(o.Checkpoint, "/\\") || strings.HasPrefix(o.Checkpoint, ".") {
		return fmt.Errorf("checkpoint = %q: must be \"auto\" or a checkpoint name (no '/', not hidden)", o.Checkpoint)
	}
	if o.Restore == RestoreRequired && o.Store == "" {
		return fmt.Errorf("restore = %q needs a store", o.Restore)
	}
	if o.AutoCheckpoint == AutoCheckpointOnReady && (o.Store == "" || o.ControlDir == "") {
		return fmt.Errorf("auto_checkpoint = %q needs store and control_dir", o.AutoCheckpoint)
	}
	if o.RestoreThreads < 0 || o.RestoreThreads > 64 {
		return fmt.Errorf("restore_threads = %d: must be 0 (one per CPU, at most %d) to 64", o.RestoreThreads, DefaultRestoreThreadsMax)
	}
	if o.PrefetchReaders < 0 || o.PrefetchReaders > 64 {
		return fmt.Errorf("prefetch_readers = %d: must be 0 (off) to 64", o.PrefetchReaders)
	}
	return o.validateRegistry()
}

// validateRegistry checks the registry options: the repository is named
// without a tag or digest (checkpoint names are the tags), and push and pull
// need it and a store.
func (o Options) validateRegistry() error {
	if err := oneOf("push", o.Push, PushOff, PushOnCheckpoint); err != nil {
		return err
	}
	if err := oneOf("pull", o.Pull, PullOnDemand, PullBackground, PullOff); err != nil {
		return err
	}
	if o.Registry == "" {
		if o.Push != PushOff {
			return fmt.Errorf("push = %q needs registry", o.Push)
		}
		return nil
	}
	if o.Store == "" {
		return fmt.Errorf("registry = %q needs a store (pulled checkpoints land there; pushed ones come from there)", o.Registry)
	}
	host, path, ok := strings.Cut(o.Registry, "/")
	if !ok || host == "" || path == "" || strings.ContainsAny(o.Registry, "@ ") || strings.Contains(path, ":") || strings.Contains(o.Registry, "://") {
		return fmt.Errorf("registry = %q: must be host[:port]/repository, without a scheme, tag or digest", o.Registry)
	}
	if o.RegistryHostsDir == "" {
		return errors.New(`registry_hosts_dir = "": must be an absolute path`)
	}
	return nil
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(p))
	return err == nil && filepath.IsLocal(rel) // "." is local too
}

func oneOf(key, value string, allowed ...string) error {
	for _, a := range allowed {
		if value == a {
			return nil
		}
	}
	return fmt.Errorf("%s = %q: must be one of %s", key, value, strings.Join(allowed, ", "))
}

func knownKeys() []string {
	var keys []string
	t := reflect.TypeFor[Options]()
	for i := range t.NumField() {
		if key := t.Field(i).Tag.Get("toml"); key != "" && key != "-" {
			keys = append(keys, key)
		}
	}
	return keys
}

// How a key's value is written in TOML (ValueKind).
const (
	KindString = "string" // also durations ("30s")
	KindBool   = "bool"
	KindInt    = "int"
	KindList   = "list" // of strings
)

// ValueKind says how key's value is written in TOML, from the Options
// field that holds it; "" for a key the shim does not know. Tools that
// write options files (the installer) use it so a new option needs no
// second list of types.
func ValueKind(key string) string {
	t := reflect.TypeFor[Options]()
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Tag.Get("toml") != key || key == "" || key == "-" {
			continue
		}
		ft := f.Type
		if ft.Kind() == reflect.Pointer { // unset means "the default decides"
			ft = ft.Elem()
		}
		switch ft.Kind() {
		case reflect.Bool:
			return KindBool
		case reflect.Int:
			return KindInt
		case reflect.Slice:
			return KindList
		default:
			return KindString
		}
	}
	return ""
}
