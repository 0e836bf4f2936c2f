package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/floor"
	"github.com/gpusnap/containerd-shim-snapshot-v2/internal/testregistry"
	"github.com/gpusnap/containerd-shim-snapshot-v2/registry"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// pullRuns is what the registry benchmarks measure of pulls: n pulls at
// once, each into an empty store, with the registry's blobs on this
// node's disk and in the registry's page cache; the CPU the latter took;
// and the floor of a pull measured in the same run.
type pullRuns struct {
	pulls                  map[int]time.Duration // the registry's blobs on this node's disk, page cache dropped
	pullsServed            map[int]time.Duration // the registry's blobs in its page cache: only this node's disk writes
	pullCPU                map[int]pullCPU       // CPU time of pullsServed
	loopbackGBps, diskGBps float64
}

// pullCounts are the numbers of pulls run at once.
var pullCounts = []int{1, 2, 4}

// measurePulls pulls the newest checkpoint of repo as pullRuns says, into
// stores under dir. The floor's disk writes go to dir too. This disk's
// write speed varies from minute to minute on a VM: it is measured before
// and after the pulls, and the faster counts.
func measurePulls(dir, repo string, reg *testregistry.Registry) (*pullRuns, error) {
	const floorBytes = 2 << 30
	before, err := floor.DiskWrite(dir, floorBytes)
	if err != nil {
		return nil, err
	}
	p := &pullRuns{}
	if p.pulls, _, err = concurrentPulls(dir, repo, reg, pullCounts, false); err != nil {
		return nil, err
	}
	if p.pullsServed, p.pullCPU, err = concurrentPulls(dir, repo, reg, pullCounts, true); err != nil {
		return nil, err
	}
	loopback, err := floor.Loopback(floorBytes)
	if err != nil {
		return nil, err
	}
	after, err := floor.DiskWrite(dir, floorBytes)
	p.loopbackGBps, p.diskGBps = loopback.GBps(), max(before.GBps(), after.GBps())
	return p, err
}

// report prints the pulls against the floor, and their CPU.
func (p *pullRuns) report(imageBytes int64) {
	floor := min(p.loopbackGBps, p.diskGBps)
	fmt.Printf("  floor now: loopback %.2f GB/s, disk write %.2f GB/s (the faster of before and after the pulls)\n", p.loopbackGBps, p.diskGBps)
	for _, pulls := range []struct {
		what string
		took map[int]time.Duration
	}{{"registry's blobs in its page cache", p.pullsServed}, {"registry's blobs on this disk, cache dropped", p.pulls}} {
		fmt.Printf("  pulls, %s:\n", pulls.what)
		for _, n := range pullCounts {
			gbps := float64(n) * float64(imageBytes) / pulls.took[n].Seconds() / 1e9
			fmt.Printf("    %d at once: %s, %.2f GB/s together, %.0f%% of the floor (goal >= 80%%)\n", n, pulls.took[n].Round(time.Millisecond), gbps, 100*gbps/floor)
		}
	}
	for _, n := range pullCounts {
		c := p.pullCPU[n]
		fmt.Printf("  CPU of %d pull(s) from the registry's page cache: client %.2f s, registry %.2f s, of %d cores x %.2f s\n",
			n, c.Client, c.Registry, runtime.NumCPU(), p.pullsServed[n].Seconds())
	}
}

// fields are the pulls' keys of a result file.
func (p *pullRuns) fields() map[string]any {
	return map[string]any{
		"pulls_s": parallelSeconds(p.pulls), "pulls_served_s": parallelSeconds(p.pullsServed), "pulls_served_cpu": p.pullCPU,
		"loopback_gbps": p.loopbackGBps, "disk_write_gbps": p.diskGBps,
	}
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
