package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunInstallTwiceAndUninstall drives the command against a temporary
// host root: output lines, exit statuses, no restart on the second run.
func TestRunInstallTwiceAndUninstall(t *testing.T) {
	root, src := t.TempDir(), t.TempDir()
	shim := filepath.Join(src, "shim")
	if err := os.WriteFile(shim, []byte("shim"), 0o755); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(src, "restarted")
	args := []string{"--host-root", root, "--shim", shim, "--restart-cmd", "echo restart >> " + marker,
		"--handler", "name=snapshot,store=/var/lib/gpusnap/store,restore=auto"}
	var out, errOut bytes.Buffer
	if rc := run(args, &out, &errOut); rc != exitOK {
		t.Fatalf("install rc %d: %s", rc, errOut.String())
	}
	for _, want := range []string{"wrote /usr/local/bin/containerd-shim-snapshot-v2", "created /etc/containerd/config.toml", "restarting containerd: echo restart"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if rc := run(args, &out, &errOut); rc != exitOK || !strings.Contains(out.String(), "nothing to change") {
		t.Fatalf("second install rc %d:\n%s", rc, out.String())
	}
	if rc := run([]string{"--host-root", root, "--uninstall", "--restart-cmd", "echo restart >> " + marker}, &out, &errOut); rc != exitOK {
		t.Fatalf("uninstall rc %d: %s", rc, errOut.String())
	}
	if data, _ := os.ReadFile(marker); strings.Count(string(data), "restart") != 2 {
		t.Errorf("restarts: %q", data)
	}
	// Every directory was created by the install, so none is left.
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("left under host root: %v", entries)
	}
}

func TestRunErrors(t *testing.T) {
	root := t.TempDir()
	for _, tt := range []struct {
		args []string
		rc   int
		want string
	}{
		{[]string{"--handler", "name=Bad"}, exitUsage, "DNS label"},
		{[]string{"--host-root", root, "--handler", "name=s,restore=sometimes"}, exitFail, `restore = "sometimes"`},
		{[]string{"--host-root", root, "--uninstall", "--handler", "name=s"}, exitUsage, "takes no --handler"},
		{[]string{"--host-root", root}, exitFail, "no handler given"},
	} {
		var out, errOut bytes.Buffer
		if rc := run(tt.args, &out, &errOut); rc != tt.rc || !strings.Contains(errOut.String(), tt.want) {
			t.Errorf("%v: rc %d, stderr %q; want rc %d and %q", tt.args, rc, errOut.String(), tt.rc, tt.want)
		}
	}
}
