package shim

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/opencontainers/cgroups"
	cgroupmanager "github.com/opencontainers/cgroups/manager"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gpusnap/containerd-shim-snapshot-v2/cudackpt"
	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
)

// TestFailedRestoreKillsWhatCRIUResumed: runc's restore fails, yet a process
// runs in the container's cgroup (CRIU resumed the restored tree and died
// before telling runc; the runc shim still calls the task created). The
// restore's cleanup kills it through the cgroup, so the cold start's Delete
// finds the container stopped, removes the cgroup, and says so in the
// reason.
func TestFailedRestoreKillsWhatCRIUResumed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	rel := "/snapshot-shim-" + filepath.Base(filepath.Dir(t.TempDir()))
	m, err := cgroupmanager.New(&cgroups.Cgroup{Path: rel, Resources: &cgroups.Resources{}})
	if err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer sleeper.Process.Kill()
	if err := m.Apply(sleeper.Process.Pid); err != nil {
		t.Skipf("cannot create a cgroup here: %v", err)
	}
	t.Cleanup(func() { m.Destroy() })

	saved := loadDriver
	t.Cleanup(func() { loadDriver = saved })
	loadDriver = func() (*cudackpt.Driver, error) { return nil, cudackpt.ErrNoDriver }
	runc := &fakeRunc{startErr: errors.New("criu died")}
	svc := &Service{TTRPCTaskService: runc}
	spec := &specs.Spec{Linux: &specs.Linux{CgroupsPath: rel}}
	c := &container{id: "r1", bundle: t.TempDir(), options: options.Default(), spec: spec, controlDir: t.TempDir()}
	os.Mkdir(filepath.Join(c.bundle, "rootfs"), 0o755)
	t.Setenv("SNAPSHOT_EVENTS_DIR", t.TempDir())
	plan := &restorePlan{checkpoint: publishTest(t, openTestStore(t), "web", ""), phases: phaseTimes{}}

	_, err = svc.restore(context.Background(), c, plan, &taskAPI.StartRequest{ID: c.id})
	if err == nil || !strings.Contains(err.Error(), "killed the 1 processes left running in the container's cgroup") {
		t.Fatalf("restore = %v, want the failure to say the shim killed the process left running", err)
	}
	if !slices.Equal(runc.calls, []string{"start"}) {
		t.Errorf("runc calls %v, want [start]: the task is not runc's to kill", runc.calls)
	}
	exited := make(chan error, 1)
	go func() { exited <- sleeper.Wait() }()
	select {
	case err = <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the process in the container's cgroup still runs 10 s after the failed restore")
	}
	if ws, ok := sleeper.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the process in the container's cgroup ended with %v, want SIGKILL", err)
	}
	for ctrl, p := range m.GetPaths() {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("cgroup %s (%s) still exists: %v", p, ctrl, err)
		}
	}
}
