package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
	"github.com/gpusnap/containerd-shim-snapshot-v2/internal/testregistry"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// registryResult is one run of the registry benchmark.
type registryResult struct {
	cold         time.Duration
	imageBytes   int64
	pushes       []events.Event // the first and the second checkpoint's push
	freshRestore time.Duration  // a node that never saw the checkpoint: pull, then restore
	freshPhases  map[string]float64
	localRestore time.Duration // the same node again: the pulled copy, in the page cache
	*pullRuns
}

// registryBench measures checkpoints through a real registry (distribution
// on loopback, TLS and htpasswd as in the tests): the workload's cold
// start; the background push of its checkpoint, and of a second checkpoint
// of the same running workload (bytes uploaded again); a node with an empty
// store restoring from the registry with the page cache dropped, against
// its restore from the pulled copy; n pulls at once; and the floor of a
// pull measured now: loopback TCP and disk writes.
func registryBench(bed *testbed.Bed, dir, eventsDir string, stateMB, warmup int) (*registryResult, error) {
	reg, stop, err := testregistry.Run(filepath.Join(dir, "registry"))
	if err != nil {
		return nil, err
	}
	defer stop()
	env := []string{fmt.Sprintf("STATE_MB=%d", stateMB), fmt.Sprintf("WARMUP_SECONDS=%d", warmup)}
	repo := reg.Host + "/checkpoints/stateful"
	regOpts := fmt.Sprintf("registry = %q\nregistry_hosts_dir = %q\nregistry_credentials = %q\n", repo, reg.HostsDir, reg.Credentials)
	source, err := writeHandler(dir, "source", regOpts+"push = \"on-checkpoint\"\n")
	if err != nil {
		return nil, err
	}
	r := &registryResult{}
	if r.cold, err = runToAnswer(bed, "bench-reg-source", source, env); err != nil {
		return nil, err
	}
	defer removeNetns("bench-reg-source")
	for i := range 2 {
		since := time.Now()
		if out, err := bed.Ctr("tasks", "checkpoint", "bench-reg-source"); err != nil {
			return nil, fmt.Errorf("checkpoint %d: %v: %s", i+1, err, out)
		}
		ev, err := waitPush(eventsDir, since)
		if err != nil {
			return nil, err
		}
		r.pushes = append(r.pushes, ev)
		time.Sleep(5 * time.Second) // the workload runs on between the two
	}
	stopContainer(bed, "bench-reg-source")
	if r.imageBytes, err = newestBytes(filepath.Join(dir, "store-source")); err != nil {
		return nil, err
	}

	fresh, err := writeHandler(dir, "fresh", regOpts)
	if err != nil {
		return nil, err
	}
	if r.freshRestore, err = restoreDroppedCache(bed, "bench-reg-fresh", fresh, env); err != nil {
		return nil, err
	}
	var status struct {
		Decision string             `json:"decision"`
		Phases   map[string]float64 `json:"phases_seconds"`
	}
	if r.localRestore, err = runToAnswer(bed, "bench-reg-local", fresh, env); err != nil {
		return nil, err
	}
	json.Unmarshal(statusFile("bench-reg-local"), &status)
	stopContainer(bed, "bench-reg-local")
	removeNetns("bench-reg-local")
	if status.Decision != "restored" {
		return nil, fmt.Errorf("bench-reg-local was not restored: %s", statusFile("bench-reg-local"))
	}
	r.freshPhases = lastRestorePhases(eventsDir, "bench-reg-fresh")
	r.pullRuns, err = measurePulls(dir, repo, reg)
	return r, err
}

// newestBytes is the size of the newest checkpoint of a store.
func newestBytes(root string) (int64, error) {
	s, err := storage.Open(root)
	if err != nil {
		return 0, err
	}
	cks, err := s.List()
	if err != nil || len(cks) == 0 {
		return 0, fmt.Errorf("store %s: %v (%d checkpoints)", root, err, len(cks))
	}
	newest := cks[0]
	for _, ck := range cks {
		if ck.Err == nil && ck.Manifest.Created.After(newest.Manifest.Created) {
			newest = ck
		}
	}
	return newest.Size(), nil
}

// writeHandler writes the options of a handler with its own store.
func writeHandler(dir, name, extra string) (string, error) {
	path := filepath.Join(dir, name+".toml")
	body := fmt.Sprintf("store = %q\ncontrol_dir = %q\n%s", filepath.Join(dir, "store-"+name), testbed.StatefulControlDir, extra)
	return path, os.WriteFile(path, []byte(body), 0o600)
}

// waitPush waits for the next push event and fails on a failed push.
func waitPush(eventsDir string, since time.Time) (events.Event, error) {
	for deadline := time.Now().Add(10 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		evts, _ := events.Read(eventsDir, since)
		for _, e := range evts {
			switch {
			case e.Kind == events.KindTransfer && e.Outcome == events.OutcomePushed:
				return e, nil
			case e.Kind == events.KindTransfer && e.Outcome == events.OutcomePushFailed:
				return e, fmt.Errorf("push failed: %s", e.Reason)
			}
		}
	}
	return events.Event{}, fmt.Errorf("no push within 10 minutes")
}

// lastRestorePhases are the phases of the restore event of container id.
func lastRestorePhases(eventsDir, id string) map[string]float64 {
	evts, _ := events.Read(eventsDir, time.Time{})
	var phases map[string]float64
	for _, e := range evts {
		if e.Kind == events.KindRestore && e.ContainerID == id {
			phases = e.Phases
		}
	}
	return phases
}

func (r *registryResult) report(stateMB, warmup int) {
	host, _ := os.Hostname()
	fmt.Printf("bench-registry: stateful workload, %d MiB state, %d s warm-up; distribution on loopback (TLS, htpasswd); host %s, %d cores, %s\n",
		stateMB, warmup, host, runtime.NumCPU(), time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("  checkpoint image: %.2f GB\n", float64(r.imageBytes)/1e9)
	fmt.Printf("  %-52s %10s\n", "cold start to first answer", r.cold.Round(time.Millisecond))
	for i, p := range r.pushes {
		fmt.Printf("  push of checkpoint %d (background): %.2f s, %.2f GB uploaded\n", i+1, p.Phases["push"], float64(p.BytesWritten)/1e9)
	}
	if len(r.pushes) == 2 && r.pushes[0].BytesWritten > 0 {
		fmt.Printf("  second checkpoint re-uploaded %.0f%% of the first's bytes (goal <= 30%%)\n", 100*float64(r.pushes[1].BytesWritten)/float64(r.pushes[0].BytesWritten))
	}
	fmt.Printf("  %-52s %10s\n", "fresh node: pull + restore, page cache dropped", r.freshRestore.Round(time.Millisecond))
	fmt.Printf("    its phases: %v\n", r.freshPhases)
	fmt.Printf("  %-52s %10s\n", "same node again: restore from the pulled copy", r.localRestore.Round(time.Millisecond))
	pull := r.freshPhases["pull"]
	if pull > 0 {
		fmt.Printf("  fresh restore against pull + local restore: %.2f (goal <= 1.10)\n", r.freshRestore.Seconds()/(pull+r.localRestore.Seconds()))
	}
	r.pullRuns.report(r.imageBytes)
}

// writeJSON writes the run's raw results for the benchmark report.
func (r *registryResult) writeJSON(path string, stateMB, warmup int) error {
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	pushes := []map[string]float64{}
	for _, p := range r.pushes {
		pushes = append(pushes, map[string]float64{"push_s": p.Phases["push"], "uploaded_bytes": float64(p.BytesWritten)})
	}
	doc := map[string]any{
		"kind": "registry", "date": time.Now().UTC().Format(time.RFC3339), "host": host,
		"kernel": strings.TrimSpace(string(kernel)), "cpus": runtime.NumCPU(),
		"command":     fmt.Sprintf("go run ./integration/bench -mode registry -state-mb %d -warmup %d", stateMB, warmup),
		"state_mib":   stateMB,
		"image_bytes": r.imageBytes, "cold_s": r.cold.Seconds(), "pushes": pushes,
		"fresh_restore_s": r.freshRestore.Seconds(), "fresh_phases": r.freshPhases, "local_restore_s": r.localRestore.Seconds(),
	}
	maps.Copy(doc, r.pullRuns.fields())
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
