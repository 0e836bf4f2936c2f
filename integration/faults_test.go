package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"google.golang.org/protobuf/proto"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
)

// Faults during restore. Each case ends with the workload either restored
// or cleanly cold-started as the handler says, the reason recorded, and
// nothing of the failed attempt left on the node (leftoversOf).

// TestCRIUKilledMidRestore: CRIU killed with SIGKILL while it restores.
// runc's restore fails, the shim deletes the half-restored container and
// cold-starts it (restore = auto).
func TestCRIUKilledMidRestore(t *testing.T) {
	// A CRIU restore of 768 MiB takes about a second here; kill it early.
	ev := restoreWithCRIUKilled(t, "rfault-criu", "0.3", "")
	if !strings.Contains(ev.Reason, "restor") {
		t.Fatalf("cold start's reason does not name the restore: %+v", ev)
	}
}

// TestCRIUKilledAfterResume: CRIU killed once the restored tree runs,
// before it answers runc (seen in CI with a 0.3 s kill). runc reports a failed
// restore over a container that runs, while the runc shim calls the task
// created; the shim kills it through the container's cgroup, so that the
// cold start's Delete does not refuse a running container.
func TestCRIUKilledAfterResume(t *testing.T) {
	ev := restoreWithCRIUKilled(t, "rfault-resumed", testbed.CRIUKillResumed, "")
	if !strings.Contains(ev.Reason, "restor") || !strings.Contains(ev.Reason, "left running in the container's cgroup") {
		t.Fatalf("cold start's reason does not say the restore failed and what the shim killed: %+v", ev)
	}
}

// TestShimKilledMidRestore: the shim killed with SIGKILL while CRIU
// restores (held back 3 s by the bed's CRIU wrapper). containerd reports the
// failed start and cleans the task up; nothing of the attempt may survive
// (runc runs with a parent-death signal, CRIU loses its runc), and the next
// container of the spec restores from the untouched checkpoint.
func TestShimKilledMidRestore(t *testing.T) {
	opts, store := handlerOptions(t, "")
	before := checkpointWarm(t, "rfault-shim-src", opts, store)
	const id = "rfault-shim-killed"
	var runErr error
	withBedFile(t, testbed.CRIUDelayFile, "3", func() {
		done := make(chan error, 1)
		go func() {
			_, err := bed.Ctr("run", "-d", "--runtime", containerdconfig.RuntimeType, "--runtime-config-path", opts,
				"--with-ns", "network:"+podNetns(t, id), statefulRef, id)
			done <- err
		}()
		killShimOnceCRIURuns(t, id)
		runErr = <-done
	})
	t.Cleanup(func() {
		bed.Ctr("tasks", "delete", "--force", id)
		bed.Ctr("containers", "delete", id)
	})
	if runErr == nil {
		t.Fatal("ctr run succeeded although its shim was killed mid-restore")
	}
	t.Logf("ctr run failed as expected: %v", runErr)
	waitNoLeftovers(t, id, 15*time.Second)
	if cks := checkpoints(t, store); len(cks) != 1 || cks[0].Err != nil {
		t.Fatalf("the checkpoint did not survive the killed restore intact: %+v", cks)
	}
	runStateful(t, id+"-again", opts)
	got := waitWarm(t, id+"-again", 0)
	if st := statusOf(t, id+"-again"); st["decision"] != "restored" || got.Count < before.Count {
		t.Fatalf("next container of the spec: status %v, answer %+v, checkpoint at %+v", st, got, before)
	}
}

// TestStoreRemovedMidRestore: the checkpoint's directory disappears after
// verification, while CRIU is about to read it (an admin's rm, an NFS
// export gone). CRIU's restore fails, and the container cold-starts with the
// reason recorded.
func TestStoreRemovedMidRestore(t *testing.T) {
	opts, store := handlerOptions(t, "")
	before := checkpointWarm(t, "rfault-store-src", opts, store)
	ck := checkpoints(t, store)[0]
	const id = "rfault-store-removed"
	withBedFile(t, testbed.CRIUDelayFile, "2", func() {
		go func() {
			time.Sleep(1 * time.Second)
			os.RemoveAll(ck.Dir)
		}()
		runStateful(t, id, opts)
	})
	got := waitWarm(t, id, 0)
	st := statusOf(t, id)
	if st["decision"] != "cold-start" || got.Count >= before.Count {
		t.Fatalf("restore from a removed checkpoint: status %v, answer %+v", st, got)
	}
	t.Logf("reason: %v", st["reason"])
	assertColdStartOnly(t, id)
}

// TestCRIUMissingOrTooOld: a handler whose CRIU is missing or older than
// the shim supports refuses restores (cold start, reason naming the binary
// and the version) and checkpoints (an error before anything is frozen or
// dumped; the container keeps running and the store stays empty).
func TestCRIUMissingOrTooOld(t *testing.T) {
	opts, store := handlerOptions(t, "")
	checkpointWarm(t, "rfault-criu-src", opts, store)
	// A CRIU 3.17 as the shim sees it: the answer of `criu swrk` to a
	// version request, sent as one message on the RPC socket (fd 3).
	answer, err := proto.Marshal(&rpc.CriuResp{Type: rpc.CriuReqType_VERSION.Enum(), Success: proto.Bool(true),
		Version: &rpc.CriuVersion{MajorNumber: proto.Int32(3), MinorNumber: proto.Int32(17)}})
	if err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(t.TempDir(), "criu")
	if err := os.WriteFile(old, fmt.Appendf(nil, "#!/bin/sh\ndd bs=4096 count=1 <&3 >/dev/null 2>&1\nprintf '%s' >&3\n", octal(answer)), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, criu, want string }{
		{"missing", "/nonexistent/sbin/criu", "/nonexistent/sbin/criu"},
		{"too-old", old, "3.17"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			bad := filepath.Join(dir, "handler.toml")
			os.WriteFile(bad, []byte(fmt.Sprintf("store = %q\ncontrol_dir = %q\ncriu_path = %q\n", store, controlDir, tc.criu)), 0o600)
			id := "rfault-criu-" + tc.name
			runStateful(t, id, bad)
			got := waitWarm(t, id, 0)
			st := statusOf(t, id)
			if reason := fmt.Sprint(st["reason"]); st["decision"] != "cold-start" || !strings.Contains(reason, tc.want) {
				t.Fatalf("restore with CRIU %s: status %v, answer %+v", tc.name, st, got)
			}
			_, err := bed.Ctr("tasks", "checkpoint", id)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("checkpoint with CRIU %s: want an error naming %q, got %v", tc.name, tc.want, err)
			}
			if n := len(checkpoints(t, store)); n != 1 {
				t.Fatalf("store holds %d checkpoints; the refused checkpoint must add none", n)
			}
			if after := waitWarm(t, id, got.Count+1); after.Child != "alive" || taskStatus(id) != "RUNNING" {
				t.Fatalf("container after the refused checkpoint: %+v, task %s", after, taskStatus(id))
			}
		})
	}
}

// octal writes b as printf's \NNN escapes.
func octal(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		fmt.Fprintf(&s, "\\%03o", c)
	}
	return s.String()
}

// withBedFile creates one of the bed's fault-injection files for the
// duration of f.
func withBedFile(t *testing.T, name, content string, f func()) {
	t.Helper()
	p := filepath.Join(bed.Dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(p)
	f()
}

// killShimOnceCRIURuns waits for the restore's CRIU of container id to start
// (held in the bed's wrapper) and kills the container's shim.
func killShimOnceCRIURuns(t *testing.T, id string) {
	t.Helper()
	waitCRIUStarted(t, id)
	time.Sleep(500 * time.Millisecond)
	pattern := "containerd-shim-snapshot-v2 .*-id " + id + "( |$)"
	if out, err := exec.Command("pkill", "-KILL", "-f", pattern).CombinedOutput(); err != nil {
		t.Fatalf("no shim of %s to kill: %v: %s", id, err, out)
	}
}

// leftoversOf lists what the bed still holds of container id: its mounts,
// cgroups (which hold any process CRIU restored), shim processes, control
// directory and sockets, plus any runc still working on it.
func leftoversOf(id string) []string {
	var left []string
	for _, l := range bed.Leftovers() {
		// The network namespace is the test's own (podNetns).
		if strings.Contains(l, id) && !strings.HasPrefix(l, "network namespace ") {
			left = append(left, l)
		}
	}
	out, _ := exec.Command("pgrep", "-a", "-f", "runc .* "+id+"( |$)").Output()
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			left = append(left, "process "+l)
		}
	}
	return left
}

// waitNoLeftovers waits until nothing of container id is left on the node.
func waitNoLeftovers(t *testing.T, id string, within time.Duration) {
	t.Helper()
	var left []string
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if left = leftoversOf(id); len(left) == 0 {
			return
		}
	}
	t.Fatalf("left behind by %s:\n%s", id, strings.Join(left, "\n"))
}

// assertColdStartOnly checks that a container that fell back runs exactly
// the cold start's two processes (the workload and its child): nothing of
// the failed restore joined it.
func assertColdStartOnly(t *testing.T, id string) {
	t.Helper()
	if out, _ := bed.Ctr("tasks", "ps", id); strings.Count(out, "\n") != 3 {
		t.Fatalf("want the cold start's two processes only, ctr tasks ps says:\n%s", out)
	}
}

// logOf returns the lines of containerd's log (shims included) that name
// container id.
func logOf(id string) string {
	var lines []string
	for _, l := range strings.Split(bed.Log(), "\n") {
		if strings.Contains(l, id) {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// TestContainerdRestartedWhileShimsRun: containerd restarts (an upgrade, a
// config change) while a restored container runs and while another
// container's restore is in flight. The running container keeps serving and
// is managed by the new containerd (checkpointed again through it); the
// restore in flight ends restored or cleanly cold-started, never half-way,
// and its container can be stopped and deleted.
func TestContainerdRestartedWhileShimsRun(t *testing.T) {
	opts, store := handlerOptions(t, "")
	before := checkpointWarm(t, "restart-src", opts, store)
	runStateful(t, "restart-running", opts)
	running := waitWarm(t, "restart-running", 0)
	if st := statusOf(t, "restart-running"); st["decision"] != "restored" {
		t.Fatalf("restart-running: %v", st)
	}

	const id = "restart-in-flight"
	var runErr error
	withBedFile(t, testbed.CRIUDelayFile, "3", func() {
		done := make(chan error, 1)
		go func() {
			// --null-io: ctr's own stdio FIFOs go when ctr loses containerd
			// (CRI's live in containerd's state and survive it).
			_, err := bed.Ctr("run", "-d", "--null-io", "--runtime", containerdconfig.RuntimeType, "--runtime-config-path", opts,
				"--with-ns", "network:"+podNetns(t, id), statefulRef, id)
			done <- err
		}()
		waitCRIUStarted(t, id)
		if err := bed.Restart(); err != nil {
			t.Fatalf("restarting containerd: %v", err)
		}
		runErr = <-done
	})
	t.Cleanup(func() {
		bed.Ctr("tasks", "kill", "-s", "SIGKILL", id)
		waitTaskStatus(t, id, "STOPPED")
		bed.Ctr("tasks", "delete", id)
		bed.Ctr("containers", "delete", id)
	})
	logOnFailure(t, id)
	t.Logf("ctr run across the restart: %v", runErr)

	if got := waitWarm(t, "restart-running", running.Count+1); got.Child != "alive" {
		t.Fatalf("restored container after containerd's restart: %+v", got)
	}
	if out, err := bed.Ctr("tasks", "checkpoint", "restart-running"); err != nil {
		t.Fatalf("checkpoint through the new containerd: %v: %s", err, out)
	}
	if n := len(checkpoints(t, store)); n != 2 {
		t.Fatalf("store holds %d checkpoints, want 2", n)
	}

	// The restore in flight: restored, or cold-started, and running.
	got := waitWarm(t, id, 0)
	st := statusOf(t, id)
	switch st["decision"] {
	case "restored":
		if got.Count < before.Count {
			t.Fatalf("restored %+v does not continue from %+v", got, before)
		}
	case "cold-start":
		if got.Count >= before.Count {
			t.Fatalf("cold start %+v carries restored state", got)
		}
		assertColdStartOnly(t, id)
	default:
		t.Fatalf("restore in flight across the restart: status %v", st)
	}
	t.Logf("restore in flight ended %v: %v", st["decision"], st["reason"])
}

// waitCRIUStarted waits until the restore's CRIU of container id runs (held
// in the bed's wrapper).
func waitCRIUStarted(t *testing.T, id string) {
	t.Helper()
	wrapper := filepath.Join(bed.Dir, "bin", "criu") + " swrk"
	shim := "containerd-shim-snapshot-v2 .*-id " + id + "( |$)"
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if runcCRIURunning(wrapper) && exec.Command("pgrep", "-f", shim).Run() == nil {
			return
		}
	}
	t.Fatalf("the restore of %s never reached CRIU", id)
}

// runcCRIURunning reports whether a CRIU that runc started runs through
// the bed's wrapper: the shim's own version query is a `criu swrk` too.
func runcCRIURunning(wrapper string) bool {
	out, _ := exec.Command("pgrep", "-f", wrapper).Output()
	for _, pid := range strings.Fields(string(out)) {
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut after ')'.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) > 1 {
			if comm, err := os.ReadFile("/proc/" + fields[1] + "/comm"); err == nil && strings.TrimSpace(string(comm)) == "runc" {
				return true
			}
		}
	}
	return false
}

// logOnFailure logs what containerd's log and the control directory say of
// container id if the test fails.
func logOnFailure(t *testing.T, id string) {
	t.Cleanup(func() {
		if t.Failed() {
			st, err := testbed.Status(id)
			t.Logf("status of %s: %v %v\ncontainerd's log of it:\n%s", id, st, err, logOf(id))
		}
	})
}

// TestCRIUKilledAfterFork: CRIU killed with SIGKILL once it has forked the
// processes it restores. Those processes hold CRIU's end of runc's socket,
// so only the shim's watch for CRIU's orphans makes runc return: the
// container must cold-start for a failed restore, not for restore_timeout.
// (Where the forked processes die with CRIU, as they did once in a few
// runs with "cgroupd: recv req error" in CRIU's log, runc returns by
// itself and the reason is runc's; the watch then had nothing to kill.)
func TestCRIUKilledAfterFork(t *testing.T) {
	ev := restoreWithCRIUKilled(t, "rfault-fork", testbed.CRIUKillForked, "restore_timeout = \"90s\"\n")
	if ev.ReasonCode == events.ReasonRestoreTimeout {
		t.Fatalf("the restore waited for restore_timeout after CRIU died past its fork: %+v", ev)
	}
	if !strings.Contains(ev.Reason, "restor") {
		t.Fatalf("the cold start's reason does not name the restore: %q", ev.Reason)
	}
}

// restoreWithCRIUKilled checkpoints a 768 MiB workload (container
// name-src), restores it as name-killed with the bed's CRIU killed as kill
// says (testbed.CRIUKillFile), and checks the outcome every such kill must
// have: a cold start (restore = auto) without the restored state, only the
// cold start's processes, and the checkpoint kept. It returns the restore
// event; it skips when the restore finished before the kill.
func restoreWithCRIUKilled(t *testing.T, name, kill, extraOptions string) events.Event {
	t.Helper()
	opts, store := handlerOptions(t, extraOptions)
	src, id := name+"-src", name+"-killed"
	runStateful(t, src, opts, "STATE_MB=768")
	before := waitWarm(t, src, 5)
	if out, err := bed.Ctr("tasks", "checkpoint", src); err != nil {
		t.Fatalf("checkpoint: %v: %s", err, out)
	}
	since := time.Now()
	withBedFile(t, testbed.CRIUKillFile, kill, func() { runStateful(t, id, opts, "STATE_MB=768") })
	if st := statusOf(t, id); st["decision"] == "restored" {
		t.Skipf("the restore finished before CRIU was killed (%s)", kill)
	}
	logOnFailure(t, id)
	got := waitWarm(t, id, 0)
	ev := restoreEvent(t, id, since)
	if ev.Outcome != events.OutcomeColdStart {
		t.Fatalf("restore event after CRIU was killed (%s): %+v", kill, ev)
	}
	t.Logf("cold start: %s", ev.Reason)
	if got.Count >= before.Count || got.Child != "alive" {
		t.Fatalf("cold start %+v carries restored state (checkpoint at %+v) or lost its child", got, before)
	}
	assertColdStartOnly(t, id)
	if n := len(checkpoints(t, store)); n != 1 {
		t.Fatalf("store holds %d checkpoints after a failed restore; want the one it had", n)
	}
	return ev
}
