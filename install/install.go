package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
)

// Result says what a run did.
type Result struct {
	// Changed is true when any file was (or, dry, would be) written or removed.
	Changed bool
	// ContainerdChanged is true when containerd's view changed: the drop-in
	// or the main config.
	ContainerdChanged bool
	// Restarted is true when the restart command ran and succeeded.
	Restarted bool
}

// runner is one install or uninstall: the config, the record it keeps up
// to date, and what changed so far.
type runner struct {
	Config
	st     *State
	stOld  []byte
	result Result
}

// Install makes the node match cfg. Only a change containerd reads (the
// drop-in or the main config's imports) restarts containerd: the shim reads
// a handler's options file at every container create, and containerd starts
// a shim binary per pod, so options and binary updates apply to new pods
// without a restart, and running pods keep the shim they started with.
func Install(cfg Config) (Result, error) {
	c := cfg.withDefaults()
	if err := c.checkInstall(); err != nil {
		return Result{}, err
	}
	want, err := c.desiredFiles()
	if err != nil {
		return Result{}, err
	}
	main, err := c.readMainConfig()
	if err != nil {
		return Result{}, err
	}
	if err := c.checkConflicts(main); err != nil {
		return Result{}, err
	}
	r, err := c.newRunner()
	if err != nil {
		return Result{}, err
	}
	err = r.apply(want)
	// Save even after a failure: the record must list what was written.
	if serr := r.save(); err == nil {
		err = serr
	}
	if err != nil {
		return r.result, err
	}
	return r.result, r.restart()
}

// checkInstall validates everything that needs no file system.
func (c Config) checkInstall() error {
	if err := c.validatePaths(); err != nil {
		return err
	}
	if err := c.validateHandlers(); err != nil {
		return err
	}
	if err := c.checkHostRoot(); err != nil {
		return err
	}
	return c.checkHostSymlinks(c.BinDir, c.OptionsDir, c.DropinDir, c.ContainerdConfig)
}

// Uninstall takes back what the state file records and removes the state
// file; files others changed since are left alone. Only OptionsDir, the
// host root, the restart command and DryRun of cfg matter: the rest comes
// from the record.
func Uninstall(cfg Config) (Result, error) {
	c := cfg.withDefaults()
	if err := c.validatePaths(); err != nil {
		return Result{}, err
	}
	if err := c.checkHostRoot(); err != nil {
		return Result{}, err
	}
	r, err := c.newRunner()
	if err != nil {
		return Result{}, err
	}
	if r.stOld == nil {
		c.say("nothing to uninstall: no %s", c.statePath())
		return Result{}, nil
	}
	if err := c.checkHostSymlinks(r.recordedPaths()...); err != nil {
		return Result{}, err
	}
	if err := r.undoAll(); err != nil {
		return r.result, errors.Join(err, r.save())
	}
	if err := r.restart(); err != nil {
		return r.result, err
	}
	return r.result, r.removeRecord()
}

func (c Config) newRunner() (*runner, error) {
	st, old, err := c.loadState()
	if err != nil {
		return nil, err
	}
	return &runner{Config: c, st: st, stOld: old}, nil
}

// desired is a file the node should have.
type desired struct {
	path       string
	data       []byte
	mode       fs.FileMode
	containerd bool
}

// desiredFiles renders every file before anything is written, so that bad
// input (an unknown options key, a missing binary) changes nothing.
func (c Config) desiredFiles() ([]desired, error) {
	var want []desired
	for _, b := range []struct{ src, name string }{{c.Shim, ShimBinary}, {c.CLI, CLIBinary}, {c.CRIU, CRIUBinary}} {
		if b.src == "" {
			continue
		}
		data, err := os.ReadFile(b.src)
		if err != nil {
			return nil, fmt.Errorf("binary to install: %w", err)
		}
		want = append(want, desired{path: filepath.Join(c.BinDir, b.name), data: data, mode: 0o755})
	}
	if c.RegistryCredentials != "" {
		data, err := readRegistryCredentials(c.RegistryCredentials)
		if err != nil {
			return nil, err
		}
		want = append(want, desired{path: c.registryCredentialsPath(), data: data, mode: 0o600})
	}
	for _, h := range c.Handlers {
		data, err := c.renderOptions(h)
		if err != nil {
			return nil, err
		}
		want = append(want, desired{path: c.optionsPath(h.Name), data: data, mode: 0o644})
	}
	dropin := desired{path: filepath.Join(c.DropinDir, DropinName), data: c.renderDropin(), mode: 0o644, containerd: true}
	return append(want, dropin), nil
}

// readRegistryCredentials reads a docker-style config.json and checks that
// it is one (an "auths" object), so that a wrong file is refused before
// anything changes rather than by every pull on the node.
func readRegistryCredentials(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("registry credentials: %w", err)
	}
	var cfg struct {
		Auths map[string]json.RawMessage `json:"auths"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil || cfg.Auths == nil {
		return nil, fmt.Errorf("registry credentials %s: not a docker-style config.json with \"auths\" (%v)", path, err)
	}
	return data, nil
}

// checkConflicts refuses a handler name that the main config or another
// drop-in already declares: containerd merges the tables, and the result
// would be neither runtime.
func (c Config) checkConflicts(main mainConfig) error {
	sources := map[string]map[string]bool{c.ContainerdConfig: main.config.CRIRuntimes()}
	others, _ := filepath.Glob(c.host(filepath.Join(c.DropinDir, "*.toml")))
	for _, hp := range others {
		if filepath.Base(hp) == DropinName {
			continue
		}
		if f, err := containerdconfig.ReadFile(hp); err == nil {
			sources[filepath.Join(c.DropinDir, filepath.Base(hp))] = f.CRIRuntimes()
		}
	}
	for _, h := range c.Handlers {
		for file, names := range sources {
			if names[h.Name] {
				return fmt.Errorf("handler %q is already declared in %s; pick another name or remove it there", h.Name, file)
			}
		}
	}
	return nil
}

// apply writes binaries and options first, then the drop-in that names
// them, then the import that makes containerd read the drop-in.
func (r *runner) apply(want []desired) error {
	for _, d := range want {
		if err := r.ensureFile(d); err != nil {
			return err
		}
	}
	if err := r.dropUnwanted(want); err != nil {
		return err
	}
	return r.ensureImport()
}

// ensureFile writes d unless the node already has it, recording the file
// (and what it replaced) the first time the installer changes it.
func (r *runner) ensureFile(d desired) error {
	fi, err := readTarget(r.host(d.path))
	if err != nil {
		return err
	}
	if fi.exists && bytes.Equal(fi.data, d.data) && fi.mode == d.mode {
		r.say("unchanged %s", d.path)
		return nil
	}
	rec := r.st.file(d.path)
	if rec == nil {
		r.st.Files = append(r.st.Files, FileRecord{Path: d.path, Created: !fi.exists, Original: fi.data, OriginalMode: fi.mode})
		rec = &r.st.Files[len(r.st.Files)-1]
	}
	rec.SHA256, rec.Containerd = digest(d.data), d.containerd
	r.noteChange(d.containerd)
	if r.DryRun {
		r.say("would write %s", d.path)
		return nil
	}
	if err := r.mkdirs(filepath.Dir(d.path)); err != nil {
		return err
	}
	if err := writeAtomic(r.host(d.path), d.data, d.mode); err != nil {
		return fmt.Errorf("writing %s: %w", d.path, err)
	}
	r.say("wrote %s", d.path)
	return nil
}

// mkdirs creates a directory and records what it created.
func (r *runner) mkdirs(dir string) error {
	created, err := r.Config.mkdirs(dir)
	r.st.addDirs(created)
	if err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	return nil
}

// dropUnwanted takes back recorded files this run no longer wants (a
// handler dropped from the command line, a binary no longer given), so the
// node always matches the latest inputs.
func (r *runner) dropUnwanted(want []desired) error {
	wanted := map[string]bool{}
	for _, d := range want {
		wanted[d.path] = true
	}
	kept := r.st.Files[:0:0]
	for _, rec := range r.st.Files {
		if wanted[rec.Path] {
			kept = append(kept, rec)
			continue
		}
		if err := r.undoFile(rec); err != nil {
			return err
		}
	}
	r.st.Files = kept
	return nil
}

// undoAll takes back every recorded file, newest first, then the import.
// A record is dropped only once undone, so a failure keeps the rest.
func (r *runner) undoAll() error {
	for len(r.st.Files) > 0 {
		last := len(r.st.Files) - 1
		if err := r.undoFile(r.st.Files[last]); err != nil {
			return err
		}
		r.st.Files = r.st.Files[:last]
	}
	return r.undoImport()
}

// undoFile removes a file the installer created or puts back the one it
// replaced, unless someone changed the file since.
func (r *runner) undoFile(rec FileRecord) error {
	fi, err := readTarget(r.host(rec.Path))
	if err != nil {
		return err
	}
	switch {
	case !fi.exists:
		r.say("already gone %s", rec.Path)
		return nil
	case digest(fi.data) != rec.SHA256:
		r.say("left %s alone: changed since gpusnap-install wrote it", rec.Path)
		return nil
	}
	r.noteChange(rec.Containerd)
	if rec.Created {
		return r.remove(rec.Path)
	}
	if r.DryRun {
		r.say("would restore %s", rec.Path)
		return nil
	}
	if err := writeAtomic(r.host(rec.Path), rec.Original, rec.OriginalMode); err != nil {
		return fmt.Errorf("restoring %s: %w", rec.Path, err)
	}
	r.say("restored %s", rec.Path)
	return nil
}

// remove deletes a file durably.
func (r *runner) remove(path string) error {
	if r.DryRun {
		r.say("would remove %s", path)
		return nil
	}
	if err := os.Remove(r.host(path)); err != nil {
		return err
	}
	r.say("removed %s", path)
	return syncDir(r.host(filepath.Dir(path)))
}

// noteChange records that a file changed, and whether containerd sees it.
func (r *runner) noteChange(containerd bool) {
	r.result.Changed = true
	r.result.ContainerdChanged = r.result.ContainerdChanged || containerd
}

// save writes the record if it changed.
func (r *runner) save() error {
	if err := r.saveState(r.st, r.stOld); err != nil {
		return fmt.Errorf("writing state file %s: %w", r.statePath(), err)
	}
	return nil
}

// removeRecord ends an uninstall: the state file, then the directories the
// installer created, if nothing else lives in them.
func (r *runner) removeRecord() error {
	if err := r.remove(r.statePath()); err != nil {
		return err
	}
	if r.DryRun {
		for _, d := range r.st.Dirs {
			r.say("would remove directory %s if empty", d)
		}
		return nil
	}
	r.removeDirs(r.st.Dirs)
	return nil
}

// recordedPaths lists the node paths the record names.
func (r *runner) recordedPaths() []string {
	paths := []string{r.OptionsDir}
	for _, f := range r.st.Files {
		paths = append(paths, f.Path)
	}
	if r.st.Import != nil {
		paths = append(paths, r.st.Import.Config)
	}
	return paths
}

// restart runs the restart command when containerd's view changed, or a
// previous run's restart failed. A failure is recorded so the next run,
// even one that changes nothing, tries again.
func (r *runner) restart() error {
	if !r.result.ContainerdChanged && !r.st.RestartPending {
		return nil
	}
	switch {
	case r.RestartCmd == "":
		r.say("containerd config changed; no restart command given: restart containerd to apply it")
		return nil
	case r.DryRun:
		r.say("would restart containerd: %s", r.RestartCmd)
		return nil
	}
	r.say("restarting containerd: %s", r.RestartCmd)
	cmd := exec.Command("sh", "-c", r.RestartCmd)
	cmd.Stdout, cmd.Stderr = r.Out, r.Out
	err := cmd.Run()
	r.st.RestartPending = err != nil
	if serr := r.save(); err == nil && serr != nil {
		return serr
	}
	if err != nil {
		return fmt.Errorf("restart command %q: %w (the configuration is in place; the next run retries the restart)", r.RestartCmd, err)
	}
	r.result.Restarted = true
	return nil
}

func (c Config) say(format string, a ...any) {
	fmt.Fprintf(c.Out, format+"\n", a...)
}
