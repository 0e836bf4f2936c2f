package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
	"github.com/gpusnap/containerd-shim-snapshot-v2/internal/testregistry"
	"github.com/gpusnap/containerd-shim-snapshot-v2/registry"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// registryResult is one run of the registry benchmark.
type registryResult struct {
	cold                   time.Duration
	imageBytes             int64
	pushes                 []events.Event // the first and the second checkpoint's push
	freshRestore           time.Duration  // a node that never saw the checkpoint: pull, then restore
	freshPhases            map[string]float64
	localRestore           time.Duration         // the same node again: the pulled copy, in the page cache
	pulls                  map[int]time.Duration // the registry's blobs on this node's disk, page cache dropped
	pullsServed            map[int]time.Duration // the registry's blobs in its page cache: only this node's disk writes
	pullCPU                map[int]pullCPU       // CPU time of pullsServed
	loopbackGBps, diskGBps float64
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
	r := &registryResult{pulls: map[int]time.Duration{}}
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
	// This disk's write speed varies from minute to minute on a VM: it is
	// measured before and after the pulls, and the faster counts.
	diskBefore, err := diskWriteGBps(filepath.Join(dir, "floor-write"), 2<<30)
	if err != nil {
		return nil, err
	}
	if r.pulls, _, err = concurrentPulls(dir, repo, reg, []int{1, 2, 4}, false); err != nil {
		return nil, err
	}
	if r.pullsServed, r.pullCPU, err = concurrentPulls(dir, repo, reg, []int{1, 2, 4}, true); err != nil {
		return nil, err
	}
	r.loopbackGBps, err = loopbackGBps(2 << 30)
	if err != nil {
		return nil, err
	}
	r.diskGBps, err = diskWriteGBps(filepath.Join(dir, "floor-write"), 2<<30)
	r.diskGBps = max(r.diskGBps, diskBefore)
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

// concurrentPulls pulls the newest checkpoint n times at once, each into
// an empty store, for each n, and returns the time until all are in. The
// page cache is dropped first. The test registry keeps its blobs on this
// node's disk, so a pull also reads them from there; with served, they
// are read back into the page cache before the clock starts, as a
// registry on another machine serving from memory would: then only this
// node's disk writes are in the path, which is what the floor measures.
func concurrentPulls(dir, repo string, reg *testregistry.Registry, ns []int, served bool) (map[int]time.Duration, map[int]pullCPU, error) {
	ctx := context.Background()
	remote, err := registry.Open(ctx, repo, registry.Config{HostsDir: reg.HostsDir, Credentials: reg.Credentials})
	if err != nil {
		return nil, nil, err
	}
	list, err := remote.List(ctx)
	if err != nil || len(list) == 0 {
		return nil, nil, fmt.Errorf("listing %s: %v (%d checkpoints)", repo, err, len(list))
	}
	out, cpu := map[int]time.Duration{}, map[int]pullCPU{}
	for _, n := range ns {
		stores := make([]*storage.Store, n)
		for i := range n {
			if stores[i], err = storage.Open(filepath.Join(dir, fmt.Sprintf("pull-%d-%d", n, i))); err != nil {
				return nil, nil, err
			}
		}
		if err := dropPageCache(); err != nil {
			return nil, nil, err
		}
		if served {
			if err := readTree(reg.Data); err != nil {
				return nil, nil, err
			}
		}
		before := cpuNow(reg.Pid)
		start := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() { _, errs[i] = remote.Pull(ctx, list[0].Tag, stores[i], registry.Options{}) })
		}
		wg.Wait()
		out[n] = time.Since(start)
		cpu[n] = cpuNow(reg.Pid).since(before)
		for i := range n {
			os.RemoveAll(stores[i].Root)
			if errs[i] != nil {
				return nil, nil, errs[i]
			}
		}
	}
	return out, cpu, nil
}

// loopbackGBps is how fast size bytes cross a loopback TCP connection.
func loopbackGBps(size int64) (float64, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			_, err = io.Copy(io.Discard, c)
			c.Close()
		}
		done <- err
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	start := time.Now()
	for sent := int64(0); sent < size; sent += int64(len(buf)) {
		if _, err := c.Write(buf); err != nil {
			return 0, err
		}
	}
	c.Close()
	if err := <-done; err != nil {
		return 0, err
	}
	return float64(size) / time.Since(start).Seconds() / 1e9, nil
}

// diskWriteGBps is how fast size bytes are written and synced to a file.
func diskWriteGBps(path string, size int64) (float64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer os.Remove(path)
	buf := make([]byte, 16<<20)
	rand.Read(buf)
	start := time.Now()
	for written := int64(0); written < size; written += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return 0, err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, err
	}
	took := time.Since(start)
	return float64(size) / took.Seconds() / 1e9, f.Close()
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
	floor := min(r.loopbackGBps, r.diskGBps)
	fmt.Printf("  floor now: loopback %.2f GB/s, disk write %.2f GB/s (the faster of before and after the pulls)\n", r.loopbackGBps, r.diskGBps)
	for _, pulls := range []struct {
		what string
		took map[int]time.Duration
	}{{"registry's blobs in its page cache", r.pullsServed}, {"registry's blobs on this disk, cache dropped", r.pulls}} {
		fmt.Printf("  pulls, %s:\n", pulls.what)
		for _, n := range []int{1, 2, 4} {
			gbps := float64(n) * float64(r.imageBytes) / pulls.took[n].Seconds() / 1e9
			fmt.Printf("    %d at once: %s, %.2f GB/s together, %.0f%% of the floor (goal >= 80%%)\n", n, pulls.took[n].Round(time.Millisecond), gbps, 100*gbps/floor)
		}
	}
	for _, n := range []int{1, 2, 4} {
		c := r.pullCPU[n]
		fmt.Printf("  CPU of %d pull(s) from the registry's page cache: client %.2f s, registry %.2f s, of %d cores x %.2f s\n",
			n, c.Client, c.Registry, runtime.NumCPU(), r.pullsServed[n].Seconds())
	}
}

// pullCPU is the CPU time pulls took: this process's (the client: TLS,
// digests, writes) and the registry's (TLS, reads), user and system, in
// seconds. On a machine with few cores it says when a pull is bound by
// CPU rather than by the floor.
type pullCPU struct {
	Client   float64 `json:"client_cpu_s"`
	Registry float64 `json:"registry_cpu_s"`
}

// cpuNow reads the CPU time of this process and of the registry (pid).
func cpuNow(pid int) pullCPU {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	c := pullCPU{Client: float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9}
	// Fields 14 and 15 of /proc/PID/stat, after the command in parentheses,
	// are user and system time in clock ticks (100 a second on Linux).
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if i := bytes.LastIndexByte(stat, ')'); i > 0 {
			f := strings.Fields(string(stat[i+1:]))
			if len(f) > 12 {
				utime, _ := strconv.ParseFloat(f[11], 64)
				stime, _ := strconv.ParseFloat(f[12], 64)
				c.Registry = (utime + stime) / 100
			}
		}
	}
	return c
}

func (c pullCPU) since(before pullCPU) pullCPU {
	return pullCPU{Client: c.Client - before.Client, Registry: c.Registry - before.Registry}
}

// readTree reads every file under root, to bring it into the page cache.
func readTree(root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(io.Discard, f)
		return err
	})
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
		"pulls_s": parallelSeconds(r.pulls), "pulls_served_s": parallelSeconds(r.pullsServed), "pulls_served_cpu": r.pullCPU, "loopback_gbps": r.loopbackGBps, "disk_write_gbps": r.diskGBps,
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
