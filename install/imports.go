package install

import (
	"fmt"
	"path/filepath"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
)

// importGlob is the import that makes containerd read the drop-in dir.
func (c Config) importGlob() string { return filepath.Join(c.DropinDir, "*.toml") }

// ensureImport makes containerd's main config import the drop-in. An
// import that already covers the drop-in (the admin's, or ours from an
// earlier run) is left as it is; otherwise one is added as a text edit and
// recorded. An earlier edit for another drop-in dir or config file is
// taken back first. (In a dry run that take-back is only reported, so the
// rest of the report reads the file as it is now.)
func (r *runner) ensureImport() error {
	if e := r.st.Import; e != nil && (e.Config != r.ContainerdConfig || e.Glob != r.importGlob()) {
		if err := r.undoImport(); err != nil {
			return err
		}
	}
	main, err := r.readMainConfig()
	if err != nil {
		return err
	}
	imports, err := main.imports(r.ContainerdConfig)
	if err != nil {
		return err
	}
	if main.exists && r.covers(imports, filepath.Join(r.DropinDir, DropinName)) {
		r.say("unchanged %s (imports %s)", r.ContainerdConfig, quoteList(imports))
		return nil
	}
	return r.addImport(main)
}

// addImport inserts the import, checks the result and writes it with the
// file's own mode.
func (r *runner) addImport(main mainConfig) error {
	glob := r.importGlob()
	at, text, err := insertImport(string(main.data), glob)
	edited := []byte(string(main.data[:at]) + text + string(main.data[at:]))
	if err == nil {
		err = verifyImportEdit(main.data, edited, glob)
	}
	if err != nil {
		return fmt.Errorf("cannot add %s to the imports of %s safely (%v); add it by hand and rerun", tomlString(glob), r.ContainerdConfig, err)
	}
	r.st.Import = &ImportEdit{Config: r.ContainerdConfig, Glob: glob, Offset: at, Text: text, CreatedFile: !main.exists}
	r.noteChange(true)
	did, would := "added import "+tomlString(glob)+" to", "add import "+tomlString(glob)+" to"
	if !main.exists {
		did, would = "created", "create"
	}
	if r.DryRun {
		r.say("would %s %s", would, r.ContainerdConfig)
		return nil
	}
	if err := r.mkdirs(filepath.Dir(r.ContainerdConfig)); err != nil {
		return err
	}
	if err := writeAtomic(r.host(r.ContainerdConfig), edited, main.mode); err != nil {
		return fmt.Errorf("writing %s: %w", r.ContainerdConfig, err)
	}
	r.say("%s %s", did, r.ContainerdConfig)
	return nil
}

// undoImport removes the recorded import text from the main config, and
// the file itself if the installer created it and nothing else was added.
// When the text is no longer there as written, or removing it would leave
// a file containerd cannot read, the file is left alone with a message.
func (r *runner) undoImport() error {
	e := r.st.Import
	if e == nil {
		return nil
	}
	fi, err := readTarget(r.host(e.Config))
	if err != nil {
		return err
	}
	r.st.Import = nil
	if !fi.exists {
		r.say("already gone %s", e.Config)
		return nil
	}
	out, ok := revertImport(fi.data, *e)
	if ok {
		_, perr := containerdconfig.Parse(out)
		ok = perr == nil
	}
	if !ok {
		r.say("left %s alone: the import %s it added was edited since; remove it by hand if unwanted", e.Config, tomlString(e.Glob))
		return nil
	}
	r.noteChange(true)
	if e.CreatedFile && string(out) == minimalConfig {
		return r.remove(e.Config)
	}
	if r.DryRun {
		r.say("would remove import %s from %s", tomlString(e.Glob), e.Config)
		return nil
	}
	if err := writeAtomic(r.host(e.Config), out, fi.mode); err != nil {
		return fmt.Errorf("writing %s: %w", e.Config, err)
	}
	r.say("removed import %s from %s", tomlString(e.Glob), e.Config)
	return nil
}
