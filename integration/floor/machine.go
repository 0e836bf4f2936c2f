package floor

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// MachineInfo identifies the machine a set of results came from, so numbers
// from different machines are not compared unknowingly.
type MachineInfo struct {
	Hostname string `json:"hostname"`
	Kernel   string `json:"kernel"`
	CPUs     int    `json:"cpus"`
	MemTotal int64  `json:"mem_total"`
}

// Machine describes this machine. It fills in what it can and returns the
// first error met along the way.
func Machine() (MachineInfo, error) {
	m := MachineInfo{CPUs: runtime.NumCPU()}
	var errs []error
	host, err := os.Hostname()
	errs = append(errs, err)
	m.Hostname = host
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		errs = append(errs, fmt.Errorf("floor: uname: %w", err))
	} else {
		m.Kernel = strings.Join([]string{unix.ByteSliceToString(u.Sysname[:]),
			unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Machine[:])}, " ")
	}
	m.MemTotal, err = memInfo("MemTotal")
	errs = append(errs, err)
	for _, err := range errs {
		if err != nil {
			return m, err
		}
	}
	return m, nil
}

// memInfo returns one field of /proc/meminfo in bytes.
func memInfo(key string) (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("floor: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), key+":") {
			return kbField(sc.Text())
		}
	}
	return 0, fmt.Errorf("floor: no %s in /proc/meminfo", key)
}
