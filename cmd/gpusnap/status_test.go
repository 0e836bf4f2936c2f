package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
)

// eventsNow is "now" for the status tests.
var eventsNow = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// newEventsDir records what a node's shims would have: a checkpoint two
// days ago, then a restore, a cold start and a failure in the last day.
func newEventsDir(t *testing.T) string {
	t.Helper()
	saved := statusNow
	statusNow = func() time.Time { return eventsNow }
	t.Cleanup(func() { statusNow = saved })

	dir := filepath.Join(t.TempDir(), "events")
	const ck = "0ae3c1d2e4f5a6b7-g000001"
	w := events.Writer{Dir: dir, Now: func() time.Time { return eventsNow }}
	for _, e := range []events.Event{
		{Time: eventsNow.Add(-48 * time.Hour), Kind: events.KindCheckpoint, Outcome: events.OutcomeCheckpointed,
			ContainerID: "web-0", Namespace: "k8s.io", Checkpoint: ck, BytesWritten: 3 << 30,
			Phases: map[string]float64{"cuda_checkpoint": 2.5, "criu_dump": 14.25, "rootfs_diff": 0.125, "copy_images": 0.5}},
		{Time: eventsNow.Add(-3 * time.Hour), Kind: events.KindRestore, Outcome: events.OutcomeRestored,
			ContainerID: "web-1", Namespace: "k8s.io", Checkpoint: ck, BytesRead: 3 << 30,
			Phases: map[string]float64{"lookup": 0.03, "verify": 0.002, "rootfs_diff": 0.01, "criu_restore": 3.51, "cuda_restore": 1.91, "cuda_unlock": 0.05}},
		{Time: eventsNow.Add(-2 * time.Hour), Kind: events.KindRestore, Outcome: events.OutcomeColdStart,
			ContainerID: "db-1", Namespace: "k8s.io", Reason: "lookup: checkpoint " + ck + " does not suit this node: kernel: checkpoint has 6.8.0, node has 6.18.44\n(major.minor must match)",
			ReasonCode: events.ReasonNodeMismatch, Phases: map[string]float64{"lookup": 0.25}},
		{Time: eventsNow.Add(-time.Hour), Kind: events.KindRestore, Outcome: events.OutcomeFailed,
			ContainerID: "web-2", Namespace: "k8s.io", Checkpoint: ck,
			Reason: "restore from checkpoint " + ck + " failed: criu_restore: exit status 1", ReasonCode: events.ReasonRestoreFailed,
			Phases: map[string]float64{"lookup": 0.03, "verify": 0.5, "criu_restore": 0.75}},
	} {
		if err := w.Record(e); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestStatusJSON(t *testing.T) {
	dir := newEventsDir(t)
	out, _ := mustRun(t, exitOK, "status", "--events-dir", dir, "--json")
	got := decode[[]statusEntry](t, out)
	var ids []string
	for _, e := range got {
		ids = append(ids, e.ContainerID)
	}
	// Newest first, and the default window of 24h leaves out the checkpoint.
	if strings.Join(ids, " ") != "web-2 db-1 web-1" {
		t.Fatalf("status --json containers %v, want web-2 db-1 web-1", ids)
	}
	if e := got[0]; e.Outcome != events.OutcomeFailed || e.ReasonCode != events.ReasonRestoreFailed || e.TotalSeconds != 1.28 ||
		e.Phases["criu_restore"] != 0.75 || !e.Time.Equal(eventsNow.Add(-time.Hour)) {
		t.Errorf("newest entry %+v", e)
	}
	if e := got[1]; e.ReasonCode != events.ReasonNodeMismatch || !strings.Contains(e.Reason, "\n(major.minor") {
		t.Errorf("cold start entry %+v", e)
	}
	if e := got[2]; e.TotalSeconds != 5.512 || e.BytesRead != 3<<30 {
		t.Errorf("restored entry %+v", e)
	}

	out, _ = mustRun(t, exitOK, "--json", "status", "--events-dir", dir, "--since", "7d")
	if got := decode[[]statusEntry](t, out); len(got) != 4 || got[3].Kind != events.KindCheckpoint || got[3].BytesWritten != 3<<30 {
		t.Errorf("status --since 7d = %+v", got)
	}
	out, _ = mustRun(t, exitOK, "status", "--events-dir", dir, "--since", "90m", "--json")
	if got := decode[[]statusEntry](t, out); len(got) != 1 {
		t.Errorf("status --since 90m = %+v", got)
	}
	out, _ = mustRun(t, exitOK, "status", "--events-dir", filepath.Join(dir, "none"), "--json")
	if got := decode[[]statusEntry](t, out); len(got) != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("status --json of a missing directory = %q", out)
	}
}

func TestStatusHuman(t *testing.T) {
	dir := newEventsDir(t)
	out, _ := mustRun(t, exitOK, "status", "--events-dir", dir)
	contains(t, "status", out,
		"since "+formatTime(eventsNow.Add(-24*time.Hour))+": 3 restores (1 restored, 1 cold-start, 1 failed), 0 checkpoints\n",
		"TIME", "KIND", "OUTCOME", "CONTAINER", "CHECKPOINT", "SECONDS", "PHASES", "REASON",
		formatTime(eventsNow.Add(-3*time.Hour)),
		"k8s.io/web-1", "0ae3c1d2e4f5a6b7-g000001", "5.51",
		"lookup=0.03 verify=0.00 rootfs_diff=0.01 criu_restore=3.51 cuda_restore=1.91 cuda_unlock=0.05",
		"[node-mismatch] lookup: checkpoint 0ae3c1d2e4f5a6b7-g000001 does not suit this node: kernel: checkpoint has 6.8.0, node has 6.18.44; (major.minor must match)",
		"[restore-failed] restore from checkpoint")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 6 || !strings.Contains(lines[3], "web-2") || !strings.Contains(lines[5], "web-1") {
		t.Errorf("status is not one line per event, newest first:\n%s", out)
	}

	out, _ = mustRun(t, exitOK, "status", "--events-dir", dir, "--since", "3d")
	contains(t, "status --since 3d", out, "1 checkpoint (1 checkpointed)",
		"cuda_checkpoint=2.50 criu_dump=14.25 rootfs_diff=0.12 copy_images=0.50")

	missing := filepath.Join(dir, "none")
	out, _ = mustRun(t, exitOK, "status", "--events-dir", missing)
	contains(t, "status", out, "no restores or checkpoints recorded in "+missing+" (it does not exist yet) since ")

	for _, bad := range []string{"0", "-1h", "yesterday", "xd"} {
		_, errOut := mustRun(t, exitUsage, "status", "--events-dir", dir, "--since", bad)
		contains(t, "stderr", errOut, "--since")
	}
	mustRun(t, exitUsage, "status", "--events-dir", dir, "extra")
}

func TestUsageNamesStatusAndMetrics(t *testing.T) {
	out, _ := mustRun(t, exitOK, "help")
	contains(t, "help", out, "status [--since DURATION] [--events-dir DIR]", "metrics [--listen ADDR] [--events-dir DIR]")
	_, errOut := mustRun(t, exitOK, "help", "metrics")
	contains(t, "metrics -h", errOut, "-listen ADDR", "-events-dir DIR", "/var/lib/containerd-shim-snapshot/events")
}
