// Command bench measures the shim against containerd's runc shim on one
// private containerd, interleaving the two so that both see the same machine.
//
//	go run ./integration/bench -mode cold -runs 30
//
// Mode cold times `ctr run --rm` of a trivial container end to end (shim
// start, create, start, exit, delete) and prints min and median per runtime
// and the ratio of medians. Mode restore compares cold start, restore through
// the shim and plain `criu restore` of a workload with a slow warm-up. Mode
// encryption compares checkpoints and restores of that workload stored in
// the clear and encrypted (encryption_key), restores interleaved. Mode
// registry runs that workload's checkpoints through a registry on loopback;
// mode transfer measures only the registry's push and pulls, of a synthetic
// checkpoint, without containerd (it runs on the GPU machine too).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/containerdconfig"
	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
)

func main() {
	mode := flag.String("mode", "cold", "benchmark: cold, restore, encryption, registry or transfer")
	runs := flag.Int("runs", 30, "runs per runtime (cold)")
	stateMB := flag.Int("state-mb", 2048, "workload state in MiB (restore)")
	warmup := flag.Int("warmup", 20, "workload warm-up seconds (restore)")
	out := flag.String("out", "", "also write the results as JSON to this file (restore, registry, transfer)")
	decryptDir := flag.String("decrypt-dir", "", "decrypt_dir of the encrypting handler (encryption; default: the shim's)")
	sizeMB := flag.Int("size-mb", 2048, "page image in MiB (transfer)")
	cpuProfile := flag.String("cpuprofile", "", "write this process's CPU profile to this file (transfer: the client's push and pulls)")
	flag.Parse()
	if *mode != "cold" && *mode != "restore" && *mode != "encryption" && *mode != "registry" && *mode != "transfer" {
		fail(fmt.Errorf("unknown mode %q", *mode))
	}
	dir, err := os.MkdirTemp("/var/tmp", "snapshot-bench-")
	if err != nil {
		fail(err)
	}
	// fail exits without running deferred calls: the bench's directory
	// (gigabytes of store) goes first.
	fail := func(err error) { os.RemoveAll(dir); fail(err) }
	defer os.RemoveAll(dir)
	if *mode == "transfer" {
		if err := runTransfer(dir, *sizeMB, *out, *cpuProfile); err != nil {
			fail(err)
		}
		return
	}
	// The bench's node events stay in its directory.
	eventsDir := filepath.Join(dir, "events")
	var handlers map[string]string
	if *mode == "restore" {
		handlers = criHandlers(dir)
	}
	bed, err := testbed.Prepare(dir, "", handlers, "SNAPSHOT_EVENTS_DIR="+eventsDir)
	if err != nil {
		fail(err)
	}
	var times map[string][]time.Duration
	var restore *restoreResult
	var encryption *encryptionResult
	var reg *registryResult
	switch *mode {
	case "cold":
		times, err = coldRuns(bed, *runs)
	case "encryption":
		encryption, err = encryptionBench(bed, dir, *stateMB, *warmup, *decryptDir)
	case "registry":
		reg, err = registryBench(bed, dir, eventsDir, *stateMB, *warmup)
	default:
		restore, err = restoreBench(bed, dir, *stateMB, *warmup)
	}
	if left, stopErr := bed.Stop(); stopErr != nil || len(left) > 0 {
		fmt.Fprintln(os.Stderr, "bench: teardown:", stopErr, left)
	}
	if err != nil {
		fail(err)
	}
	switch *mode {
	case "cold":
		report(times, *runs)
	case "encryption":
		encryption.report(*stateMB, *warmup)
	case "registry":
		reg.report(*stateMB, *warmup)
		if *out != "" {
			if err := reg.writeJSON(*out, *stateMB, *warmup); err != nil {
				fail(err)
			}
		}
	default:
		reportRestore(restore, *stateMB, *warmup)
		if *out != "" {
			if err := writeRestoreJSON(*out, restore, *stateMB, *warmup); err != nil {
				fail(err)
			}
		}
	}
}

// runTransfer runs, reports and writes the transfer benchmark, profiling
// it when profile names a file.
func runTransfer(dir string, sizeMB int, out, profile string) error {
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	r, err := transferBench(dir, sizeMB)
	if err != nil {
		return err
	}
	r.report(sizeMB)
	if out == "" {
		return nil
	}
	return r.writeJSON(out, sizeMB)
}

// coldRuns alternates runc and snapshot runs so drift affects both equally.
func coldRuns(bed *testbed.Bed, runs int) (map[string][]time.Duration, error) {
	times := map[string][]time.Duration{}
	runtimes := []string{testbed.RuncRuntime, containerdconfig.RuntimeType}
	for i := 0; i < runs; i++ {
		for _, rt := range runtimes {
			id := fmt.Sprintf("bench-%d-%d", i, len(times[rt])+len(rt))
			start := time.Now()
			cmd := exec.Command("ctr", "--address", bed.Socket, "--namespace", bed.Namespace,
				"run", "--rm", "--runtime", rt, testbed.BusyboxRef, id, "true")
			if out, err := cmd.CombinedOutput(); err != nil {
				return nil, fmt.Errorf("%s run %d: %v: %s", rt, i, err, out)
			}
			times[rt] = append(times[rt], time.Since(start))
		}
	}
	return times, nil
}

func report(times map[string][]time.Duration, runs int) {
	host, _ := os.Hostname()
	fmt.Printf("bench-cold: %d interleaved `ctr run --rm busybox true` per runtime, host %s, %s\n",
		runs, host, time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("%-28s %10s %10s\n", "runtime", "min", "median")
	med := map[string]time.Duration{}
	for _, rt := range []string{testbed.RuncRuntime, containerdconfig.RuntimeType} {
		ts := append([]time.Duration(nil), times[rt]...)
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
		med[rt] = ts[len(ts)/2]
		fmt.Printf("%-28s %10s %10s\n", rt, ts[0].Round(time.Millisecond), med[rt].Round(time.Millisecond))
	}
	ratio := float64(med[containerdconfig.RuntimeType]) / float64(med[testbed.RuncRuntime])
	verdict := "meets"
	if ratio > 1.05 {
		verdict = "MISSES"
	}
	fmt.Printf("ratio of medians (snapshot/runc): %.3f (%s the goal of <= 1.05)\n", ratio, verdict)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
