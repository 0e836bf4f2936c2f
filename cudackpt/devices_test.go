package cudackpt

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func TestNvidiaMajors(t *testing.T) {
	devices := `Character devices:
  1 mem
 10 misc
195 nvidia-frontend
195 nvidia
195 nvidiactl
234 nvidia-uvm
235 nvidia-caps
245 hidraw

Block devices:
  7 loop
236 nvidia-fake-block
`
	got := nvidiaMajors(strings.NewReader(devices))
	if len(got) != 3 || !got[195] || !got[234] || !got[235] {
		t.Fatalf("majors %v, want 195, 234, 235", got)
	}
}

// startHolder runs sleep with file as its fd 3 and its standard streams on
// a pipe, so that file is the only device file it holds.
func startHolder(t *testing.T, file *os.File) int {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	cmd := exec.Command("sleep", "100")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = r, w, w
	cmd.ExtraFiles = []*os.File{file}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

func openNull(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestFindDeviceHolders stands /dev/null in for a GPU device (its major
// through EnvDeviceMajors): a process that holds the same open device file
// as a "CUDA process" (as a child forked from it does) is a leftover holder,
// a process that opened the device itself is not, and the CUDA process
// itself is never listed.
func TestFindDeviceHolders(t *testing.T) {
	t.Setenv(EnvDeviceMajors, "1")
	shared := openNull(t)
	cuda, child, own := startHolder(t, shared), startHolder(t, shared), startHolder(t, openNull(t))
	holders, err := FindDeviceHolders([]int{cuda, child, own}, []int{cuda}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(holders) != 2 {
		t.Fatalf("holders %+v, want the child and the other process", holders)
	}
	// Whatever /dev/null this test inherited (a CI runner's) is shared by
	// all three and listed too; fd 3 is the one that tells them apart.
	inherited, opened := holders[0], holders[1]
	if inherited.PID != child || !inherited.Inherited || inherited.Command != "sleep" || inherited.Files[0] != "/dev/null (fd 3)" {
		t.Errorf("child: %+v", inherited)
	}
	if opened.PID != own || opened.Inherited || opened.Files[0] != "/dev/null (fd 3)" {
		t.Errorf("own opener: %+v", opened)
	}
	if want := "process " + strconv.Itoa(own) + " (sleep) holds /dev/null (fd 3)"; !strings.HasPrefix(opened.String(), want) {
		t.Errorf("String() = %q, want it to start with %q", opened.String(), want)
	}

	t.Setenv(EnvDeviceMajors, "")
	if holders, err := FindDeviceHolders([]int{cuda, child, own}, []int{cuda}, nil); err != nil || len(holders) != 0 {
		t.Errorf("without GPU devices: %+v, %v", holders, err)
	}
}
