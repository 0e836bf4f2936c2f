package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRestoreThreads: with restore_threads = 2, CRIU reads the restored
// pages with two threads (the project's CRIU patch, contrib/criu/0002),
// each run populated first with 4 KiB pages unless restore_populate = false
// and with huge pages only when restore_populate = true (0004), and the
// process it restores is the one CRIU's single reader restores: the same
// memory (the checksum over 64 MiB of state), the same writable layer and
// child, and the same address space, area for area (the alignment gaps
// the patch reserves while reading are gone).
func TestRestoreThreads(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	env := "STATE_MB=64"
	optionsWith := func(name, extra string) string {
		path := filepath.Join(dir, name+".toml")
		body := fmt.Sprintf("store = %q\ncontrol_dir = %q\n%s", store, controlDir, extra)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	one := optionsWith("one", "restore_threads = 1\n")

	runStateful(t, "threads-source", one, env)
	before := waitWarm(t, "threads-source", 30)
	if before.State == "" {
		t.Fatalf("workload gave no state checksum: %+v", before)
	}
	if out, err := bed.Ctr("tasks", "checkpoint", "threads-source"); err != nil {
		t.Fatalf("ctr tasks checkpoint: %v: %s", err, out)
	}

	maps := map[string][]string{}
	for _, c := range []struct {
		name     string
		threads  int
		extra    string // more handler options
		populate bool   // CRIU's log must say the runs were populated
	}{
		{"one", 1, "", false},
		{"two", 2, "", true},
		{"two-no-populate", 2, "restore_populate = false\n", false},
		// With huge pages, populate is off unless asked for.
		{"two-huge", 2, "restore_huge_pages = true\n", false},
		{"two-huge-populate", 2, "restore_huge_pages = true\nrestore_populate = true\n", true},
	} {
		id := "threads-restored-" + c.name
		opts := one
		if c.threads == 2 {
			opts = optionsWith(c.name, "restore_threads = 2\n"+c.extra)
		}
		runStateful(t, id, opts, env)
		got := waitWarm(t, id, 0)
		st := statusOf(t, id)
		if st["decision"] != "restored" || st["criu_threads"] != float64(c.threads) {
			t.Fatalf("%s: status %v, want restored with criu_threads %d", id, st, c.threads)
		}
		// A CPU-only container's checkpoint: huge pages only when asked for.
		if huge := st["criu_huge_pages"] == true; huge != strings.Contains(c.extra, "restore_huge_pages = true") {
			t.Errorf("%s: options %q, status says huge pages %v", id, c.extra, huge)
		}
		if got.State != before.State || got.Count < before.Count || got.File != "written-before-checkpoint" || got.Child != "alive" {
			t.Fatalf("%s: restored workload %+v does not continue from %+v", id, got, before)
		}
		log := criuRestoreLog(t, id)
		if parallel := strings.Contains(log, "page runs with 2 threads"); parallel != (c.threads == 2) {
			t.Errorf("%s: restore_threads = %d, CRIU's log says two threads read pages: %v", id, c.threads, parallel)
		}
		if populated := strings.Contains(log, "each populated first"); populated != c.populate {
			t.Errorf("%s: options %q, CRIU's log says the runs were populated: %v, want %v", id, c.extra, populated, c.populate)
		}
		maps[c.name] = addressSpace(t, id)
	}
	// Huge pages mark areas (madvise) and may split them, so only the 4 KiB
	// restores must match the single reader's address space exactly.
	for _, name := range []string{"two", "two-no-populate"} {
		if a, b := strings.Join(maps["one"], "\n"), strings.Join(maps[name], "\n"); a != b {
			t.Fatalf("address spaces differ:\none thread:\n%s\n%s:\n%s", a, name, b)
		}
	}
}

// criuRestoreLog is CRIU's log of the restore of task id, from the task's
// work directory.
func criuRestoreLog(t *testing.T, id string) string {
	t.Helper()
	path := filepath.Join(bed.Dir, "state", "io.containerd.runtime.v2.task", bed.Namespace, id, "work", "restore.log")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("CRIU's restore log: %v", err)
	}
	return string(data)
}

// addressSpace lists the areas (range and permissions) of the workload's
// main process in task id.
func addressSpace(t *testing.T, id string) []string {
	t.Helper()
	pid := taskPID(t, id)
	data, err := os.ReadFile(fmt.Sprintf("/proc/%s/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	var areas []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			areas = append(areas, f[0]+" "+f[1])
		}
	}
	return areas
}

// taskPID is the PID column of `ctr tasks list` for one task.
func taskPID(t *testing.T, id string) string {
	t.Helper()
	pid, _ := taskRow(id)
	if pid == "" {
		t.Fatalf("task %s not listed", id)
	}
	return pid
}
