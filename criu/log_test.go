package criu

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestExplainLog(t *testing.T) {
	for _, tc := range []struct {
		name   string
		log    string
		errors []string
		more   int
		hints  []string
	}{
		{
			name: "pid still taken",
			log: `(00.000100) Version: 4.2.1 (gitid 0)
(00.012345) Error (criu/cr-restore.c:1234): Can't fork for 123: File exists
(00.012400) Error (criu/cr-restore.c:2500): Restoring FAILED.
`,
			errors: []string{"Can't fork for 123: File exists", "Restoring FAILED."},
			hints:  []string{"a process with that PID still exists; retry after it has gone"},
		},
		{
			name: "no iptables, pid column",
			log: `(00.100000) Warn  (criu/net.c:10): something harmless
(00.200000)      1: Error (criu/net.c:3100): Locking network failed: iptables-restore returned -1
`,
			errors: []string{"Locking network failed: iptables-restore returned -1"},
			hints:  []string{"install iptables (CRIU's network lock)"},
		},
		{
			name:   "old criu on new kernel",
			log:    "(00.001000) Error (criu/vdso.c:400): vdso: Unexpected rt vDSO area bounds\n",
			errors: []string{"vdso: Unexpected rt vDSO area bounds"},
			hints:  []string{"this CRIU does not support this kernel; use 4.1+"},
		},
		{
			name: "disk full, many errors, last line unterminated",
			log: `(01.000000) Error (criu/page-xfer.c:1): Unable to write pages: No space left on device
(01.000001) Error (criu/cr-dump.c:2): Dumping FAILED.
(01.000002) Error (criu/cr-dump.c:3): a
(01.000003) Error (criu/cr-dump.c:4): b: No space left on device
(01.000004) Error (criu/cr-dump.c:5): c`,
			errors: []string{"Unable to write pages: No space left on device", "Dumping FAILED.", "a"},
			more:   2,
			hints:  []string{"the checkpoint destination is full"},
		},
		{
			name:   "unknown error",
			log:    "(00.5) Error (criu/files.c:9): Can't open file foo\n",
			errors: []string{"Can't open file foo"},
		},
		{
			name: "no error lines",
			log:  "(00.000100) Version: 4.2.1\n(00.1) Dumping finished successfully\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "restore.log")
			if err := os.WriteFile(path, []byte(tc.log), 0o644); err != nil {
				t.Fatal(err)
			}
			err := ExplainLog(path)
			var le *LogError
			if !errors.As(err, &le) {
				t.Fatalf("ExplainLog = %v (%T); want a *LogError", err, err)
			}
			if le.Path != path || !reflect.DeepEqual(le.Errors, tc.errors) || le.More != tc.more || !reflect.DeepEqual(le.Hints, tc.hints) {
				t.Errorf("ExplainLog = %+v; want errors %q, %d more, hints %q", le, tc.errors, tc.more, tc.hints)
			}
			msg := err.Error()
			for _, part := range append(append([]string{path}, tc.errors...), tc.hints...) {
				if !strings.Contains(msg, part) {
					t.Errorf("message %q lacks %q", msg, part)
				}
			}
		})
	}
}

func TestExplainLogMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dump.log")
	err := ExplainLog(path)
	if err == nil || !strings.Contains(err.Error(), path) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ExplainLog(missing) = %v; want an error naming %s that wraps ErrNotExist", err, path)
	}
}

func TestExplainLogMessage(t *testing.T) {
	e := &LogError{
		Path:   "/run/c1/restore.log",
		Errors: []string{"Can't fork for 123: File exists"},
		Hints:  []string{"a process with that PID still exists; retry after it has gone"},
	}
	want := "criu failed (log /run/c1/restore.log): Can't fork for 123: File exists; hint: a process with that PID still exists; retry after it has gone"
	if got := e.Error(); got != want {
		t.Errorf("Error() =\n %s\nwant\n %s", got, want)
	}
}

// TestExplainLogSkipsHarmless: the open-file-limit error CRIU logs on every
// run without CAP_SYS_RESOURCE is not quoted as a cause.
func TestExplainLogSkipsHarmless(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dump.log")
	log := "(00.001) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted\n" +
		"(00.090) Error (criu/files-ext.c:94): Can't dump file 3 of that type [20600] (chr 7:0)\n"
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	var e *LogError
	if !errors.As(ExplainLog(path), &e) || len(e.Errors) != 1 || !strings.Contains(e.Errors[0], "chr 7:0") {
		t.Fatalf("quoted %+v", e)
	}
}
