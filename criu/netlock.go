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

// UnlockNetwork removes CRIU's network lock from the network namespace at
// netns (a /proc/<pid>/ns/net or a bind-mounted namespace's path). CRIU
// removes it itself at the end of a dump or restore, but a CRIU killed
// midway leaves it, and the namespace stays cut off from its network
// (connections time out): the container that was dumped, or the pod whose
// namespace the cold start after a failed restore joins. It does nothing
// where no lock is left.
func UnlockNetwork(netns string) error {
	for _, tool := range []string{"iptables", "ip6tables"} {
		if !inNetns(netns, tool, "-w", "-S", lockChain) {
			continue
		}
		for _, args := range [][]string{
			{"-w", "-D", "INPUT", "-j", lockChain},
			{"-w", "-D", "OUTPUT", "-j", lockChain},
			{"-w", "-F", lockChain},
			{"-w", "-X", lockChain},
		} {
			if out, err := reaped.CombinedOutput(netnsCommand(netns, tool, args...)); err != nil {
				return fmt.Errorf("removing CRIU's network lock (%s %s) in network namespace %s: %v: %s",
					tool, strings.Join(args, " "), netns, err, out)
			}
		}
	}
	return nil
}

func inNetns(netns, tool string, args ...string) bool {
	return reaped.Run(netnsCommand(netns, tool, args...)) == nil
}

func netnsCommand(netns, tool string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + netns, tool}, args...)...)
}

// ProcNetns is the path of pid's network namespace.
func ProcNetns(pid int) string { return "/proc/" + strconv.Itoa(pid) + "/ns/net" }
