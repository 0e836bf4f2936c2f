package testbed

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// PID is the process id of the bed's containerd now.
func (b *Bed) PID() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.daemon.Process.Pid
}

// Restart stops containerd (SIGTERM, as a service manager does) and starts
// it again with the same command line, so that it rereads its config.
// Shims and their containers keep running across it, as on a node.
func (b *Bed) Restart() error {
	if err := b.stopDaemon(); err != nil {
		return err
	}
	return b.startDaemon()
}

// RestartService stands in for a node's service manager: Command is a
// shell command that restarts the bed's containerd and returns once the new
// one answers, or fails, as `systemctl restart containerd` does. It is
// what gpusnap-install's --restart-cmd runs in tests.
//
// The command and the test process talk through two FIFOs in the bed's
// directory: the command writes a request to one, the service restarts
// containerd and writes "ok" or the error to the other.
type RestartService struct {
	bed                *Bed
	request, reply     string
	script             string
	done               chan struct{}
	mu                 sync.Mutex
	closing            bool
	restarts, failures int
}

// ServeRestarts starts answering restart requests; Close stops it.
func (b *Bed) ServeRestarts() (*RestartService, error) {
	s := &RestartService{bed: b, request: filepath.Join(b.Dir, "restart.request"), reply: filepath.Join(b.Dir, "restart.reply"),
		script: filepath.Join(b.Dir, "restart-containerd"), done: make(chan struct{})}
	for _, p := range []string{s.request, s.reply} {
		os.Remove(p)
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			return nil, fmt.Errorf("mkfifo %s: %w", p, err)
		}
	}
	script := fmt.Sprintf(`#!/bin/sh
# Restarts the test bed's containerd, as systemctl restart containerd would.
echo restart > %q || exit 1
read -r reply < %q
[ "$reply" = ok ] && exit 0
echo "restarting containerd: $reply" >&2
exit 1
`, s.request, s.reply)
	if err := os.WriteFile(s.script, []byte(script), 0o755); err != nil {
		return nil, err
	}
	go s.serve()
	return s, nil
}

// Command is the shell command that restarts the bed's containerd.
func (s *RestartService) Command() string { return s.script }

// Restarts is how many restarts the command asked for, and how many of
// them failed.
func (s *RestartService) Restarts() (asked, failed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarts, s.failures
}

func (s *RestartService) serve() {
	defer close(s.done)
	for {
		// Opening a FIFO for reading blocks until a writer opens it.
		req, err := os.ReadFile(s.request)
		s.mu.Lock()
		closing := s.closing
		s.mu.Unlock()
		if closing || err != nil {
			return
		}
		if strings.TrimSpace(string(req)) != "restart" {
			continue
		}
		answer := "ok"
		rerr := s.bed.Restart()
		if rerr != nil {
			answer = strings.ReplaceAll(rerr.Error(), "\n", " | ")
		}
		s.mu.Lock()
		s.restarts++
		if rerr != nil {
			s.failures++
		}
		s.mu.Unlock()
		s.answer(answer + "\n")
	}
}

// answer writes to the reply FIFO once the command opens it to read; a
// command that went away meanwhile is given up on after 10 s.
func (s *RestartService) answer(text string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		f, err := os.OpenFile(s.reply, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err == nil {
			f.WriteString(text)
			f.Close()
			return
		}
		if !errors.Is(err, syscall.ENXIO) || time.Now().After(deadline) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Close stops answering and removes the FIFOs and the command.
func (s *RestartService) Close() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	// Wake the reader up: an empty write-side open and close is an EOF.
	for {
		select {
		case <-s.done:
			for _, p := range []string{s.request, s.reply, s.script} {
				if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
					fmt.Fprintf(os.Stderr, "testbed: %v\n", err)
				}
			}
			return
		default:
		}
		if f, err := os.OpenFile(s.request, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
}
