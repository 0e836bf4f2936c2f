package main

import (
	"flag"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

func init() {
	commands["rm"] = &command{
		summary: "Remove checkpoints. Each is moved aside in one rename first, so a restore never\n" +
			"sees a half-deleted checkpoint.",
		args:  "NAME...",
		setup: noFlags(runRm),
	}
	commands["prune"] = &command{
		summary: "Apply a retention policy: keep the newest --keep generations of each identity key,\n" +
			"then remove the oldest checkpoints until the store fits --max-bytes, and delete\n" +
			"staging and trash directories of dead writers older than --stale. Checkpoints\n" +
			"with unreadable manifests are never pruned (see 'gpusnap ls').",
		setup: func(fs *flag.FlagSet) runFunc {
			var p pruneFlags
			p.register(fs)
			return func(e *env, args []string) int { return runPrune(e, args, p) }
		},
	}
}

// removal is one name rm or prune acted on. Size is what its manifest
// recorded; broken checkpoints and leftovers have none.
type removal struct {
	Name  string `json:"name"`
	Size  *int64 `json:"size,omitempty"`
	Error string `json:"error,omitempty"`
}

// String is the name with its size, for human output.
func (r removal) String() string {
	if r.Size == nil {
		return r.Name
	}
	return fmt.Sprintf("%s (%s)", r.Name, humanBytes(*r.Size))
}

func runRm(e *env, names []string) int {
	if len(names) == 0 {
		return e.usageErrorf("needs checkpoint names")
	}
	s, err := e.openStore()
	if err != nil {
		return e.errorf("%v", err)
	}
	sizes := sizesByName(s)
	results := make([]removal, 0, len(names))
	failed := 0
	for _, name := range names {
		r := removal{Name: name, Size: sizes[name]}
		if err := s.Remove(name); err != nil {
			r.Error = nameError(s, name, err).Error()
			failed++
		}
		results = append(results, r)
	}
	if e.json {
		e.writeJSON(results)
	}
	for _, r := range results {
		switch {
		case r.Error != "":
			fmt.Fprintf(e.stderr, "gpusnap rm: %s\n", r.Error)
		case !e.json:
			fmt.Fprintf(e.stdout, "removed %s\n", r)
		}
	}
	if failed > 0 {
		return exitFail
	}
	return exitOK
}

// sizesByName maps the names of readable checkpoints to their recorded
// sizes, for reporting what a removal freed; a store that can't be listed
// only loses the sizes.
func sizesByName(s *storage.Store) map[string]*int64 {
	sizes := map[string]*int64{}
	list, _ := s.List()
	for _, c := range list {
		if c.Manifest != nil {
			sizes[c.Name] = new(c.Size())
		}
	}
	return sizes
}

// pruneFlags are prune's policy flags.
type pruneFlags struct {
	keep     int
	maxBytes byteSize
	stale    time.Duration
}

func (p *pruneFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&p.keep, "keep", 0, "keep the newest `N` generations of each key (0: no limit)")
	fs.Var(&p.maxBytes, "max-bytes", "remove the oldest checkpoints until the store holds at most `SIZE`\n"+
		"(bytes, or with K, M, G, T suffix, powers of 1024: 500M, 10G; 0: no limit)")
	fs.DurationVar(&p.stale, "stale", time.Hour, "delete leftovers of interrupted writers at least `DURATION` old\n"+
		"(0: any age, but live writers are spared where flock works; negative: never).\n"+
		"On a shared store keep it above the longest checkpoint")
}

func runPrune(e *env, args []string, p pruneFlags) int {
	if len(args) > 0 {
		return e.usageErrorf("takes no arguments, got %q", args)
	}
	if p.keep < 0 {
		return e.usageErrorf("--keep %d: must be 0 or more", p.keep)
	}
	s, err := e.openStore()
	if err != nil {
		return e.errorf("%v", err)
	}
	sizes := sizesByName(s)
	removed, pruneErr := s.Prune(storage.PrunePolicy{
		KeepPerKey:   p.keep,
		MaxBytes:     int64(p.maxBytes),
		StaleStaging: p.stale,
	})
	results := make([]removal, 0, len(removed))
	var freed int64
	for _, name := range removed {
		results = append(results, removal{Name: name, Size: sizes[name]})
		if size := sizes[name]; size != nil {
			freed += *size
		}
	}
	if e.json {
		out := struct {
			Removed []removal `json:"removed"`
			Freed   int64     `json:"freed"`
			Error   string    `json:"error,omitempty"`
		}{Removed: results, Freed: freed}
		if pruneErr != nil {
			out.Error = pruneErr.Error()
		}
		e.writeJSON(out)
	} else {
		for _, r := range results {
			if strings.HasPrefix(r.Name, ".") {
				fmt.Fprintf(e.stdout, "removed leftover %s\n", r.Name)
			} else {
				fmt.Fprintf(e.stdout, "removed %s\n", r)
			}
		}
		if len(results) == 0 {
			fmt.Fprintln(e.stdout, "nothing to prune")
		} else {
			fmt.Fprintf(e.stdout, "freed %s\n", humanBytes(freed))
		}
	}
	if pruneErr != nil {
		return e.errorf("%v", pruneErr)
	}
	return exitOK
}

// byteSize is a flag value in bytes that accepts 500M, 10G, 1.5T, 10GiB.
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

// parseSize reads a byte count with an optional binary suffix: K, M, G, T,
// P, each optionally followed by "i" and/or "B" (10G = 10GiB = 10GB =
// 10*2^30). Binary throughout, as ls prints sizes.
func parseSize(s string) (int64, error) {
	num := strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B")
	mult := int64(1)
	for i, unit := range []string{"K", "M", "G", "T", "P"} {
		rest, ok := strings.CutSuffix(num, unit)
		if !ok {
			rest, ok = strings.CutSuffix(num, unit+"I")
		}
		if ok {
			num, mult = strings.TrimSpace(rest), int64(1)<<(10*(i+1))
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || math.IsNaN(v) || v*float64(mult) >= math.MaxInt64 {
		return 0, fmt.Errorf("invalid size %q: want bytes or a number with K, M, G or T (e.g. 500M, 10G)", s)
	}
	return int64(v * float64(mult)), nil
}
