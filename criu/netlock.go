package criu

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"

	"github.com/gpusnap/containerd-shim-snapshot-v2/internal/reaped"
)

// lockChain is the iptables chain CRIU's network lock adds to INPUT and
// OUTPUT of the dumped tasks' network namespace; it drops every packet not
// marked by CRIU until the dump ends.
const lockChain = "CRIU"

// UnlockNetwork removes CRIU's network lock from the network namespace of
// pid. CRIU removes it itself at the end of a dump, but a CRIU killed
// mid-dump leaves it, and the container stays cut off from its network
// (connections time out). It does nothing where no lock is left.
func UnlockNetwork(pid int) error {
	for _, tool := range []string{"iptables", "ip6tables"} {
		if !inNetns(pid, tool, "-w", "-S", lockChain) {
			continue
		}
		for _, args := range [][]string{
			{"-w", "-D", "INPUT", "-j", lockChain},
			{"-w", "-D", "OUTPUT", "-j", lockChain},
			{"-w", "-F", lockChain},
			{"-w", "-X", lockChain},
		} {
			if out, err := reaped.CombinedOutput(netnsCommand(pid, tool, args...)); err != nil {
				return fmt.Errorf("removing CRIU's network lock (%s %s) in the network namespace of pid %d: %v: %s",
					tool, strings.Join(args, " "), pid, err, out)
			}
		}
	}
	return nil
}

func inNetns(pid int, tool string, args ...string) bool {
	return reaped.Run(netnsCommand(pid, tool, args...)) == nil
}

func netnsCommand(pid int, tool string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=/proc/" + strconv.Itoa(pid) + "/ns/net", tool}, args...)...)
}
