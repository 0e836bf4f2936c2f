package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// exampleNames are the examples integration/gpu/examples.sh runs, in the
// order the report lists them (the headline first).
var exampleNames = []string{"transformers", "two-process", "two-cuda"}

// example is one example's part of a gpu-examples result: examples.sh
// writes its figures as NAME_key.
type example struct {
	Name                                string
	Cold, RestoreCold, RestoreWarm      float64
	ImageBytes, PagesBytes, WeightBytes float64
	Info, Prepare                       map[string]any // the server's own /info, at the cold start and after the checkpoint
	CkptPhases                          map[string]float64
	Phases                              map[string]map[string]float64 // restore case -> phases
	// CRIU's own measurements (criu.Stats): of the dump, and per restore case.
	DumpStats    map[string]float64
	RestoreStats map[string]map[string]float64
}

// loadExamples reads the examples of a gpu-examples result.
func loadExamples(raw map[string]json.RawMessage) []*example {
	var out []*example
	for _, name := range exampleNames {
		get := func(key string, v any) bool {
			data, ok := raw[name+"_"+key]
			return ok && json.Unmarshal(data, v) == nil
		}
		e := &example{Name: name, Phases: map[string]map[string]float64{}, RestoreStats: map[string]map[string]float64{}}
		if !get("cold_s", &e.Cold) {
			continue
		}
		// The cold start ends when the workload says it is warm: its first
		// answer then also waits for the on-ready checkpoint that pauses it.
		get("cold_to_ready_s", &e.Cold)
		get("restore_cold_s", &e.RestoreCold)
		get("restore_warm_s", &e.RestoreWarm)
		get("image_bytes", &e.ImageBytes)
		get("pages_bytes", &e.PagesBytes)
		get("weight_bytes", &e.WeightBytes)
		get("info", &e.Info)
		get("prepare", &e.Prepare)
		get("checkpoint_phases", &e.CkptPhases)
		get("checkpoint_criu_stats", &e.DumpStats)
		for _, c := range []string{"cold", "warm"} {
			var st struct {
				Phases    map[string]float64 `json:"phases_seconds"`
				CRIUStats map[string]float64 `json:"criu_stats"`
			}
			if get("status_restore_"+c, &st) && st.Phases != nil {
				e.Phases[c] = st.Phases
			}
			if st.CRIUStats != nil {
				e.RestoreStats[c] = st.CRIUStats
			}
		}
		out = append(out, e)
	}
	return out
}

// examplesTable renders a gpu-examples result: each example's cold start
// against its restores, then where the time went.
func examplesTable(b *strings.Builder, r *result) {
	fmt.Fprintf(b, "## GPU: the examples of contrib/examples, %s\n\n", r.Date)
	fmt.Fprintf(b, "%s, driver %s, torch %s, kernel %s; %s. Command: `%s`.\n\n", r.GPU, r.Driver, r.Torch, r.Kernel, r.Machine, r.Command)
	note(b, r)
	b.WriteString("Cold start: from `ctr run` until the workload says it is warm (it serves from then on; examples.sh's first answer also waits for the on-ready checkpoint). Restores: from `ctr run` to the first answer.\n\n")
	b.WriteString("| example | cold start to warm (page cache dropped) | restore, image on disk (page cache dropped) | restore, image in the page cache | image | weights |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, e := range r.Examples {
		fmt.Fprintf(b, "| %s | %.2f s | %s | %s | %.2f GB | %s |\n", e.Name, e.Cold,
			seconds(e.RestoreCold, e.Cold), seconds(e.RestoreWarm, e.Cold), e.ImageBytes/1e9, gb(e.WeightBytes))
	}
	b.WriteString("\n")
	for _, e := range r.Examples {
		fmt.Fprintf(b, "- %s: the server's own start: %s", e.Name, infoList(e.Info))
		if len(e.CkptPhases) > 0 {
			fmt.Fprintf(b, "; checkpoint on ready: %s", phaseList(e.CkptPhases))
		}
		for _, c := range []string{"cold", "warm"} {
			if p := e.Phases[c]; p != nil {
				fmt.Fprintf(b, "; restore (%s page cache): %s", c, phaseList(p))
			}
		}
		if e.DumpStats != nil {
			fmt.Fprintf(b, "; CRIU's own, dump: %s", criuStatsList(e.DumpStats))
		}
		for _, c := range []string{"cold", "warm"} {
			if st := e.RestoreStats[c]; st != nil {
				fmt.Fprintf(b, "; CRIU's own, restore (%s page cache): %s", c, criuStatsList(st))
			}
		}
		if rel, ok := e.Prepare["last_release"].(map[string]any); ok {
			fmt.Fprintf(b, "; prepare exchange: reserve %s before, %s after, %s allocated",
				gbAny(rel["reserved_before"]), gbAny(rel["reserved_after"]), gbAny(rel["allocated"]))
		}
		b.WriteString(".\n")
	}
	b.WriteString("\n")
}

// seconds is a restore time with its speed-up over the cold start.
func seconds(v, cold float64) string {
	if v == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f s (%s)", v, ratio(cold, v))
}

func gb(bytes float64) string {
	if bytes == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f GB", bytes/1e9)
}

func gbAny(v any) string {
	f, _ := v.(float64)
	return fmt.Sprintf("%.2f GB", f/1e9)
}

// infoList renders the numeric fields of a server's /info, sorted.
func infoList(info map[string]any) string {
	var parts []string
	for k, v := range info {
		if f, ok := v.(float64); ok && strings.HasSuffix(k, "_s") {
			parts = append(parts, fmt.Sprintf("%s %.2f s", strings.TrimSuffix(k, "_s"), f))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// criuStatsList renders CRIU's own measurements (criu.Stats), sorted:
// seconds for the _s names, page counts as bytes of 4 KiB pages.
func criuStatsList(st map[string]float64) string {
	var parts []string
	for k, v := range st {
		switch {
		case strings.HasSuffix(k, "_s"):
			parts = append(parts, fmt.Sprintf("%s %.3f s", strings.TrimSuffix(k, "_s"), v))
		case strings.HasPrefix(k, "pages_"):
			parts = append(parts, fmt.Sprintf("%s %.2f GB", k, v*4096/1e9))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}
