package install

import (
	"bytes"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
)

// minimalConfig is the main config the installer creates when the node
// has none (containerd then runs on its defaults plus the import).
const minimalConfig = "version = 3\n"

// minVersion is the oldest main config version the drop-in can go with:
// containerd refuses imported files of a higher version than the main
// file, and the drop-in is version 3.
const minVersion = 3

// mainConfig is containerd's main config as read from the node.
type mainConfig struct {
	fileInfo
	config containerdconfig.File
}

// readMainConfig reads and checks containerd's main config. A missing one
// reads as minimalConfig with exists false.
func (c Config) readMainConfig() (mainConfig, error) {
	fi, err := readTarget(c.host(c.ContainerdConfig))
	if err != nil {
		return mainConfig{}, err
	}
	if !fi.exists {
		fi.data, fi.mode = []byte(minimalConfig), 0o644
	}
	m := mainConfig{fileInfo: fi}
	if m.config, err = containerdconfig.Parse(fi.data); err != nil {
		return mainConfig{}, fmt.Errorf("containerd config %s: %w", c.ContainerdConfig, err)
	}
	return m, m.checkVersion(c.ContainerdConfig)
}

// checkVersion refuses configs older than version 3. containerd reads a
// file without "version" as version 1.
func (m mainConfig) checkVersion(path string) error {
	v, err := m.config.Version()
	if err != nil {
		return fmt.Errorf("containerd config %s: %w", path, err)
	}
	if v < minVersion {
		return fmt.Errorf("containerd config %s is version %d; the drop-in this installer writes is version %d and containerd needs "+
			"drop-ins not newer than the main file: migrate it first (containerd config migrate > new.toml, review, replace)", path, v, minVersion)
	}
	return nil
}

// imports returns the main config's import patterns.
func (m mainConfig) imports(path string) ([]string, error) {
	out, err := m.config.Imports()
	if err != nil {
		return nil, fmt.Errorf("containerd config %s: %w", path, err)
	}
	return out, nil
}

// covers tells whether one of the patterns makes containerd load file,
// resolving them the way containerd does (relative to the main config's
// directory, globs with filepath.Match semantics).
func (c Config) covers(patterns []string, file string) bool {
	for _, p := range patterns {
		p = filepath.Clean(p)
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(c.ContainerdConfig), p)
		}
		if ok, _ := filepath.Match(p, file); ok || p == file {
			return true
		}
	}
	return false
}

var (
	tableHeader = regexp.MustCompile(`(?m)^[ \t]*\[`)
	importsKey  = regexp.MustCompile(`(?m)^[ \t]*["']?imports["']?[ \t]*=[ \t]*\[`)
	versionLine = regexp.MustCompile(`(?m)^[ \t]*["']?version["']?[ \t]*=.*$`)
)

// insertImport adds glob to the top-level imports of a config, as text:
// it extends an existing imports array or adds an imports line after the
// version line, so that every other byte of the file stays as the admin
// wrote it. It returns where it inserted what.
func insertImport(content, glob string) (int, string, error) {
	top := content
	if loc := tableHeader.FindStringIndex(content); loc != nil {
		top = content[:loc[0]]
	}
	if loc := importsKey.FindStringIndex(top); loc != nil {
		return extendArray(content, loc[1]-1, glob)
	}
	line := "imports = [" + tomlString(glob) + "]"
	loc := versionLine.FindStringIndex(top)
	if loc == nil {
		return 0, line + "\n", nil
	}
	end := loc[1]
	if end == len(content) {
		return end, "\n" + line, nil
	}
	nl := "\n"
	if end > 0 && content[end-1] == '\r' {
		nl = "\r\n"
	}
	return end + 1, line + nl, nil
}

// extendArray inserts glob as the last item of the array opening at open,
// right after the last item (or comma) so comments and layout stay.
func extendArray(content string, open int, glob string) (int, string, error) {
	last, after := byte('['), open+1
	for i := open + 1; i < len(content); i++ {
		switch ch := content[i]; ch {
		case ' ', '\t', '\r', '\n':
		case '#':
			for i < len(content) && content[i] != '\n' {
				i++
			}
		case '"', '\'':
			end := stringEnd(content, i)
			if end < 0 {
				return 0, "", fmt.Errorf("unterminated string in imports")
			}
			i, last, after = end, '"', end+1
		case ',':
			last, after = ',', i+1
		case ']':
			item := tomlString(glob)
			switch last {
			case '[':
				return after, item, nil
			case ',':
				return after, " " + item + ",", nil
			}
			return after, ", " + item, nil
		default:
			return 0, "", fmt.Errorf("imports holds something other than strings")
		}
	}
	return 0, "", fmt.Errorf("unterminated imports array")
}

// stringEnd returns the index of the quote closing the TOML string that
// opens at start, or -1.
func stringEnd(s string, start int) int {
	q := s[start]
	for i := start + 1; i < len(s); i++ {
		switch {
		case s[i] == '\\' && q == '"':
			i++
		case s[i] == q:
			return i
		case s[i] == '\n':
			return -1
		}
	}
	return -1
}

// verifyImportEdit re-reads both versions of the config and checks that
// the text edit did exactly one thing: append glob to imports. A config
// laid out in a way the text edit misreads is refused, never corrupted.
func verifyImportEdit(before, after []byte, glob string) error {
	a, err := containerdconfig.Parse(before)
	if err != nil {
		return err
	}
	b, err := containerdconfig.Parse(after)
	if err != nil {
		return fmt.Errorf("edited config does not parse: %w", err)
	}
	want := append(asList(a["imports"]), glob)
	if !reflect.DeepEqual(asList(b["imports"]), want) {
		return fmt.Errorf("edited imports are %v, want %v", b["imports"], want)
	}
	delete(a, "imports")
	delete(b, "imports")
	if !reflect.DeepEqual(a, b) {
		return fmt.Errorf("the edit changed more than imports")
	}
	return nil
}

func asList(v any) []any {
	l, _ := v.([]any)
	return append([]any(nil), l...)
}

// revertImport removes the edit's text: at its offset if it is still
// there, else at its one occurrence. It reports false when it cannot find
// the text for sure (someone rewrote that part), leaving content as is.
func revertImport(content []byte, e ImportEdit) ([]byte, bool) {
	text := []byte(e.Text)
	at := e.Offset
	if at < 0 || at+len(text) > len(content) || !bytes.Equal(content[at:at+len(text)], text) {
		if bytes.Count(content, text) != 1 {
			return content, false
		}
		at = bytes.Index(content, text)
	}
	out := append(append([]byte(nil), content[:at]...), content[at+len(text):]...)
	return out, true
}

// quoteList renders patterns for messages.
func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = tomlString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
