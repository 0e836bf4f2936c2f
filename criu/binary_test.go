package criu

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"google.golang.org/protobuf/proto"
)

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

// answering is the line of a fake CRIU's script that reads the request and
// sends resp over swrk's socket (fd 3) as one message. It reads first, as
// CRIU does: a unix socket closed with a message still unread resets the
// peer, whose read then fails with ECONNRESET instead of the answer.
func answering(t *testing.T, resp *rpc.CriuResp) string {
	t.Helper()
	b, err := proto.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	var octal strings.Builder
	for _, c := range b {
		octal.Write([]byte{'\\', '0' + c>>6, '0' + c>>3&7, '0' + c&7})
	}
	return "dd bs=4096 count=1 <&3 >/dev/null 2>&1; printf '" + octal.String() + "' >&3"
}

func versionAnswer(major, minor, sublevel int32, gitID string) *rpc.CriuResp {
	v := &rpc.CriuVersion{MajorNumber: proto.Int32(major), MinorNumber: proto.Int32(minor), Sublevel: proto.Int32(sublevel)}
	if gitID != "" {
		v.Gitid = proto.String(gitID)
	}
	return &rpc.CriuResp{Type: rpc.CriuReqType_VERSION.Enum(), Success: proto.Bool(true), Version: v}
}

func TestVersionRunsBinary(t *testing.T) {
	refused := &rpc.CriuResp{Type: rpc.CriuReqType_VERSION.Enum(), Success: proto.Bool(false), CrErrmsg: proto.String("nope")}
	for _, tc := range []struct {
		name, script, want, errHas string
		tooOld                     bool
	}{
		// A git build is its release, as `criu --version` prints it.
		{"supported", answering(t, versionAnswer(4, 2, 1, "v4.2.1-12-gabcdef")), "4.2.1", "", false},
		{"no sublevel", answering(t, versionAnswer(4, 1, 0, "")), "4.1", "", false},
		{"too old", answering(t, versionAnswer(3, 17, 1, "")), "3.17.1", "is too old: need 4.1 or newer", true},
		{"fails", `echo boom >&2; exit 1`, "", "boom", false},
		{"no answer", `echo "Version: 4.2.1"`, "", "exited without answering", false},
		{"refused", answering(t, refused), "", "no version in the answer", false},
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

// TestVersionOfInstalledCRIU: the installed CRIU's RPC answers what its
// --version prints, also through a wrapper script.
func TestVersionOfInstalledCRIU(t *testing.T) {
	bin, err := exec.LookPath("criu")
	if err != nil {
		t.Skip("no criu installed (make deps)")
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	wrapper := fakeCRIU(t, "exec "+bin+` "$@"`)
	for _, b := range []string{bin, wrapper} {
		v, err := Version(b)
		if err != nil || !strings.Contains(string(out), "Version: "+v+"\n") {
			t.Errorf("Version(%s) = %q, %v; --version printed %q", b, v, err, out)
		}
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
