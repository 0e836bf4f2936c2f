package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"strings"
)

// registryRun is a registry result's own part (integration/bench -mode
// registry).
type registryRun struct {
	Pushes []struct {
		Seconds  float64 `json:"push_s"`
		Uploaded float64 `json:"uploaded_bytes"`
	} `json:"pushes"`
	FreshRestore float64            `json:"fresh_restore_s"`
	FreshPhases  map[string]float64 `json:"fresh_phases"`
	LocalRestore float64            `json:"local_restore_s"`
	pullRun
}

// transferRun is a transfer result's own part (integration/bench -mode
// transfer): a synthetic checkpoint's push and pulls.
type transferRun struct {
	Publish  float64 `json:"publish_s"`
	Push     float64 `json:"push_s"`
	Uploaded float64 `json:"uploaded_bytes"`
	pullRun
}

// pullRun is what both registry benchmarks measure of pulls: n at once,
// from the registry's disk and from its page cache, and the floor.
type pullRun struct {
	Pulls       map[string]float64 `json:"pulls_s"`
	PullsServed map[string]float64 `json:"pulls_served_s"`
	PullsCPU    map[string]struct {
		Client   float64 `json:"client_cpu_s"`
		Registry float64 `json:"registry_cpu_s"`
	} `json:"pulls_served_cpu"`
	LoopbackGBps float64 `json:"loopback_gbps"`
	DiskGBps     float64 `json:"disk_write_gbps"`
}

func loadRegistry(data []byte) (*registryRun, error) {
	var r registryRun
	return &r, json.Unmarshal(data, &r)
}

func loadTransfer(data []byte) (*transferRun, error) {
	var r transferRun
	return &r, json.Unmarshal(data, &r)
}

// registryTable renders a registry result: a fresh node's first restore
// against the cold start and a local restore, pushes, and pull bandwidth
// against the floor measured in the same run.
func registryTable(b *strings.Builder, r *result) {
	g := r.Registry
	fmt.Fprintf(b, "## Registry: %g MiB of CPU state through distribution on loopback, %s\n\n", r.StateMiB, r.Date)
	fmt.Fprintf(b, "%s, kernel %s, %d cores. Command: `%s`. Image %.2f GB. TLS and htpasswd, as in the tests.\n\n",
		r.Host, r.Kernel, r.CPUs, r.Command, r.ImageBytes/1e9)
	note(b, r)
	b.WriteString("| to first answer | seconds | vs cold start |\n| --- | ---: | ---: |\n")
	fmt.Fprintf(b, "| cold start | %.2f | 1.0x |\n", r.Cold)
	fmt.Fprintf(b, "| fresh node: pull, then restore (page cache dropped) | %.2f | %s |\n", g.FreshRestore, ratio(r.Cold, g.FreshRestore))
	fmt.Fprintf(b, "| the same node again: restore of the pulled copy | %.2f | %s |\n\n", g.LocalRestore, ratio(r.Cold, g.LocalRestore))
	pull := g.FreshPhases["pull"]
	if pull > 0 {
		fmt.Fprintf(b, "- The fresh node's restore took %.2fx (pull %.2f s + local restore %.2f s); goal: at most 1.10x. Its phases: %s.\n",
			g.FreshRestore/(pull+g.LocalRestore), pull, g.LocalRestore, phaseList(g.FreshPhases))
	}
	for i, p := range g.Pushes {
		fmt.Fprintf(b, "- Background push of checkpoint %d: %.2f s, %.2f GB uploaded.\n", i+1, p.Seconds, p.Uploaded/1e9)
	}
	if len(g.Pushes) == 2 && g.Pushes[0].Uploaded > 0 {
		fmt.Fprintf(b, "- The second checkpoint of the running workload re-uploaded %.0f%% of the first's bytes (goal: at most 30%%).\n",
			100*g.Pushes[1].Uploaded/g.Pushes[0].Uploaded)
	}
	pullSection(b, r, &g.pullRun)
	b.WriteString("\n")
}

// transferTable renders a transfer result: the push, and pulls against the
// floor.
func transferTable(b *strings.Builder, r *result) {
	g := r.Transfer
	fmt.Fprintf(b, "## Registry transfers: a %.2f GB checkpoint through distribution on loopback, %s\n\n", r.ImageBytes/1e9, r.Date)
	fmt.Fprintf(b, "%s, kernel %s, %d cores. Command: `%s`. A synthetic checkpoint (one page image of random bytes), no containerd. TLS and htpasswd, as in the tests.\n\n",
		cmp.Or(r.Machine, r.Host), r.Kernel, r.CPUs, r.Command)
	note(b, r)
	if g.Publish > 0 {
		fmt.Fprintf(b, "- Publish into the source store (every file hashed, then synced): %.2f s.\n", g.Publish)
	}
	if g.Push > 0 {
		fmt.Fprintf(b, "- Push: %.2f s, %.2f GB uploaded (%.2f GB/s).\n", g.Push, g.Uploaded/1e9, g.Uploaded/g.Push/1e9)
	}
	pullSection(b, r, &g.pullRun)
	b.WriteString("\n")
}

// pullSection renders pulls against the floor measured in the same run,
// and their CPU.
func pullSection(b *strings.Builder, r *result, g *pullRun) {
	floor := min(g.LoopbackGBps, g.DiskGBps)
	fmt.Fprintf(b, "- Floor in the same run: loopback TCP %.2f GB/s, disk writes (synced) %.2f GB/s (results from 2026-12-05 20:00 on: the faster of before and after the pulls).\n", g.LoopbackGBps, g.DiskGBps)
	pullLines(b, r.ImageBytes, floor, g.PullsServed, "the registry's blobs in its page cache (as a registry on another machine serving from memory): only this node's disk writes")
	pullLines(b, r.ImageBytes, floor, g.Pulls, "the registry's blobs on this node's disk, page cache dropped: the registry's reads and the pull's writes share the disk")
	for _, n := range []string{"1", "2", "4"} {
		if c, ok := g.PullsCPU[n]; ok && g.PullsServed[n] > 0 {
			fmt.Fprintf(b, "- CPU of %s pull(s) from the registry's page cache: client %.2f s and registry %.2f s (%.1f CPU-s per GB) in %.2f s on %d cores: %.0f%% busy.\n",
				n, c.Client, c.Registry, (c.Client+c.Registry)/(atof(n)*r.ImageBytes/1e9), g.PullsServed[n], r.CPUs,
				100*(c.Client+c.Registry)/(g.PullsServed[n]*float64(r.CPUs)))
		}
	}
}

// pullLines lists n pulls at once, each into an empty store, against the
// floor; what says where the registry served its blobs from.
func pullLines(b *strings.Builder, imageBytes, floor float64, pulls map[string]float64, what string) {
	if len(pulls) == 0 {
		return
	}
	fmt.Fprintf(b, "- Pulls, each into an empty store, %s:\n", what)
	for _, n := range []string{"1", "2", "4"} {
		if s := pulls[n]; s > 0 {
			gbps := atof(n) * imageBytes / s / 1e9
			fmt.Fprintf(b, "  - %s at once: %.2f s, %.2f GB/s together, %.0f%% of the floor (goal: at least 80%%).\n", n, s, gbps, 100*gbps/floor)
		}
	}
}

// atof reads a number of pulls, a key of the result's maps.
func atof(s string) float64 {
	var f float64
	fmt.Sscan(s, &f)
	return f
}
