package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

const (
	statefulRef = testbed.StatefulRef
	controlDir  = testbed.StatefulControlDir
	hostControl = "/run/containerd-shim-snapshot"
)

// handlerOptions writes a snapshot handler options file for ctr's
// --runtime-config-path and returns its path and the store directory.
func handlerOptions(t *testing.T, extra string) (path, store string) {
	t.Helper()
	dir := t.TempDir()
	store = filepath.Join(dir, "store")
	path = filepath.Join(dir, "handler.toml")
	body := fmt.Sprintf("store = %q\ncontrol_dir = %q\n%s", store, controlDir, extra)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, store
}

// runStateful starts the workload with ctr through the snapshot shim, in a
// network namespace given by path with loopback up, as CRI gives pods.
func runStateful(t *testing.T, id, optionsPath string, env ...string) {
	t.Helper()
	runStatefulWith(t, id, optionsPath, nil, env...)
}

// runStatefulWith is runStateful with more ctr run flags (e.g. --device).
func runStatefulWith(t *testing.T, id, optionsPath string, flags []string, env ...string) {
	t.Helper()
	netns := podNetns(t, id)
	args := []string{"run", "-d", "--runtime", containerdconfig.RuntimeType, "--runtime-config-path", optionsPath,
		"--with-ns", "network:" + netns}
	args = append(args, flags...)
	for _, e := range env {
		args = append(args, "--env", e)
	}
	out, err := bed.Ctr(append(args, statefulRef, id)...)
	t.Cleanup(func() {
		bed.Ctr("tasks", "kill", "-s", "SIGKILL", id)
		waitTaskStatus(t, id, "STOPPED")
		bed.Ctr("tasks", "delete", id)
		bed.Ctr("containers", "delete", id)
	})
	if err != nil {
		t.Fatalf("ctr run %s: %v: %s", id, err, out)
	}
}

// podNetns creates a network namespace for one test container.
func podNetns(t *testing.T, id string) string {
	t.Helper()
	path, remove, err := testbed.Netns(testbed.NetnsPrefix + id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remove)
	return path
}

// workloadState is one answer of the stateful workload.
type workloadState = testbed.StatefulAnswer

// query asks the workload over its TCP socket, from inside the container.
func query(t *testing.T, id string) (workloadState, error) { return queryOn(bed, id) }

// queryOn is query for a container of another containerd.
func queryOn(b *testbed.Bed, id string) (workloadState, error) {
	out, err := b.Ctr("tasks", "exec", "--exec-id", fmt.Sprintf("q%d", time.Now().UnixNano()), id, "nc", "127.0.0.1", "8080")
	if err != nil {
		return workloadState{}, err
	}
	return parseAnswer(out)
}

var parseAnswer = testbed.ParseStatefulAnswer

// waitWarm waits until the workload answers with at least count.
func waitWarm(t *testing.T, id string, count int) workloadState {
	t.Helper()
	return waitWarmOn(t, bed, id, count)
}

// waitWarmOn is waitWarm for a container of another containerd.
func waitWarmOn(t *testing.T, b *testbed.Bed, id string, count int) workloadState {
	t.Helper()
	var last workloadState
	var err error
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if last, err = queryOn(b, id); err == nil && last.Count >= count {
			return last
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("workload %s not warm: %+v, %v", id, last, err)
	return last
}

func statusOf(t *testing.T, id string) map[string]any {
	t.Helper()
	st, err := testbed.Status(id)
	if err != nil {
		t.Fatalf("no snapshot-status for %s: %v", id, err)
	}
	return st
}

func checkpoints(t *testing.T, store string) []*storage.Checkpoint {
	t.Helper()
	s, err := storage.Open(store)
	if err != nil {
		t.Fatal(err)
	}
	cks, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	return cks
}

// checkpointWarm starts a workload, waits until it is warm, checkpoints it
// with `ctr tasks checkpoint` (leave running) and returns its state just
// before the checkpoint.
func checkpointWarm(t *testing.T, id, optionsPath, store string) workloadState {
	t.Helper()
	runStateful(t, id, optionsPath)
	before := waitWarm(t, id, 30)
	if out, err := bed.Ctr("tasks", "checkpoint", id); err != nil {
		t.Fatalf("ctr tasks checkpoint: %v: %s", err, out)
	}
	if cks := checkpoints(t, store); len(cks) != 1 || cks[0].Err != nil {
		t.Fatalf("store holds %d checkpoints after one checkpoint: %+v", len(cks), cks)
	}
	if after := waitWarm(t, id, before.Count+1); after.Child != "alive" {
		t.Fatalf("source container stopped serving after a leave-running checkpoint: %+v", after)
	}
	return before
}

// TestRestoreFromStore: a container checkpointed into the store is restored
// into a new container of the same identity, with its memory, writable
// layer, listening socket and child process.
func TestRestoreFromStore(t *testing.T) {
	opts, store := handlerOptions(t, "")
	before := checkpointWarm(t, "ckpt-source", opts, store)

	runStateful(t, "ckpt-restored", opts)
	got := waitWarm(t, "ckpt-restored", 0)
	if got.Count < before.Count || got.File != "written-before-checkpoint" || got.Child != "alive" {
		t.Fatalf("restored workload %+v does not continue from %+v", got, before)
	}
	if st := statusOf(t, "ckpt-restored"); st["decision"] != "restored" {
		t.Fatalf("status: %v", st)
	}
	data, err := os.ReadFile(filepath.Join(hostControl, "ckpt-restored", "restore-complete"))
	if err != nil || !strings.Contains(string(data), `"container_id": "ckpt-restored"`) {
		t.Fatalf("restore-complete: %v: %s", err, data)
	}

	t.Run("different env cold-starts with the reason", func(t *testing.T) {
		runStateful(t, "ckpt-other-env", opts, "READY_AT=25")
		got := waitWarm(t, "ckpt-other-env", 0)
		st := statusOf(t, "ckpt-other-env")
		reason, _ := st["reason"].(string)
		if st["decision"] != "cold-start" || !strings.Contains(reason, "env") || !strings.Contains(reason, "READY_AT=25") {
			t.Fatalf("status: %v", st)
		}
		if got.Count >= before.Count {
			t.Fatalf("cold-started workload counts from %d, as if restored", got.Count)
		}
	})

	t.Run("restore required fails clearly", func(t *testing.T) {
		required := filepath.Join(t.TempDir(), "required.toml")
		os.WriteFile(required, []byte(fmt.Sprintf("store = %q\ncontrol_dir = %q\nrestore = \"required\"\n", store, controlDir)), 0o600)
		out, err := bed.Ctr("run", "-d", "--runtime", containerdconfig.RuntimeType, "--runtime-config-path", required,
			"--with-ns", "network:"+podNetns(t, "ckpt-required"), "--env", "READY_AT=26", statefulRef, "ckpt-required")
		t.Cleanup(func() { bed.Ctr("containers", "delete", "ckpt-required") })
		if err == nil || !strings.Contains(err.Error(), "restore = required") || !strings.Contains(err.Error(), "READY_AT=26") {
			t.Fatalf("want a restore = required failure naming the env, got %v: %s", err, out)
		}
	})

	t.Run("truncated manifest is refused under restore = required", func(t *testing.T) {
		ck := checkpoints(t, store)[0]
		manifest := filepath.Join(ck.Dir, "manifest.json")
		saved, err := os.ReadFile(manifest)
		if err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(manifest, saved, 0o600)
		os.WriteFile(manifest, saved[:len(saved)/2], 0o600)
		required := filepath.Join(t.TempDir(), "required.toml")
		os.WriteFile(required, []byte(fmt.Sprintf("store = %q\ncontrol_dir = %q\nrestore = \"required\"\ncheckpoint = %q\n", store, controlDir, ck.Name)), 0o600)
		out, err := bed.Ctr("run", "-d", "--runtime", containerdconfig.RuntimeType, "--runtime-config-path", required,
			"--with-ns", "network:"+podNetns(t, "ckpt-truncated"), statefulRef, "ckpt-truncated")
		t.Cleanup(func() { bed.Ctr("containers", "delete", "ckpt-truncated") })
		if err == nil || !strings.Contains(err.Error(), "manifest.json") {
			t.Fatalf("want an error naming the manifest, got %v: %s", err, out)
		}
	})

	t.Run("flipped byte in a pages image falls back to cold start", func(t *testing.T) {
		ck := checkpoints(t, store)[0]
		pages, _ := filepath.Glob(filepath.Join(ck.Dir, "checkpoint", "pages-*.img"))
		if len(pages) == 0 {
			t.Fatalf("no pages image in %s", ck.Dir)
		}
		restoreByte := flipByte(t, pages[0])
		defer restoreByte()
		runStateful(t, "ckpt-corrupt", opts)
		got := waitWarm(t, "ckpt-corrupt", 0)
		st := statusOf(t, "ckpt-corrupt")
		if st["decision"] != "cold-start" || !strings.Contains(fmt.Sprint(st["reason"]), "verification") || got.Count >= before.Count {
			t.Fatalf("corrupt checkpoint: status %v, workload %+v", st, got)
		}
	})

	t.Run("the container's opt-out wins over restore = required", func(t *testing.T) {
		required := filepath.Join(t.TempDir(), "required.toml")
		os.WriteFile(required, []byte(fmt.Sprintf("store = %q\ncontrol_dir = %q\nrestore = \"required\"\n", store, controlDir)), 0o600)
		out, err := bed.Ctr("run", "-d", "--runtime", containerdconfig.RuntimeType, "--runtime-config-path", required,
			"--with-ns", "network:"+podNetns(t, "ckpt-opted-out"), "--annotation", "gpusnap.io/restore=never", statefulRef, "ckpt-opted-out")
		t.Cleanup(func() {
			bed.Ctr("tasks", "kill", "-s", "SIGKILL", "ckpt-opted-out")
			waitTaskStatus(t, "ckpt-opted-out", "STOPPED")
			bed.Ctr("tasks", "delete", "ckpt-opted-out")
			bed.Ctr("containers", "delete", "ckpt-opted-out")
		})
		if err != nil {
			t.Fatalf("ctr run: %v: %s", err, out)
		}
		got := waitWarm(t, "ckpt-opted-out", 0)
		st := statusOf(t, "ckpt-opted-out")
		if st["decision"] != "cold-start" || !strings.Contains(fmt.Sprint(st["reason"]), "opted out") || got.Count >= before.Count {
			t.Fatalf("opted-out container: status %v, workload %+v", st, got)
		}
	})

	t.Run("world-writable store is refused and left as it is", func(t *testing.T) {
		if err := os.Chmod(store, 0o777); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(store, 0o700)
		runStateful(t, "ckpt-untrusted", opts)
		got := waitWarm(t, "ckpt-untrusted", 0)
		st := statusOf(t, "ckpt-untrusted")
		if reason := fmt.Sprint(st["reason"]); st["decision"] != "cold-start" || !strings.Contains(reason, "writable by group or others") || !strings.Contains(reason, store) || got.Count >= before.Count {
			t.Fatalf("untrusted store: status %v, workload %+v", st, got)
		}
		if fi, err := os.Stat(store); err != nil || fi.Mode().Perm() != 0o777 || len(checkpointsIfAny(store)) != 1 {
			t.Fatalf("the shim changed the refused store: %v %v %v", fi.Mode(), err, checkpointsIfAny(store))
		}
	})
}

// flipByte inverts one byte in the middle of a file and returns the undo.
func flipByte(t *testing.T, path string) func() {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	off := st.Size() / 2
	b := make([]byte, 1)
	f.ReadAt(b, off)
	f.WriteAt([]byte{^b[0]}, off)
	return func() {
		g, _ := os.OpenFile(path, os.O_RDWR, 0)
		g.WriteAt(b, off)
		g.Close()
	}
}

// TestCtrContainerCheckpointRestore: containerd's own checkpoint image path,
// `ctr c checkpoint --task [--rw] --image` then `ctr c restore --live [--rw]`
// works through this shim (an explicit CreateTaskRequest.Checkpoint). Without
// --rw, ctr keeps no writable layer: the container's file comes back from the
// rootfs diff the shim put into the task checkpoint itself.
func TestCtrContainerCheckpointRestore(t *testing.T) {
	for _, rw := range []bool{true, false} {
		t.Run(fmt.Sprintf("rw=%v", rw), func(t *testing.T) { ctrCheckpointRestore(t, rw) })
	}
}

func ctrCheckpointRestore(t *testing.T, rw bool) {
	id := fmt.Sprintf("ctr-image-cr-%v", rw)
	ref := "docker.io/library/checkpoint-" + id + ":1"
	flags := []string{}
	if rw {
		flags = []string{"--rw"}
	}
	opts := filepath.Join(t.TempDir(), "empty.toml")
	os.WriteFile(opts, nil, 0o600)
	runStateful(t, id, opts)
	before := waitWarm(t, id, 30)
	if out, err := bed.Ctr(append(append([]string{"containers", "checkpoint", "--task"}, flags...), "--image", id, ref)...); err != nil {
		t.Fatalf("ctr c checkpoint: %v: %s", err, out)
	}
	t.Cleanup(func() { bed.Ctr("images", "rm", ref) })
	bed.Ctr("tasks", "kill", "-s", "SIGKILL", id)
	waitTaskStatus(t, id, "STOPPED")
	restore := append(append([]string{"containers", "restore", "--live"}, flags...), id, ref)
	for _, args := range [][]string{{"tasks", "delete", id}, {"containers", "delete", id}, restore} {
		if out, err := bed.Ctr(args...); err != nil {
			t.Fatalf("ctr %v: %v: %s", args, err, out)
		}
	}
	if info, _ := bed.Ctr("containers", "info", id); !strings.Contains(info, containerdconfig.RuntimeType) {
		t.Fatalf("restored container does not run on the snapshot shim: %s", info)
	}
	got := waitWarm(t, id, 0)
	if got.Count < before.Count || got.File != "written-before-checkpoint" || got.Child != "alive" {
		t.Fatalf("restored %+v does not continue from %+v", got, before)
	}
}

// TestCheckpointStoreFull: a store that fills up mid-checkpoint gives a
// clean error, publishes nothing, and the container keeps running.
func TestCheckpointStoreFull(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	os.MkdirAll(store, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", store).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", store).Run() })
	opts := filepath.Join(t.TempDir(), "full.toml")
	os.WriteFile(opts, []byte(fmt.Sprintf("store = %q\ncontrol_dir = %q\n", store, controlDir)), 0o600)
	const id = "ckpt-store-full"
	runStateful(t, id, opts)
	before := waitWarm(t, id, 5)
	out, err := bed.Ctr("tasks", "checkpoint", id)
	if err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("want a no-space error, got %v: %s", err, out)
	}
	if entries, _ := os.ReadDir(store); len(entries) != 0 {
		t.Fatalf("store not empty after a failed checkpoint: %v", entries)
	}
	if got := waitWarm(t, id, before.Count+1); got.Child != "alive" {
		t.Fatalf("container not serving after the failed checkpoint: %+v", got)
	}
}

// TestCheckpointExit: `ctr tasks checkpoint --exit` publishes the checkpoint
// and stops the container, and a new container restores from it.
func TestCheckpointExit(t *testing.T) {
	opts, store := handlerOptions(t, "")
	const id = "ckpt-exit"
	runStateful(t, id, opts)
	before := waitWarm(t, id, 30)
	if out, err := bed.Ctr("tasks", "checkpoint", "--exit", id); err != nil {
		t.Fatalf("ctr tasks checkpoint --exit: %v: %s", err, out)
	}
	waitTaskStatus(t, id, "STOPPED")
	if n := len(checkpoints(t, store)); n != 1 {
		t.Fatalf("store holds %d checkpoints", n)
	}
	runStateful(t, "ckpt-exit-restored", opts)
	if got := waitWarm(t, "ckpt-exit-restored", 0); got.Count < before.Count {
		t.Fatalf("restored %+v does not continue from %+v", got, before)
	}
}

// TestCRIUKilledMidCheckpoint: CRIU killed with SIGKILL while it dumps
// leaves no visible checkpoint and the container running.
func TestCRIUKilledMidCheckpoint(t *testing.T) {
	opts, store := handlerOptions(t, "")
	const id = "ckpt-criu-killed"
	runStateful(t, id, opts, "STATE_MB=768")
	before := waitWarm(t, id, 5)
	trigger := filepath.Join(bed.Dir, testbed.CRIUKillFile)
	if err := os.WriteFile(trigger, []byte("0.3"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := bed.Ctr("tasks", "checkpoint", id)
	os.Remove(trigger)
	if err == nil {
		t.Skip("the dump finished within 0.3 s, before CRIU was killed")
	}
	t.Logf("checkpoint failed as expected: %v", err)
	if cks := checkpoints(t, store); len(cks) != 0 {
		t.Fatalf("a checkpoint is visible after CRIU was killed: %s", cks[0].Name)
	}
	if entries, _ := os.ReadDir(store); len(entries) != 0 {
		t.Fatalf("store holds leftovers: %v", entries)
	}
	if got := waitWarm(t, id, before.Count+1); got.Child != "alive" {
		t.Fatalf("container not serving after the killed checkpoint: %+v", got)
	}
	if s := taskStatus(id); s != "RUNNING" {
		t.Fatalf("task status %s after the killed checkpoint", s)
	}
}

// TestConcurrentCheckpointsOfOneIdentity: two containers of one identity
// checkpointed at the same moment into one store leave only complete,
// verifiable checkpoints (one per generation) and no staging leftovers.
func TestConcurrentCheckpointsOfOneIdentity(t *testing.T) {
	opts, store := handlerOptions(t, "")
	ids := []string{"ckpt-twin-a", "ckpt-twin-b"}
	for _, id := range ids {
		runStateful(t, id, opts)
	}
	for _, id := range ids {
		waitWarm(t, id, 5)
	}
	errs := make(chan error, len(ids))
	for _, id := range ids {
		go func() {
			_, err := bed.Ctr("tasks", "checkpoint", id)
			errs <- err
		}()
	}
	for range ids {
		if err := <-errs; err != nil {
			t.Fatalf("checkpoint: %v", err)
		}
	}
	cks := checkpoints(t, store)
	if len(cks) == 0 || len(cks) > 2 {
		t.Fatalf("%d checkpoints after two concurrent checkpoints", len(cks))
	}
	for _, ck := range cks {
		if err := ck.Verify(context.Background(), nil); err != nil {
			t.Fatalf("checkpoint %s: %v", ck.Name, err)
		}
	}
	entries, _ := os.ReadDir(store)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("staging leftover %s", e.Name())
		}
	}
	t.Logf("%d checkpoint(s) published: %d concurrent writer(s) lost the race for generation 1", len(cks), 2-len(cks))
}

// TestRestoreTimeout: a restore that outlives restore_timeout (CRIU held
// back by a slow "disk") is killed, cleaned up and replaced by a cold start
// whose status names the setting.
func TestRestoreTimeout(t *testing.T) {
	opts, store := handlerOptions(t, "")
	before := checkpointWarm(t, "timeout-source", opts, store)
	slow := filepath.Join(t.TempDir(), "slow.toml")
	os.WriteFile(slow, []byte(fmt.Sprintf("store = %q\ncontrol_dir = %q\nrestore_timeout = \"2s\"\n", store, controlDir)), 0o600)

	delay := filepath.Join(bed.Dir, testbed.CRIUDelayFile)
	if err := os.WriteFile(delay, []byte("6"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	runStateful(t, "timeout-restored", slow)
	os.Remove(delay)
	took := time.Since(start)
	got := waitWarm(t, "timeout-restored", 0)
	st := statusOf(t, "timeout-restored")
	if reason, _ := st["reason"].(string); st["decision"] != "cold-start" || !strings.Contains(reason, "restore_timeout of 2s exceeded") {
		t.Fatalf("status %v", st)
	}
	if got.Count >= before.Count || got.Child != "alive" {
		t.Fatalf("cold start %+v looks restored (checkpoint at %+v) or lost its child", got, before)
	}
	if took > 5*time.Second {
		t.Fatalf("ctr run took %s: the restore was not cut at 2 s", took)
	}
	if out, _ := bed.Ctr("tasks", "ps", "timeout-restored"); strings.Count(out, "\n") != 3 {
		t.Fatalf("want the cold start's two processes only, ctr tasks ps says:\n%s", out)
	}
}

// TestCheckpointWithOpenConnection: a workload holding a connected TCP
// socket is checkpointed without --tcp-established (CRIU is told to leave
// such connections out) and restored into a new container, where that
// connection is gone but everything else continues.
func TestCheckpointWithOpenConnection(t *testing.T) {
	opts, store := handlerOptions(t, "")
	runStateful(t, "held-source", opts, "HOLD_CONNECTION=1")
	before := waitWarm(t, "held-source", 30)
	if out, err := bed.Ctr("tasks", "checkpoint", "held-source"); err != nil {
		t.Fatalf("checkpoint of a workload with a connected socket: %v: %s", err, out)
	}
	if cks := checkpoints(t, store); len(cks) != 1 {
		t.Fatalf("%d checkpoints published", len(cks))
	}
	runStateful(t, "held-restored", opts, "HOLD_CONNECTION=1")
	got := waitWarm(t, "held-restored", 0)
	if st := statusOf(t, "held-restored"); st["decision"] != "restored" || got.Count < before.Count {
		t.Fatalf("not restored: status %v, answer %+v, before %+v", st, got, before)
	}
}

// TestShimKilledMidCheckpoint: the shim killed with SIGKILL while CRIU
// dumps. containerd then cleans the task up itself (it runs the shim's
// delete, which stops the container: a container without its shim cannot be
// managed). What must hold: no checkpoint becomes visible, prune leaves the
// store empty (a writer killed later, while staging, leaves a staging
// directory: storage's TestKilledWriter), and the next container of the same
// spec starts cleanly. The bed's teardown checks that no mount, cgroup or
// process is left behind.
func TestShimKilledMidCheckpoint(t *testing.T) {
	opts, store := handlerOptions(t, "")
	const id = "ckpt-shim-killed"
	runStateful(t, id, opts)
	waitWarm(t, id, 5)
	delay := filepath.Join(bed.Dir, testbed.CRIUDelayFile)
	if err := os.WriteFile(delay, []byte("2"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(delay)
	done := make(chan error, 1)
	go func() { _, err := bed.Ctr("tasks", "checkpoint", id); done <- err }()
	time.Sleep(1 * time.Second)
	out, err := exec.Command("pkill", "-KILL", "-f", "containerd-shim-snapshot-v2 .*-id "+id+"( |$)").CombinedOutput()
	if err != nil {
		t.Fatalf("no shim of %s to kill: %v: %s", id, err, out)
	}
	if err := <-done; err == nil {
		t.Fatal("checkpoint succeeded although its shim was killed")
	}
	os.Remove(delay)
	waitTaskStatus(t, id, "STOPPED")
	time.Sleep(3 * time.Second) // let the orphaned runc/CRIU finish or fail
	if cks := checkpointsIfAny(store); len(cks) != 0 {
		t.Fatalf("visible checkpoints after the shim was killed: %v", cks)
	}
	if out, err := exec.Command(cliPath, "--store", store, "prune", "--keep", "1", "--stale", "0s").CombinedOutput(); err != nil {
		t.Fatalf("gpusnap prune: %v: %s", err, out)
	}
	if entries, _ := os.ReadDir(store); len(entries) != 0 {
		t.Fatalf("store holds leftovers after prune: %v", entries)
	}
	bed.Ctr("tasks", "delete", id)
	bed.Ctr("containers", "delete", id)
	runStateful(t, id+"-again", opts)
	if got := waitWarm(t, id+"-again", 0); got.Child != "alive" {
		t.Fatalf("next container of the spec: %+v", got)
	}
}
