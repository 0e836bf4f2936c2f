package criu

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// maxQuoted is how many CRIU error lines an error quotes. The first ones
// are the cause; later ones are usually CRIU unwinding.
const maxQuoted = 3

// hints turn CRIU errors seen in practice into the action that fixes them.
// A pattern is matched against each error line's message.
var hints = []struct {
	pattern *regexp.Regexp
	hint    string
}{
	{regexp.MustCompile(`Can't fork for \d+: File exists`), "a process with that PID still exists; retry after it has gone"},
	{regexp.MustCompile(`iptables-restore`), "install iptables (CRIU's network lock)"},
	{regexp.MustCompile(`(?i)vdso`), "this CRIU does not support this kernel; use " + MinVersion + "+"},
	{regexp.MustCompile(`No space left on device`), "the checkpoint destination is full"},
}

// harmless are error lines CRIU logs on every run of some nodes and that
// explain no failure: as root without CAP_SYS_RESOURCE (containers, some
// VMs) it cannot raise its own open-file limit, and goes on.
var harmless = regexp.MustCompile(`rlimit: Can't setup RLIMIT_NOFILE for self`)

// errorLine matches CRIU's error lines, with or without a PID column:
//
//	(00.012345) Error (criu/cr-restore.c:1234): Can't fork for 123: File exists
//	(00.012345)      1: Error (criu/pie/restorer.c:99): ...
var errorLine = regexp.MustCompile(`Error \([^)]*\): ?(.*)`)

// LogError is a failed CRIU run as its log explains it.
type LogError struct {
	Path   string   // the CRIU log file
	Errors []string // messages of the first error lines, at most maxQuoted
	More   int      // error lines not quoted
	Hints  []string // what to do about them, if the errors are known
}

func (e *LogError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "criu failed (log %s)", e.Path)
	if len(e.Errors) == 0 {
		b.WriteString(": no error lines in the log")
	} else {
		b.WriteString(": " + strings.Join(e.Errors, "; "))
	}
	if e.More > 0 {
		fmt.Fprintf(&b, " (and %d more)", e.More)
	}
	if len(e.Hints) > 0 {
		b.WriteString("; hint: " + strings.Join(e.Hints, "; "))
	}
	return b.String()
}

// ExplainLog reads the CRIU dump or restore log at path after a failed run
// and returns a *LogError that quotes what went wrong and, for known
// problems, what to do. It always returns an error: if the log can't be
// read, the error says so and still names the file.
func ExplainLog(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("criu failed; its log %s can't be read: %w", path, err)
	}
	defer f.Close()

	e := &LogError{Path: path}
	seen := map[string]bool{}
	r := bufio.NewReader(f) // not a Scanner: CRIU lines have no length limit
	for {
		line, err := r.ReadString('\n')
		if m := errorLine.FindStringSubmatch(line); m != nil && !harmless.MatchString(m[1]) {
			e.add(strings.TrimSpace(m[1]), seen)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("criu failed; reading its log %s: %w", path, err)
		}
	}
	return e
}

func (e *LogError) add(msg string, seen map[string]bool) {
	if len(e.Errors) < maxQuoted {
		e.Errors = append(e.Errors, msg)
	} else {
		e.More++
	}
	for _, h := range hints {
		if !seen[h.hint] && h.pattern.MatchString(msg) {
			seen[h.hint] = true
			e.Hints = append(e.Hints, h.hint)
		}
	}
}
