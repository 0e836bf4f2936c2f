// Command stateful is the checkpoint/restore test workload. Its state lives
// where a restore must bring it back: an in-memory counter, a file in the
// container's writable layer, a listening TCP socket and a child process.
//
// Every connection to :8080 gets one line:
//
//	count=N file=CONTENT child=alive|dead
//
// With CONTROL_DIR set, it writes ready-for-checkpoint there once the counter
// reaches READY_AT (default 20), the workload side of the shim's contract.
//
// For the GPU tests with the fake driver: FAKE_CUDA_TOKEN makes the main
// process a CUDA process (its child is started without it); with
// CUDA_CHILD_TOKEN a second child is a CUDA process of its own, and with
// DEVICE_CHILD=PATH a third child opens the device file PATH itself and
// keeps it open, as a process holding an NVML handle would. With
// FAKE_CUDA_DEVICE=PATH the main process holds PATH open as a CUDA process
// holds the GPU's device files: it closes it on SIGUSR1 and opens it again
// on SIGUSR2 (the fake driver's checkpoint and restore), and its first child
// inherits the open file, as torch.compile's workers inherit theirs.
//
// With PREPARE_ON_CHECKPOINT=1 it takes part in the shim's prepare
// exchange and logs each step to prepare-log in its control directory
// ("prepared", then "resumed by checkpoint-done" or "resumed by
// restore-complete"); with =mute it asks for the exchange but never answers.
//
// With HOLD_CONNECTION=1 it also connects to itself once and keeps that
// connection open (its far end closed after the answer), as servers keep
// client and probe connections: CRIU must then be told what to do with
// connected TCP sockets.
//
// For benchmarks, STATE_MB and WARMUP_SECONDS make it behave like a server
// with a slow cold start: before it listens it fills STATE_MB MiB of memory
// with computed data and keeps working until WARMUP_SECONDS have passed.
// The answer then also carries a checksum of that state.
package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "child" {
		if len(os.Args) > 2 {
			if _, err := os.Open(os.Args[2]); err != nil {
				fail(err)
			}
		}
		for {
			time.Sleep(time.Hour)
		}
	}
	if err := os.WriteFile(stateFile(), []byte("written-before-checkpoint"), 0o644); err != nil {
		fail(err)
	}
	child := exec.Command(os.Args[0], "child")
	if path := os.Getenv("FAKE_CUDA_DEVICE"); path != "" && os.Getenv("FAKE_CUDA_TOKEN") != "" {
		child.ExtraFiles = []*os.File{holdDevice(path)}
	}
	// Only the main process plays a CUDA process for the fake driver.
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "FAKE_CUDA_TOKEN=") {
			child.Env = append(child.Env, e)
		}
	}
	if err := child.Start(); err != nil {
		fail(err)
	}
	if token := os.Getenv("CUDA_CHILD_TOKEN"); token != "" {
		startChild(append(child.Env, "FAKE_CUDA_TOKEN="+token))
	}
	if path := os.Getenv("DEVICE_CHILD"); path != "" {
		startChild(child.Env, path)
	}
	state := warmUp()
	ln, err := net.Listen("tcp", ":8080")
	if err != nil {
		fail(err)
	}
	var count atomic.Int64
	go countForever(&count)
	go serve(ln, &count, child.Process.Pid, state)
	if os.Getenv("HOLD_CONNECTION") == "1" {
		held, err := net.Dial("tcp", "127.0.0.1:8080")
		if err != nil {
			fail(err)
		}
		defer held.Close()
	}
	readyAt, _ := strconv.Atoi(os.Getenv("READY_AT"))
	if readyAt == 0 {
		readyAt = 20
	}
	for count.Load() < int64(readyAt) {
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Println("warm")
	if dir := os.Getenv("CONTROL_DIR"); dir != "" {
		if mode := os.Getenv("PREPARE_ON_CHECKPOINT"); mode != "" {
			os.WriteFile(filepath.Join(dir, "prepare-on-checkpoint"), nil, 0o644)
			if mode == "1" {
				go answerPrepare(dir)
			}
		}
		os.WriteFile(filepath.Join(dir, "ready-for-checkpoint"), []byte("warm\n"), 0o644)
	}
	select {}
}

func countForever(count *atomic.Int64) {
	for {
		time.Sleep(100 * time.Millisecond)
		count.Add(1)
	}
}

// warmUp builds the benchmark state: STATE_MB MiB of data derived from a
// simple generator, then waits out the rest of WARMUP_SECONDS.
func warmUp() []uint64 {
	start := time.Now()
	mb, _ := strconv.Atoi(os.Getenv("STATE_MB"))
	state := make([]uint64, mb<<17)
	x := uint64(88172645463325252)
	for i := range state {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		state[i] = x
	}
	secs, _ := strconv.Atoi(os.Getenv("WARMUP_SECONDS"))
	time.Sleep(time.Until(start.Add(time.Duration(secs) * time.Second)))
	return state
}

func checksum(state []uint64) uint64 {
	var sum uint64
	for i := 0; i < len(state); i += 4096 {
		sum += state[i]
	}
	return sum
}

func serve(ln net.Listener, count *atomic.Int64, childPID int, state []uint64) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			continue
		}
		data, _ := os.ReadFile(stateFile())
		child := "alive"
		if syscall.Kill(childPID, 0) != nil {
			child = "dead"
		}
		fmt.Fprintf(conn, "count=%d file=%s child=%s state=%x\n", count.Load(), data, child, checksum(state))
		conn.Close()
	}
}

// answerPrepare is the workload's side of the prepare exchange: it answers
// each checkpoint-prepare and waits for the word to grow back.
func answerPrepare(dir string) {
	exists := func(name string) bool { _, err := os.Stat(filepath.Join(dir, name)); return err == nil }
	logStep := func(step string) {
		f, err := os.OpenFile(filepath.Join(dir, "prepare-log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintln(f, step)
			f.Close()
		}
	}
	for {
		time.Sleep(20 * time.Millisecond)
		if !exists("checkpoint-prepare") || exists("checkpoint-prepared") {
			continue
		}
		logStep("prepared")
		os.WriteFile(filepath.Join(dir, "checkpoint-prepared"), nil, 0o644)
		for !exists("checkpoint-done") && !exists("restore-complete") {
			time.Sleep(20 * time.Millisecond)
		}
		if exists("restore-complete") {
			logStep("resumed by restore-complete")
		} else {
			logStep("resumed by checkpoint-done")
		}
	}
}

// holdDevice opens the device file at path and keeps a file of it open as
// the driver would: let go on SIGUSR1, taken back on SIGUSR2. It returns
// the first file, for a child to inherit.
func holdDevice(path string) *os.File {
	open := func() *os.File {
		f, err := os.Open(path)
		if err != nil {
			fail(err)
		}
		return f
	}
	first := open()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		held := first
		for sig := range sigs {
			switch {
			case sig == syscall.SIGUSR1 && held != nil:
				held.Close()
				held = nil
			case sig == syscall.SIGUSR2 && held == nil:
				held = open()
			}
		}
	}()
	return first
}

// startChild starts one more child that sleeps (holding path open, if
// given) with env.
func startChild(env []string, path ...string) {
	c := exec.Command(os.Args[0], append([]string{"child"}, path...)...)
	c.Env = env
	if err := c.Start(); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "stateful:", err)
	os.Exit(1)
}

// stateFile is the file the workload keeps in its writable layer; STATE_FILE
// moves it for runs outside a container.
func stateFile() string {
	if f := os.Getenv("STATE_FILE"); f != "" {
		return f
	}
	return "/state.txt"
}
