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
package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "child" {
		for {
			time.Sleep(time.Hour)
		}
	}
	if err := os.WriteFile("/state.txt", []byte("written-before-checkpoint"), 0o644); err != nil {
		fail(err)
	}
	child := exec.Command(os.Args[0], "child")
	if err := child.Start(); err != nil {
		fail(err)
	}
	ln, err := net.Listen("tcp", ":8080")
	if err != nil {
		fail(err)
	}
	var count atomic.Int64
	go countForever(&count)
	go serve(ln, &count, child.Process.Pid)
	readyAt, _ := strconv.Atoi(os.Getenv("READY_AT"))
	if readyAt == 0 {
		readyAt = 20
	}
	for count.Load() < int64(readyAt) {
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Println("warm")
	if dir := os.Getenv("CONTROL_DIR"); dir != "" {
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

func serve(ln net.Listener, count *atomic.Int64, childPID int) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			continue
		}
		data, _ := os.ReadFile("/state.txt")
		child := "alive"
		if syscall.Kill(childPID, 0) != nil {
			child = "dead"
		}
		fmt.Fprintf(conn, "count=%d file=%s child=%s\n", count.Load(), data, child)
		conn.Close()
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "stateful:", err)
	os.Exit(1)
}
