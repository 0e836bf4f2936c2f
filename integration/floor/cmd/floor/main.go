// Command floor measures the bandwidths that bound a restore on this
// machine: disk and page-cache reads of a checkpoint image (or any large
// file or directory), memory copy, and faulting in fresh memory; and those
// that bound a registry pull: loopback TCP and synced disk writes.
//
//	floor -path /var/lib/images/ckpt -streams 8 -write-dir /var/lib/store -json
//
// A measurement that fails reports its error in its note and the others
// still run; the exit status is 1 only for bad flags.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"text/tabwriter"

	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/floor"
)

// options are the parsed command-line flags.
type options struct {
	path          string
	writeDir      string
	transferBytes int64
	streams       int
	memBytes      int64
	threads       int
	json          bool
}

// jsonResult is floor.Result as printed with -json, GB/s included so
// consumers need not recompute it.
type jsonResult struct {
	Name    string  `json:"name"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	GBps    float64 `json:"gbps"`
	Note    string  `json:"note"`
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without os.Exit, returning the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "floor:", err)
		return 1
	}
	machine, err := floor.Machine()
	if err != nil {
		fmt.Fprintln(stderr, "floor: machine info incomplete:", err)
	}
	results := measure(opts)
	if opts.json {
		err = printJSON(stdout, machine, results)
	} else {
		err = printTable(stdout, machine, results)
	}
	if err != nil {
		fmt.Fprintln(stderr, "floor:", err)
	}
	return 0
}

// parseFlags parses and checks args; errors are flag errors (exit 1).
func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.path, "path", "", "file or directory to read for the disk and cache measurements (skipped without it)")
	fs.StringVar(&o.writeDir, "write-dir", "", "directory to write a file into for the disk write measurement (skipped without it)")
	fs.Int64Var(&o.transferBytes, "transfer-bytes", 2<<30, "bytes sent over loopback and written for the disk write measurement")
	fs.IntVar(&o.streams, "streams", 8, "parallel read streams (disk is also measured with 1)")
	fs.Int64Var(&o.memBytes, "mem-bytes", 1<<30, "buffer size in bytes for memcpy and fault-in")
	fs.IntVar(&o.threads, "threads", runtime.NumCPU(), "threads for memcpy and fault-in")
	fs.BoolVar(&o.json, "json", false, "print JSON instead of a table")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	case o.streams < 1:
		return o, fmt.Errorf("-streams must be at least 1, got %d", o.streams)
	case o.threads < 1:
		return o, fmt.Errorf("-threads must be at least 1, got %d", o.threads)
	case o.transferBytes < 1<<20:
		return o, fmt.Errorf("-transfer-bytes must be at least 1 MiB, got %d", o.transferBytes)
	case o.memBytes < int64(os.Getpagesize()):
		return o, fmt.Errorf("-mem-bytes must be at least one page, got %d", o.memBytes)
	}
	return o, nil
}

// measure runs every measurement in turn; a failure becomes the note of
// its result rather than stopping the rest.
func measure(o options) []floor.Result {
	var results []floor.Result
	add := func(r floor.Result, err error) {
		if err != nil {
			r = floor.Result{Name: r.Name, Note: "error: " + err.Error()}
		}
		results = append(results, r)
	}
	if o.path == "" {
		results = append(results, floor.Result{Name: "disk_read", Note: "skipped: no -path"},
			floor.Result{Name: "cache_read", Note: "skipped: no -path"})
	} else {
		add(floor.DiskRead(o.path, 1))
		if o.streams > 1 {
			add(floor.DiskRead(o.path, o.streams))
		}
		add(floor.CacheRead(o.path, o.streams))
	}
	add(floor.Memcpy(o.memBytes, o.threads))
	add(floor.FaultIn(o.memBytes, o.threads))
	add(floor.FaultInHuge(o.memBytes, o.threads))
	add(floor.FirstReadAfterFill(o.memBytes, o.threads))
	add(floor.Loopback(o.transferBytes))
	if o.writeDir == "" {
		results = append(results, floor.Result{Name: "disk_write", Note: "skipped: no -write-dir"})
	} else {
		add(floor.DiskWrite(o.writeDir, o.transferBytes))
	}
	return results
}

// printJSON writes {"results": [...], "machine": {...}}.
func printJSON(w io.Writer, m floor.MachineInfo, results []floor.Result) error {
	out := struct {
		Results []jsonResult      `json:"results"`
		Machine floor.MachineInfo `json:"machine"`
	}{Results: []jsonResult{}, Machine: m}
	for _, r := range results {
		out.Results = append(out.Results, jsonResult{r.Name, r.Bytes, r.Seconds, r.GBps(), r.Note})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// printTable writes the machine line and one aligned row per result.
func printTable(w io.Writer, m floor.MachineInfo, results []floor.Result) error {
	fmt.Fprintf(w, "%s: %s, %d cpus, %.1f GiB memory\n\n", m.Hostname, m.Kernel, m.CPUs, float64(m.MemTotal)/(1<<30))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tMiB\tSECONDS\tGB/s\tNOTE")
	for _, r := range results {
		if r.Seconds <= 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t%s\n", r.Name, r.Note)
			continue
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%.3f\t%.2f\t%s\n", r.Name, float64(r.Bytes)/(1<<20), r.Seconds, r.GBps(), r.Note)
	}
	return tw.Flush()
}
