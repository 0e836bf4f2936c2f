// Command cudactl drives the CUDA driver checkpoint API on host processes,
// for the baseline of make bench-gpu: "plain CRIU + driver API", the same
// steps the shim runs, by hand and without containerd.
//
//	cudactl checkpoint PID...   lock all, then checkpoint all (GPU -> host)
//	cudactl restore PID...      restore all (host -> GPU), then unlock all
//	cudactl state PID...        print each process's checkpoint state
//
// The driver is loaded as the shim loads it (SNAPSHOT_LIBCUDA or
// libcuda.so.1 on the library path).
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/cudackpt"
)

func main() {
	if len(os.Args) < 3 {
		fail(fmt.Errorf("usage: cudactl checkpoint|restore|state PID..."))
	}
	pids := make([]int, 0, len(os.Args)-2)
	for _, a := range os.Args[2:] {
		pid, err := strconv.Atoi(a)
		if err != nil {
			fail(fmt.Errorf("bad pid %q", a))
		}
		pids = append(pids, pid)
	}
	drv, err := cudackpt.Load("")
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	switch os.Args[1] {
	case "checkpoint":
		_, err = cudackpt.CheckpointAll(ctx, drv, pids, 10*time.Second)
	case "restore":
		err = cudackpt.RestoreAll(ctx, drv, pids, nil)
	case "state":
		for _, pid := range pids {
			st, err := drv.State(pid)
			if err != nil {
				fail(err)
			}
			fmt.Println(pid, st)
		}
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "cudactl:", err)
	os.Exit(1)
}
