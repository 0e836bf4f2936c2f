package testbed

import (
	"fmt"
	"regexp"
	"strconv"
)

// StatefulAnswer is one answer of the stateful workload (StatefulRef): its
// counter, the file it wrote in its writable layer, whether its child
// process lives, and with STATE_MB set the checksum of its state.
type StatefulAnswer struct {
	Count              int
	File, Child, State string
}

var statefulLine = regexp.MustCompile(`count=(\d+) file=(\S*) child=(\w+)(?: state=(\w+))?`)

// ParseStatefulAnswer reads the line the stateful workload answers with.
func ParseStatefulAnswer(out string) (StatefulAnswer, error) {
	m := statefulLine.FindStringSubmatch(out)
	if m == nil {
		return StatefulAnswer{}, fmt.Errorf("unexpected answer %q", out)
	}
	n, _ := strconv.Atoi(m[1])
	return StatefulAnswer{Count: n, File: m[2], Child: m[3], State: m[4]}, nil
}
