// Command devbed starts the test bed's private containerd and keeps it
// running until interrupted, for poking at the shim by hand:
//
//	go run ./integration/devbed -dir /var/tmp/devbed
//
// It builds the shim (and the test images) as the other beds do, unless
// -shim names a built one, and prints the socket to pass to ctr --address
// and crictl.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
)

func main() {
	dir := flag.String("dir", "/var/tmp/devbed", "directory for the bed")
	shim := flag.String("shim", "", "built containerd-shim-snapshot-v2 (default: build it, with the test images)")
	options := flag.String("options", "", "snapshot handler options TOML file")
	flag.Parse()
	body := ""
	if *options != "" {
		data, err := os.ReadFile(*options)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		body = string(data)
	}
	bed, err := startBed(*dir, *shim, body)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(bed.Socket)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	<-sigs
	left, err := bed.Stop()
	for _, l := range left {
		fmt.Println("left:", l)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}

// startBed starts the bed on the shim at shim, or on one built from this
// checkout (testbed.Prepare, which also imports the test images).
func startBed(dir, shim, options string) (*testbed.Bed, error) {
	if shim == "" {
		return testbed.Prepare(dir, options, nil)
	}
	abs, err := filepath.Abs(shim)
	if err != nil {
		return nil, err
	}
	return testbed.Start(testbed.Config{Dir: dir, ShimPath: abs, ShimOptions: options})
}
