package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
)

// result is what a client saw of one command.
type result struct {
	Stdout, Stderr string
	Code           int
}

// short names a runtime in container ids.
func short(runtime string) string {
	if runtime == containerdconfig.RuntimeType {
		return "snap"
	}
	return "runc"
}

func containerID(t *testing.T, runtime string) string {
	name := strings.ToLower(regexp.MustCompile(`[^a-zA-Z0-9]+`).ReplaceAllString(t.Name(), "-"))
	return name + "-" + short(runtime)
}

// ctrRun runs `ctr run --rm` in the foreground and returns what it printed
// and its exit code (ctr exits with the container's exit status).
func ctrRun(t *testing.T, runtime, stdin string, flags []string, id string, args ...string) result {
	t.Helper()
	cmdArgs := append([]string{"run", "--rm", "--runtime", runtime}, flags...)
	cmdArgs = append(cmdArgs, busyboxRef, id)
	cmd := bed.CtrCmd(append(cmdArgs, args...)...)
	return runResult(t, cmd, stdin)
}

func runResult(t *testing.T, cmd *exec.Cmd, stdin string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	r := result{Stdout: stdout.String(), Stderr: dropClientWarnings(stderr.String())}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.Code = exit.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
	}
	return r
}

// sameOnBoth runs scenario on runc and on the snapshot shim and fails if the
// results differ; it returns runc's result for further checks.
func sameOnBoth(t *testing.T, scenario func(t *testing.T, runtime string) result) result {
	t.Helper()
	var got [2]result
	for i, rt := range runtimes {
		got[i] = scenario(t, rt)
	}
	if got[0] != got[1] {
		t.Fatalf("runtimes differ:\n  %s: %+v\n  %s: %+v", runtimes[0], got[0], runtimes[1], got[1])
	}
	return got[0]
}

func TestCtrExitCodes(t *testing.T) {
	for _, code := range []int{0, 1, 3, 42} {
		r := sameOnBoth(t, func(t *testing.T, rt string) result {
			return ctrRun(t, rt, "", nil, containerID(t, rt), "sh", "-c", fmt.Sprintf("exit %d", code))
		})
		if r.Code != code {
			t.Errorf("exit %d: ctr returned %d", code, r.Code)
		}
	}
}

func TestCtrStdoutStderr(t *testing.T) {
	r := sameOnBoth(t, func(t *testing.T, rt string) result {
		return ctrRun(t, rt, "", nil, containerID(t, rt), "sh", "-c", "echo to-stdout; echo to-stderr >&2; echo more-stdout")
	})
	if r.Stdout != "to-stdout\nmore-stdout\n" || r.Stderr != "to-stderr\n" {
		t.Fatalf("got stdout %q stderr %q", r.Stdout, r.Stderr)
	}
}

func TestCtrStdin(t *testing.T) {
	const input = "line one\nline two\n"
	r := sameOnBoth(t, func(t *testing.T, rt string) result {
		// ctr does not close the container's stdin at EOF: read exactly two lines.
		return ctrRun(t, rt, input, nil, containerID(t, rt), "sh", "-c", "read a; read b; echo \"$a\"; echo \"$b\"; echo done")
	})
	if r.Stdout != input+"done\n" {
		t.Fatalf("stdin was not passed through: %q", r.Stdout)
	}
}

// TestCtrTTY runs ctr under script(1), which gives it a pseudo-terminal.
func TestCtrTTY(t *testing.T) {
	r := sameOnBoth(t, func(t *testing.T, rt string) result {
		ctr := fmt.Sprintf("ctr --address %s --namespace %s run --rm -t --runtime %s %s %s tty",
			bed.Socket, bed.Namespace, rt, busyboxRef, containerID(t, rt))
		res := runResult(t, exec.Command("script", "-qefc", ctr, "/dev/null"), "")
		res.Stdout = regexp.MustCompile(`/dev/pts/\d+`).FindString(res.Stdout)
		return res
	})
	if r.Stdout == "" || r.Code != 0 {
		t.Fatalf("container did not get a terminal: %+v", r)
	}
}

// startDetached runs a long-lived container and registers its removal.
func startDetached(t *testing.T, rt, id string, args ...string) {
	t.Helper()
	out, err := bed.Ctr(append([]string{"run", "-d", "--runtime", rt, busyboxRef, id}, args...)...)
	if err != nil {
		t.Fatalf("ctr run -d: %v: %s", err, out)
	}
	t.Cleanup(func() {
		bed.Ctr("tasks", "kill", "-s", "SIGKILL", id)
		waitTaskStatus(t, id, "STOPPED")
		bed.Ctr("tasks", "delete", id)
		bed.Ctr("containers", "delete", id)
	})
	waitTaskStatus(t, id, "RUNNING")
}

// taskStatus is the STATUS column of `ctr tasks list` for one task.
func taskStatus(id string) string {
	_, status := taskRow(id)
	return status
}

// taskRow is the PID and STATUS columns of `ctr tasks list` for one task;
// empty when it is not listed.
func taskRow(id string) (pid, status string) {
	out, _ := bed.Ctr("tasks", "list")
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == id {
			return f[1], f[2]
		}
	}
	return "", ""
}

func waitTaskStatus(t *testing.T, id, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if taskStatus(id) == want || (want == "STOPPED" && taskStatus(id) == "") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("task %s: status %q, want %s", id, taskStatus(id), want)
}

func TestCtrExec(t *testing.T) {
	r := sameOnBoth(t, func(t *testing.T, rt string) result {
		id := containerID(t, rt)
		startDetached(t, rt, id, "sleep", "600")
		res := runResult(t, bed.CtrCmd("tasks", "exec", "--exec-id", "probe", id, "sh", "-c", "echo in-exec; cat /proc/1/cmdline; exit 5"), "")
		res.Stdout = strings.ReplaceAll(res.Stdout, "\x00", " ")
		return res
	})
	if r.Code != 5 || r.Stdout != "in-exec\nsleep 600 " {
		t.Fatalf("exec: %+v", r)
	}
}

func TestCtrKillSignals(t *testing.T) {
	cases := []struct {
		signal string
		code   int
		stdout string
	}{
		{"SIGTERM", 7, "ready\ngot TERM\n"},
		{"SIGUSR1", 8, "ready\ngot USR1\n"},
		{"SIGKILL", 137, "ready\n"},
	}
	for _, c := range cases {
		t.Run(c.signal, func(t *testing.T) {
			r := sameOnBoth(t, func(t *testing.T, rt string) result {
				id := containerID(t, rt)
				script := `trap 'echo got TERM; exit 7' TERM; trap 'echo got USR1; exit 8' USR1; echo ready; while true; do sleep 0.05; done`
				cmd := bed.CtrCmd("run", "--rm", "--runtime", rt, busyboxRef, id, "sh", "-c", script)
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				waitFor(t, func() bool { return strings.Contains(stdout.String(), "ready") })
				if out, err := bed.Ctr("tasks", "kill", "--signal", c.signal, id); err != nil {
					t.Fatalf("kill: %v: %s", err, out)
				}
				err := cmd.Wait()
				res := result{Stdout: stdout.String(), Stderr: dropClientWarnings(stderr.String())}
				var exit *exec.ExitError
				if errors.As(err, &exit) {
					res.Code = exit.ExitCode()
				}
				return res
			})
			if r.Code != c.code || r.Stdout != c.stdout {
				t.Fatalf("kill %s: %+v, want code %d stdout %q", c.signal, r, c.code, c.stdout)
			}
		})
	}
}

// dropClientWarnings removes ctr's own cgroup v1 deprecation notice, which
// is about this machine, not about the container.
func dropClientWarnings(stderr string) string {
	var kept []string
	for _, line := range strings.SplitAfter(stderr, "\n") {
		if !strings.Contains(line, `level=warning msg="DEPRECATION`) {
			kept = append(kept, line)
		}
	}
	return strings.Join(kept, "")
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCtrPauseResume(t *testing.T) {
	r := sameOnBoth(t, func(t *testing.T, rt string) result {
		id := containerID(t, rt)
		startDetached(t, rt, id, "sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.02; done")
		var res result
		if out, err := bed.Ctr("tasks", "pause", id); err != nil {
			t.Fatalf("pause: %v: %s", err, out)
		}
		res.Stdout += taskStatus(id) + " "
		before, _ := bed.Ctr("tasks", "exec", "--exec-id", "n1", id, "cat", "/tmp/n")
		time.Sleep(300 * time.Millisecond)
		if out, err := bed.Ctr("tasks", "resume", id); err != nil {
			t.Fatalf("resume: %v: %s", err, out)
		}
		res.Stdout += taskStatus(id)
		waitFor(t, func() bool {
			after, _ := bed.Ctr("tasks", "exec", "--exec-id", "n2", id, "cat", "/tmp/n")
			return after != before
		})
		return res
	})
	if r.Stdout != "PAUSED RUNNING" {
		t.Fatalf("states: %q", r.Stdout)
	}
}

func TestCtrMetrics(t *testing.T) {
	r := sameOnBoth(t, func(t *testing.T, rt string) result {
		id := containerID(t, rt)
		startDetached(t, rt, id, "sleep", "600")
		out, err := bed.Ctr("tasks", "metrics", id)
		if err != nil {
			t.Fatalf("metrics: %v: %s", err, out)
		}
		// Values differ between containers; which core metrics exist must not.
		var present []string
		for _, name := range []string{"memory.usage_in_bytes", "memory.limit_in_bytes", "cpuacct.usage", "pids.current"} {
			if regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s+\d+`).MatchString(out) {
				present = append(present, name)
			}
		}
		return result{Stdout: strings.Join(present, " ")}
	})
	if r.Stdout != "memory.usage_in_bytes memory.limit_in_bytes cpuacct.usage pids.current" {
		t.Errorf("metrics: got %q", r.Stdout)
	}
}

func TestCtrDelete(t *testing.T) {
	sameOnBoth(t, func(t *testing.T, rt string) result {
		id := containerID(t, rt)
		out, err := bed.Ctr("run", "-d", "--runtime", rt, busyboxRef, id, "true")
		if err != nil {
			t.Fatalf("run: %v: %s", err, out)
		}
		waitTaskStatus(t, id, "STOPPED")
		if out, err := bed.Ctr("tasks", "delete", id); err != nil {
			t.Fatalf("task delete: %v: %s", err, out)
		}
		if out, err := bed.Ctr("containers", "delete", id); err != nil {
			t.Fatalf("container delete: %v: %s", err, out)
		}
		if out, _ := bed.Ctr("containers", "list", "-q"); strings.Contains(out, id) {
			t.Fatalf("container %s still listed", id)
		}
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory", bed.Namespace, id)); err == nil {
			t.Fatalf("cgroup of %s left behind", id)
		}
		if _, err := os.Stat(filepath.Join(bed.Dir, "state", "io.containerd.runtime.v2.task", bed.Namespace, id)); err == nil {
			t.Fatalf("bundle of %s left behind", id)
		}
		return result{}
	})
}

// TestSnapshotRuntimeIsUsed guards the comparisons above against a bed that
// silently runs runc for both runtimes.
func TestSnapshotRuntimeIsUsed(t *testing.T) {
	id := "uses-snapshot-shim"
	startDetached(t, containerdconfig.RuntimeType, id, "sleep", "600")
	info, err := bed.Ctr("containers", "info", id)
	if err != nil || !strings.Contains(info, containerdconfig.RuntimeType) {
		t.Fatalf("container runtime: %v: %s", err, info)
	}
	if !shimRunning(testbed.ShimBinary, bed.Namespace) {
		t.Fatalf("no %s process serves namespace %s", testbed.ShimBinary, bed.Namespace)
	}
}

// shimRunning reports whether a process of the named shim binary serves ns.
func shimRunning(binary, ns string) bool {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmdline, _ := os.ReadFile(filepath.Join(d, "cmdline"))
		args := strings.Split(string(cmdline), "\x00")
		if len(args) > 0 && filepath.Base(args[0]) == binary && strings.Contains(string(cmdline), "-namespace\x00"+ns+"\x00") {
			return true
		}
	}
	return false
}

// TestBadOptionsRejected: a handler options file with an unknown key or a bad
// value fails the container with an error naming the key and the file.
func TestBadOptionsRejected(t *testing.T) {
	cases := map[string]string{
		"unknown key": "stor = \"/var/lib/x\"\n",
		"bad value":   "restore = \"sometimes\"\n",
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "handler.toml")
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			id := containerID(t, containerdconfig.RuntimeType)
			r := ctrRun(t, containerdconfig.RuntimeType, "", []string{"--runtime-config-path", path}, id, "true")
			key := strings.SplitN(body, " ", 2)[0]
			if r.Code == 0 || !strings.Contains(r.Stderr, path) || !strings.Contains(r.Stderr, key) {
				t.Fatalf("want a failure naming %s and %q, got %+v", path, key, r)
			}
			bed.Ctr("containers", "delete", id)
		})
	}
}
