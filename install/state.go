package install

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// State is the installer's record on the node (<options-dir>/installed.json):
// exactly what it created or changed, so a rerun knows what it owns and an
// uninstall takes back only that. All paths are node paths, so the record
// stays right whichever HostRoot a later run uses.
type State struct {
	// Files are the files the installer wrote, in the order written.
	Files []FileRecord `json:"files,omitempty"`
	// Dirs are the directories it created.
	Dirs []string `json:"dirs,omitempty"`
	// Import is its edit of containerd's main config, if it made one.
	Import *ImportEdit `json:"import,omitempty"`
	// RestartPending says containerd's config changed but the restart
	// command failed; the next run restarts even if nothing else changed.
	RestartPending bool `json:"restart_pending,omitempty"`
}

// FileRecord is one file the installer wrote.
type FileRecord struct {
	Path string `json:"path"`
	// SHA256 is the digest of the content it wrote: a file that no longer
	// has it was changed by someone else and is left alone on uninstall.
	SHA256 string `json:"sha256"`
	// Created is true when there was no file before; otherwise Original
	// and OriginalMode are what uninstall puts back.
	Created      bool        `json:"created"`
	Original     []byte      `json:"original,omitempty"`
	OriginalMode fs.FileMode `json:"original_mode,omitempty"`
	// Containerd marks files containerd reads (the drop-in): changing
	// them needs a containerd restart.
	Containerd bool `json:"containerd,omitempty"`
}

// ImportEdit is the text the installer inserted into the main config:
// Text at byte Offset. Uninstall removes just that text, so the rest of
// the file, including later edits by others, stays as it is.
type ImportEdit struct {
	Config string `json:"config"`
	Glob   string `json:"glob"`
	Offset int    `json:"offset"`
	Text   string `json:"text"`
	// CreatedFile is true when there was no main config; uninstall then
	// removes the file if only the installer's minimal config is left.
	CreatedFile bool `json:"created_file,omitempty"`
}

func (c Config) statePath() string { return filepath.Join(c.OptionsDir, StateName) }

// loadState reads the record; a missing one is an empty record.
func (c Config) loadState() (*State, []byte, error) {
	data, err := os.ReadFile(c.host(c.statePath()))
	if errors.Is(err, fs.ErrNotExist) {
		return &State{}, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, nil, fmt.Errorf("state file %s: %w (move it away to start over)", c.statePath(), err)
	}
	return &st, data, nil
}

// saveState writes the record when it differs from what is on disk, so a
// run that changed nothing writes nothing. It is 0600: it may hold a copy
// of containerd's config, which can carry registry credentials.
func (c Config) saveState(st *State, old []byte) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if bytes.Equal(data, old) || c.DryRun {
		return nil
	}
	return writeAtomic(c.host(c.statePath()), data, 0o600)
}

// file returns the record of path, or nil.
func (st *State) file(path string) *FileRecord {
	for i := range st.Files {
		if st.Files[i].Path == path {
			return &st.Files[i]
		}
	}
	return nil
}

// addDirs records directories created by this run.
func (st *State) addDirs(dirs []string) {
	for _, d := range dirs {
		if !contains(st.Dirs, d) {
			st.Dirs = append(st.Dirs, d)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
