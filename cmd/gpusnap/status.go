package main

import (
	"flag"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
	"github.com/gpusnap/containerd-shim-snapshot-v2/phases"
)

func init() {
	commands["status"] = &command{
		summary: "List this node's recent restores and checkpoints, newest first, from the shim's event\n" +
			"files: outcome, container, checkpoint, seconds (the sum of the timed phases) and each\n" +
			"phase, and the reason for a cold start or failure.",
		setup: func(fs *flag.FlagSet) runFunc {
			dir := eventsDirFlag(fs)
			since := fs.String("since", "24h", "show events of the last `DURATION` (e.g. 90m, 24h, 7d)")
			return func(e *env, args []string) int { return runStatus(e, args, *dir, *since) }
		},
	}
}

// statusEntry is one row of status --json.
type statusEntry struct {
	events.Event
	TotalSeconds float64 `json:"total_seconds"`
}

// statusNow is the clock of status --since; a variable for tests.
var statusNow = time.Now

func runStatus(e *env, args []string, dir, sinceFlag string) int {
	if len(args) > 0 {
		return e.usageErrorf("takes no arguments, got %q", args)
	}
	window, err := parseSince(sinceFlag)
	if err != nil {
		return e.usageErrorf("--since: %v", err)
	}
	since := statusNow().Add(-window)
	evts, err := events.Read(dir, since)
	if err != nil {
		return e.errorf("%v", err)
	}
	slices.Reverse(evts) // newest first
	if e.json {
		entries := make([]statusEntry, 0, len(evts))
		for _, ev := range evts {
			entries = append(entries, statusEntry{Event: ev, TotalSeconds: round3(ev.TotalSeconds())})
		}
		return e.writeJSON(entries)
	}
	if len(evts) == 0 {
		what := "no restores or checkpoints recorded in " + dir
		if !exists(dir) {
			what += " (it does not exist yet)"
		}
		fmt.Fprintf(e.stdout, "%s since %s\n", what, formatTime(since))
		return exitOK
	}
	fmt.Fprintf(e.stdout, "since %s: %s\n\n", formatTime(since), summary(evts))
	w := table(e.stdout)
	fmt.Fprintln(w, "TIME\tKIND\tOUTCOME\tCONTAINER\tCHECKPOINT\tSECONDS\tPHASES\tREASON")
	for _, ev := range evts {
		reason := "-"
		if ev.Reason != "" {
			reason = "[" + ev.Code() + "] " + oneLine(ev.Reason)
		}
		container := or(ev.ContainerID, "?")
		if ev.Namespace != "" {
			container = ev.Namespace + "/" + container
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t%s\n", formatTime(ev.Time), ev.Kind, ev.Outcome,
			container, or(ev.Checkpoint, "-"), ev.TotalSeconds(), or(phaseString(ev.Phases), "-"), reason)
	}
	return flush(e, w)
}

// parseSince reads a duration, with whole days ("7d") as well as Go's units.
func parseSince(s string) (time.Duration, error) {
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
	}
	if d <= 0 {
		return 0, fmt.Errorf("duration %q is not positive", s)
	}
	return d, nil
}

// summary counts outcomes: "3 restores (2 restored, 1 cold-start), 1 checkpoint (1 checkpointed)",
// then registry transfers, if any.
func summary(evts []events.Event) string {
	var parts []string
	for _, kind := range []struct {
		name     string
		outcomes []string
	}{{events.KindRestore, events.RestoreOutcomes}, {events.KindCheckpoint, events.CheckpointOutcomes}, {events.KindTransfer, events.TransferOutcomes}} {
		counts := map[string]int{}
		total := 0
		for _, ev := range evts {
			if ev.Kind == kind.name {
				counts[ev.Outcome]++
				total++
			}
		}
		if total == 0 && kind.name == events.KindTransfer { // only where a registry is configured
			continue
		}
		var detail []string
		for _, o := range append(slices.Clone(kind.outcomes), slices.Sorted(maps.Keys(counts))...) {
			if counts[o] > 0 {
				detail = append(detail, fmt.Sprintf("%d %s", counts[o], o))
				delete(counts, o)
			}
		}
		s := fmt.Sprintf("%d %ss", total, kind.name)
		if total == 1 {
			s = "1 " + kind.name
		}
		if len(detail) > 0 {
			s += " (" + strings.Join(detail, ", ") + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// phaseString is the compact phase column, in run order: "find=0.03 criu_restore=3.29".
func phaseString(p map[string]float64) string {
	names := phases.Sorted(p)
	parts := make([]string, 0, len(names))
	for _, name := range names {
		parts = append(parts, fmt.Sprintf("%s=%.2f", name, p[name]))
	}
	return strings.Join(parts, " ")
}

func round3(v float64) float64 {
	r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'f', 3, 64), 64)
	return r
}
