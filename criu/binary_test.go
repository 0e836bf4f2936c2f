package criu

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		name, out, want string
	}{
		{"release", "Version: 4.2.1\n", "4.2.1"},
		{"with GitID", "Version: 4.1.1\nGitID: v4.1.1-3-g0123abc\n", "4.1.1"},
		{"GitID first", "GitID: v4.2-7-gdeadbee\nVersion: 4.2\n", "4.2"},
		{"GitID only", "GitID: v4.2.1-12-gabcdef\n", "4.2.1"},
		{"extra spaces and CRLF", "  Version:   3.17.1  \r\n", "3.17.1"},
		{"trailing words", "Version: 4.0 (dev)\n", "4.0"},
		{"garbage", "criu: unknown option\n", ""},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseVersion(tc.out)
			if got != tc.want || (err != nil) != (tc.want == "") {
				t.Errorf("parseVersion(%q) = %q, %v; want %q", tc.out, got, err, tc.want)
			}
		})
	}
}

func TestCheckVersion(t *testing.T) {
	for _, tc := range []struct {
		version string
		tooOld  bool
	}{
		{"3.17.1", true},
		{"4.0", true},
		{"4.1", false},
		{"4.1.1", false},
		{"4.2.1", false},
		{"4.10", false},
		{"5.0", false},
	} {
		err := checkVersion("/usr/sbin/criu", tc.version)
		if got := errors.Is(err, ErrTooOld); got != tc.tooOld {
			t.Errorf("checkVersion(%q) = %v; want too old: %v", tc.version, err, tc.tooOld)
		}
	}
	want := "criu 3.17.1 at /usr/sbin/criu is too old: need 4.1 or newer"
	if err := checkVersion("/usr/sbin/criu", "3.17.1"); err == nil || err.Error() != want {
		t.Errorf("checkVersion error = %v; want %q", err, want)
	}
}

// fakeCRIU writes a shell script that stands in for criu.
func fakeCRIU(t *testing.T, script string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "criu")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestVersionRunsBinary(t *testing.T) {
	for _, tc := range []struct {
		name, script, want, errHas string
		tooOld                     bool
	}{
		{"supported", `echo "Version: 4.2.1"; echo "GitID: v4.2.1"`, "4.2.1", "", false},
		{"too old", `echo "Version: 3.17.1"`, "3.17.1", "is too old: need 4.1 or newer", true},
		{"fails", `echo boom >&2; exit 1`, "", "boom", false},
		{"no version", `echo hello`, "", "no version", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := fakeCRIU(t, tc.script)
			got, err := Version(bin)
			if got != tc.want {
				t.Errorf("Version = %q; want %q", got, tc.want)
			}
			if tc.errHas == "" && err != nil || tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)) {
				t.Errorf("Version error = %v; want one containing %q", err, tc.errHas)
			}
			if errors.Is(err, ErrTooOld) != tc.tooOld {
				t.Errorf("errors.Is(%v, ErrTooOld) = %v; want %v", err, !tc.tooOld, tc.tooOld)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	if err := Check(fakeCRIU(t, `echo "Looks good."`)); err != nil {
		t.Errorf("Check of a passing criu: %v", err)
	}
	err := Check(fakeCRIU(t, `echo "Error (criu/vdso.c:1): vdso: Unexpected rt vDSO area bounds"; exit 1`))
	if err == nil || !strings.Contains(err.Error(), "Unexpected rt vDSO area bounds") {
		t.Errorf("Check of a failing criu = %v; want CRIU's output in it", err)
	}
}

func TestFind(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-criu-here")
	for _, tc := range []struct {
		name, path, errHas string
	}{
		{"missing path", missing, missing},
		{"missing in PATH", "criu-does-not-exist", "criu-does-not-exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Find(tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.errHas) || !strings.Contains(err.Error(), "make deps") {
				t.Errorf("Find(%q) = %v; want an error naming %q and `make deps`", tc.path, err, tc.errHas)
			}
		})
	}

	t.Run("empty path is criu from PATH", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		_, err := Find("")
		if err == nil || !strings.Contains(err.Error(), `"criu" in PATH`) {
			t.Errorf(`Find("") with no criu in PATH = %v`, err)
		}
		dir := filepath.Dir(fakeCRIU(t, "true"))
		t.Setenv("PATH", dir)
		if got, err := Find(""); err != nil || got != filepath.Join(dir, "criu") {
			t.Errorf(`Find("") = %q, %v; want %q`, got, err, filepath.Join(dir, "criu"))
		}
	})
}

// TestHasPatch: the installed CRIU (make deps) carries every patch of
// contrib/criu, found through a wrapper script too (as the GPU machine runs
// CRIU with its own libraries).
func TestHasPatch(t *testing.T) {
	bin, err := exec.LookPath("criu")
	if err != nil {
		t.Skip("no criu installed (make deps)")
	}
	wrapper := filepath.Join(t.TempDir(), "criu")
	if err := os.WriteFile(wrapper, []byte("#!/bin/sh\nexec "+bin+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []Patch{PatchHugePages, PatchThreads, PatchInheritedDevices} {
		if ok, err := HasPatch(bin, p); !ok || err != nil {
			t.Errorf("%s lacks %s: %v", bin, p.Name, err)
		}
	}
	if ok, err := HasPatch(wrapper, PatchInheritedDevices); !ok || err != nil {
		t.Errorf("through a wrapper script: %v, %v", ok, err)
	}
	if ok, _ := HasPatch(wrapper, PatchThreads); ok {
		t.Errorf("a wrapper script claims to carry %s", PatchThreads.Name)
	}
}
