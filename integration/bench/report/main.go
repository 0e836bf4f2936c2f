// Command report turns the raw benchmark results in bench/results/*.json
// (written by `make bench` and `make bench-gpu`) into BENCHMARKS.md and a
// plot of restore time against checkpoint size next to the floor
// (docs/restore-vs-size.svg). Every figure it prints comes from a result
// file, which names its machine, date and command.
//
//	go run ./integration/bench/report -results bench/results -out BENCHMARKS.md -plot docs/restore-vs-size.svg
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// result is one raw result file; fields absent from a kind stay zero.
type result struct {
	File          string
	Kind          string             `json:"kind"`
	Date          string             `json:"date"`
	Command       string             `json:"command"`
	Note          string             `json:"note"`
	Machine       string             `json:"machine"`
	Host          string             `json:"host"`
	Kernel        string             `json:"kernel"`
	GPU           string             `json:"gpu"`
	Driver        string             `json:"driver"`
	THP           string             `json:"thp"`
	WeightsGiB    float64            `json:"weights_gib"`
	StateMiB      float64            `json:"state_mib"`
	ImageBytes    float64            `json:"image_bytes"`
	Cold          float64            `json:"cold_s"`
	Checkpoint    float64            `json:"checkpoint_s"`
	CkptPhases    map[string]float64 `json:"checkpoint_phases"`
	ShimCold      float64            `json:"shim_restore_cold_s"`
	ShimColdHuge  float64            `json:"shim_restore_cold_huge_s"`
	ShimWarm      float64            `json:"shim_restore_warm_s"`
	ShimWarmHuge  float64            `json:"shim_restore_warm_huge_s"`
	ShimWarmHuge2 float64            `json:"shim_restore_warm_huge_again_s"`
	// restore_threads: the default's thread count, and the lever measured
	// against it (CRIU's single reader, and 16 threads on the GPU machine)
	Threads        int     `json:"restore_threads"`
	ShimWarm1T     float64 `json:"shim_restore_warm_one_thread_s"`
	ShimWarmHuge1T float64 `json:"shim_restore_warm_huge_one_thread_s"`
	// WarmHugeThreads: shim_restore_warm_huge_N_threads_s, by N
	WarmHugeThreads map[int]float64 `json:"-"`
	ShimColdHuge1T  float64         `json:"shim_restore_cold_huge_one_thread_s"`
	PlainCold       float64         `json:"plain_restore_cold_s"`
	PlainWarm       float64         `json:"plain_restore_warm_s"`
	// the plain baseline's two steps from the page cache: criu restore,
	// and the driver's own restore (cudactl)
	PlainWarmCRIU float64 `json:"plain_restore_warm_criu_s"`
	PlainWarmCUDA float64 `json:"plain_restore_warm_cuda_s"`
	// restore_populate = false (CRIU patch 0004 unused), huge pages on
	ShimWarmHugeNoPopulate float64 `json:"shim_restore_warm_huge_no_populate_s"`
	// restore_populate = true with huge pages (off by default with them
	// since 2026-12-06; the earlier results measured the other way round)
	ShimWarmHugePopulate float64 `json:"shim_restore_warm_huge_populate_s"`
	// through a registry on loopback: gpusnap push, then a fresh node's
	// first restore (pull on demand), the registry's blobs in the page
	// cache and with the page cache dropped
	RegistryPush        float64            `json:"registry_push_s"`
	ShimRegistryWarm    float64            `json:"shim_restore_registry_warm_s"`
	ShimRegistryDropped float64            `json:"shim_restore_registry_cold_s"`
	H2D                 map[string]float64 `json:"h2d"`
	Parallel            map[string]float64 `json:"parallel_restore_s"`
	Timeline            map[string]float64 `json:"restore_timeline_s"`
	CRICold             float64            `json:"cri_cold_s"`
	CRIRestore          float64            `json:"cri_restore_s"`
	CRISteps            map[string]float64 `json:"cri_restore_steps_s"`
	FloorCPU            map[string]float64 `json:"-"`
	FloorGPU            *struct {
		Results []struct {
			Name string  `json:"name"`
			GBps float64 `json:"gbps"`
		} `json:"results"`
	} `json:"-"`
	Status map[string]*struct {
		Phases map[string]float64 `json:"phases_seconds"`
	} `json:"-"`
	// gpu-examples (integration/gpu/examples.sh)
	Torch    string     `json:"torch"`
	Examples []*example `json:"-"`
	// registry (integration/bench -mode registry)
	CPUs     int          `json:"cpus"`
	Registry *registryRun `json:"-"`
	// transfer (integration/bench -mode transfer)
	Transfer *transferRun `json:"-"`
}

func main() {
	dir := flag.String("results", "bench/results", "directory of raw result files")
	out := flag.String("out", "BENCHMARKS.md", "markdown file to write")
	plot := flag.String("plot", "docs/restore-vs-size.svg", "SVG plot to write")
	flag.Parse()
	results, err := load(*dir)
	if err != nil {
		fail(err)
	}
	if err := os.WriteFile(*out, []byte(markdown(results, *plot, *out)), 0o644); err != nil {
		fail(err)
	}
	if err := os.WriteFile(*plot, []byte(svg(results)), 0o644); err != nil {
		fail(err)
	}
	fmt.Printf("wrote %s and %s from %d result(s)\n", *out, *plot, len(results))
}

// warmHugeThreads names the warm restores with huge pages and a given
// restore_threads (integration/gpu/bench.sh).
var warmHugeThreads = regexp.MustCompile(`^shim_restore_warm_huge_(\d+)_threads_s$`)

// load reads every result file, newest first.
func load(dir string) ([]*result, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []*result
	for _, f := range files {
		r, err := loadOne(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Date > out[j].Date })
	return out, nil
}

func loadOne(file string) (*result, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	r := &result{File: file}
	if err := json.Unmarshal(data, r); err != nil {
		return nil, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	switch r.Kind {
	case "gpu-examples":
		r.Examples = loadExamples(raw)
		return r, nil
	case "registry":
		r.Registry, err = loadRegistry(data)
		return r, err
	case "transfer":
		r.Transfer, err = loadTransfer(data)
		return r, err
	}
	r.Status = map[string]*struct {
		Phases map[string]float64 `json:"phases_seconds"`
	}{}
	for k, v := range raw {
		switch {
		case k == "floor" && r.Kind == "cpu-restore":
			json.Unmarshal(v, &r.FloorCPU)
		case k == "floor":
			json.Unmarshal(v, &r.FloorGPU)
		case warmHugeThreads.MatchString(k):
			n, _ := strconv.Atoi(warmHugeThreads.FindStringSubmatch(k)[1])
			var seconds float64
			if json.Unmarshal(v, &seconds) == nil {
				if r.WarmHugeThreads == nil {
					r.WarmHugeThreads = map[int]float64{}
				}
				r.WarmHugeThreads[n] = seconds
			}
		case strings.HasPrefix(k, "status_"):
			var st struct {
				Phases map[string]float64 `json:"phases_seconds"`
			}
			if json.Unmarshal(v, &st) == nil && st.Phases != nil {
				r.Status[strings.TrimPrefix(k, "status_")] = &st
			}
		}
	}
	return r, nil
}

// bandwidth returns a floor measurement in GB/s (decimal), 0 if absent.
func (r *result) bandwidth(name string) float64 {
	if r.FloorCPU != nil {
		return r.FloorCPU[name+"_gbps"]
	}
	if r.FloorGPU != nil {
		for _, f := range r.FloorGPU.Results {
			if f.Name == name {
				return f.GBps
			}
		}
	}
	return 0
}

// gpuBytes is the GPU state restored to the device: the example's weights
// (the largest part by far; activations and CUDA graphs are not counted).
func (r *result) gpuBytes() float64 { return r.WeightsGiB * (1 << 30) }

// floor is the time a restore cannot beat: read the image at readGBps and
// copy the GPU state to the device from pinned memory.
func (r *result) floor(readGBps float64) float64 {
	if readGBps == 0 {
		return 0
	}
	t := r.ImageBytes / (readGBps * 1e9)
	if h := r.H2D["h2d_pinned"]; h > 0 && r.gpuBytes() > 0 {
		t += r.gpuBytes() / (h * 1e9)
	}
	return t
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "report:", err)
	os.Exit(1)
}
