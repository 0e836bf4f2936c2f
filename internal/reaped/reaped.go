// Package reaped runs helper commands (runc, criu, nsenter) in a way that
// also works inside a containerd shim.
//
// A shim reaps every child on SIGCHLD (containerd's reaper), so a plain
// exec.Cmd.Wait in the shim races with it: when the reaper wins, Wait fails
// with ECHILD ("waitid: no child processes") although the command ran, and
// the caller takes a success for a failure. Inside the shim, commands must
// be started and waited for through the reaper, which hands the exit status
// to whoever subscribed. Outside a shim (the CLI, tests) the plain exec path
// is right, because nobody else reaps.
package reaped

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"sync/atomic"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
)

var throughReaper atomic.Bool

// UseReaper makes this process run commands through containerd's reaper.
// The shim calls it once at start, before it runs any command.
func UseReaper() { throughReaper.Store(true) }

// Output runs cmd and returns its standard output. A command that exits
// non-zero returns an error with its exit status and standard error.
func Output(cmd *exec.Cmd) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := run(cmd)
	if err != nil && stderr.Len() > 0 {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), err
}

// CombinedOutput runs cmd and returns its standard output and error
// together; a non-zero exit is an error.
func CombinedOutput(cmd *exec.Cmd) ([]byte, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := run(cmd)
	return out.Bytes(), err
}

// Run runs cmd; a non-zero exit is an error.
func Run(cmd *exec.Cmd) error { return run(cmd) }

func run(cmd *exec.Cmd) error {
	if !throughReaper.Load() {
		return cmd.Run()
	}
	ec, err := reaper.Default.Start(cmd)
	if err != nil {
		return err
	}
	status, err := reaper.Default.Wait(cmd, ec)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd.Path, err)
	}
	if status != 0 {
		return fmt.Errorf("%s: exit status %d", cmd.Path, status)
	}
	return nil
}
