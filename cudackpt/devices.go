package cudackpt

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The GPU driver's device files are the character devices whose major
// number /proc/devices lists under a name starting with "nvidia" (nvidia,
// nvidiactl, nvidia-uvm, nvidia-caps, ...). EnvDeviceMajors adds majors for
// test beds without NVIDIA devices, which stand in another device for the
// GPU, as SNAPSHOT_LIBCUDA stands in a fake driver.
const EnvDeviceMajors = "SNAPSHOT_GPU_DEVICE_MAJORS"

// DeviceHolder is a process that holds the GPU driver's device files (open,
// or mapped into its memory) but has no CUDA state the driver can
// checkpoint. The driver's checkpoint of the container's CUDA processes
// leaves such files in place, and CRIU cannot dump them on its own.
type DeviceHolder struct {
	PID     int
	NSPID   int      // its PID in the container's PID namespace (stable across CRIU restores)
	Command string   // the process's name (comm)
	Files   []string // what it holds, e.g. "/dev/nvidiactl (fd 7)", "/dev/nvidia0 (mapped, 3 areas)"
	// Inherited: every device file it has open is the same open file as one
	// of a CUDA process (inherited through fork() after the parent
	// initialised CUDA, which CUDA never lets a child use), or it was found
	// so before (see FindDeviceHolders). Its mappings and files are then
	// leftovers, safe to leave out of the image.
	Inherited bool
}

func (h DeviceHolder) String() string {
	return fmt.Sprintf("process %d (%s) holds %s", h.PID, h.Command, strings.Join(h.Files, ", "))
}

// FindDeviceHolders returns the processes of all that are not among the
// CUDA processes cuda and hold the GPU driver's device files, judging each
// against the open files of the CUDA processes. A node without GPU devices
// has none.
//
// known are the container PIDs (NSPID) of processes found to hold inherited
// files at an earlier checkpoint of the container, or of the checkpoint it
// was restored from: a leftover stays one, though its files stop being the
// CUDA process's once that process has been checkpointed (the driver
// reopens its own) or the container restored (CRIU reopened the
// leftovers').
func FindDeviceHolders(all, cuda, known []int) ([]DeviceHolder, error) {
	majors, err := deviceMajors()
	if err != nil || len(majors) == 0 {
		return nil, err
	}
	cudaFDs := map[int][]deviceFD{}
	for _, pid := range cuda {
		if cudaFDs[pid], err = deviceFDs(pid, majors); err != nil && processExists(pid) {
			return nil, fmt.Errorf("reading the device files of pid %d: %w", pid, err)
		}
	}
	var holders []DeviceHolder
	for _, pid := range minus(all, cuda) {
		h, err := deviceHolder(pid, majors, cudaFDs, known)
		if err != nil {
			if !processExists(pid) {
				continue
			}
			return nil, fmt.Errorf("reading the device files of pid %d: %w", pid, err)
		}
		if len(h.Files) > 0 {
			holders = append(holders, h)
		}
	}
	return holders, nil
}

// deviceHolder describes what GPU device files pid holds.
func deviceHolder(pid int, majors map[uint32]bool, cudaFDs map[int][]deviceFD, known []int) (DeviceHolder, error) {
	nspid, err := NSPID(pid)
	if err != nil {
		return DeviceHolder{}, err
	}
	h := DeviceHolder{PID: pid, NSPID: nspid, Command: command(pid)}
	fds, err := deviceFDs(pid, majors)
	if err != nil {
		return h, err
	}
	maps, err := deviceMaps(pid, majors)
	if err != nil {
		return h, err
	}
	h.Inherited = true
	for _, fd := range fds {
		h.Files = append(h.Files, fmt.Sprintf("%s (fd %d)", fd.path, fd.fd))
		if !sharedWithAny(pid, fd.fd, cudaFDs) {
			h.Inherited = false
		}
	}
	h.Inherited = h.Inherited || slices.Contains(known, nspid)
	h.Files = append(h.Files, maps...)
	return h, nil
}

type deviceFD struct {
	fd   int
	path string
}

// deviceFDs lists pid's open file descriptors on GPU devices.
func deviceFDs(pid int, majors map[uint32]bool) ([]deviceFD, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []deviceFD
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if !isDevice(p, majors) {
			continue
		}
		target, _ := os.Readlink(p)
		out = append(out, deviceFD{fd: fd, path: target})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].fd < out[j].fd })
	return out, nil
}

// deviceMaps lists pid's mappings of GPU devices, one entry per device
// file with the number of areas ("/dev/nvidia0 (mapped, 3 areas)").
func deviceMaps(pid int, majors map[uint32]bool) ([]string, error) {
	dir := fmt.Sprintf("/proc/%d/map_files", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	count := map[string]int{}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if !isDevice(p, majors) {
			continue
		}
		target, _ := os.Readlink(p)
		count[target]++
	}
	var out []string
	for path, n := range count {
		out = append(out, fmt.Sprintf("%s (mapped, %d areas)", path, n))
	}
	sort.Strings(out)
	return out, nil
}

// isDevice reports whether path (a /proc link) leads to a GPU device.
func isDevice(path string, majors map[uint32]bool) bool {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && majors[unix.Major(st.Rdev)]
}

// sharedWithAny reports whether pid's fd is the same open file (kcmp) as
// one of the GPU device fds of the CUDA processes.
func sharedWithAny(pid, fd int, cudaFDs map[int][]deviceFD) bool {
	for owner, fds := range cudaFDs {
		for _, ofd := range fds {
			if sameFile(pid, fd, owner, ofd.fd) {
				return true
			}
		}
	}
	return false
}

// kcmpFile is KCMP_FILE of linux/kcmp.h (golang.org/x/sys has no name for it).
const kcmpFile = 0

// sameFile compares two processes' file descriptors with kcmp(KCMP_FILE).
func sameFile(pid1, fd1, pid2, fd2 int) bool {
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpFile, uintptr(fd1), uintptr(fd2), 0)
	return errno == 0 && r == 0
}

// deviceMajors are the majors of the GPU driver's character devices.
func deviceMajors() (map[uint32]bool, error) {
	majors := map[uint32]bool{}
	for _, s := range strings.FieldsFunc(os.Getenv(EnvDeviceMajors), func(r rune) bool { return r == ',' }) {
		m, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%s: bad major %q", EnvDeviceMajors, s)
		}
		majors[uint32(m)] = true
	}
	f, err := os.Open("/proc/devices")
	if errors.Is(err, fs.ErrNotExist) {
		return majors, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	for m := range nvidiaMajors(f) {
		majors[m] = true
	}
	return majors, nil
}

// nvidiaMajors reads the majors of /proc/devices' character devices named
// nvidia*.
func nvidiaMajors(r io.Reader) map[uint32]bool {
	majors := map[uint32]bool{}
	sc := bufio.NewScanner(r)
	chars := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "Character devices:":
			chars = true
		case line == "Block devices:":
			chars = false
		case chars:
			num, name, ok := strings.Cut(line, " ")
			m, err := strconv.ParseUint(num, 10, 32)
			if ok && err == nil && strings.HasPrefix(name, "nvidia") {
				majors[uint32(m)] = true
			}
		}
	}
	return majors
}

// NSPID is pid's PID in its innermost PID namespace (the last NSpid field
// of /proc/PID/status): a container's PIDs, which CRIU restores as they
// were.
func NSPID(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				return strconv.Atoi(f[len(f)-1])
			}
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no NSpid", pid)
}

// command is pid's comm, or "?" once it has gone.
func command(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}
