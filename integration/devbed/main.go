// Command devbed starts the test bed's private containerd and keeps it
// running until interrupted, for poking at the shim by hand:
//
//	go run ./integration/devbed -dir /var/tmp/devbed
//
// It prints the socket to pass to ctr --address and crictl.
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
	shim := flag.String("shim", "", "built containerd-shim-snapshot-v2")
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
	abs, _ := filepath.Abs(*shim)
	bed, err := testbed.Start(testbed.Config{Dir: *dir, ShimPath: abs, ShimOptions: body})
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
