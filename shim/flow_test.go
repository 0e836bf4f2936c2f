package shim

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gpusnap/containerd-shim-snapshot-v2/cudackpt"
	"github.com/gpusnap/containerd-shim-snapshot-v2/events"
	"github.com/gpusnap/containerd-shim-snapshot-v2/phases"
	"github.com/gpusnap/containerd-shim-snapshot-v2/shim/options"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// fakeRunc stands for the runc shim's task service: Start fails with
// startErr, and Kill and Wait are counted.
type fakeRunc struct {
	taskAPI.TTRPCTaskService // nil: any other RPC panics
	startErr                 error
	calls                    []string
}

func (f *fakeRunc) Start(context.Context, *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	f.calls = append(f.calls, "start")
	if f.startErr != nil {
		return nil, f.startErr
	}
	return &taskAPI.StartResponse{Pid: 42}, nil
}

func (f *fakeRunc) Kill(context.Context, *taskAPI.KillRequest) (*ptypes.Empty, error) {
	f.calls = append(f.calls, "kill")
	return nil, nil
}

func (f *fakeRunc) Wait(context.Context, *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	f.calls = append(f.calls, "wait")
	return nil, nil
}

func TestWishOf(t *testing.T) {
	sandbox := &specs.Spec{Annotations: map[string]string{criContainerType: "sandbox"}}
	optOutSpec := &specs.Spec{Annotations: map[string]string{OptOutAnnotation: "never"}}
	withStore := func(restore string) options.Options {
		o := options.Default()
		o.Store, o.Restore = "/s", restore
		return o
	}
	for _, tt := range []struct {
		name string
		o    options.Options
		spec *specs.Spec
		want restoreWish
	}{
		{"no store", options.Default(), &specs.Spec{}, noRestore},
		{"restore = never", withStore(options.RestoreNever), &specs.Spec{}, noRestore},
		{"sandbox", withStore(options.RestoreRequired), sandbox, noRestore},
		{"opted out under required", withStore(options.RestoreRequired), optOutSpec, optOut},
		{"auto", withStore(options.RestoreAuto), &specs.Spec{}, tryRestore},
		{"required", withStore(options.RestoreRequired), &specs.Spec{}, tryRestore},
	} {
		if got := wishOf(tt.o, tt.spec); got != tt.want {
			t.Errorf("%s: wishOf = %v, want %v", tt.name, got, tt.want)
		}
	}
	if code := events.CodeOf(errOptedOut); code != events.ReasonOptedOut {
		t.Errorf("opt-out reason code %q", code)
	}
}

// TestPhaseOrder: planning and running a restore time their steps under
// the names of package phases, in its order.
func TestPhaseOrder(t *testing.T) {
	var plan, run []string
	for _, s := range planSteps {
		plan = append(plan, s.name)
	}
	for _, s := range restoreSteps {
		run = append(run, s.name)
	}
	if want := []string{phases.Pull, phases.Find, phases.Cache, phases.Key, phases.Verify}; !slices.Equal(plan, want) {
		t.Errorf("plan steps %v, want %v", plan, want)
	}
	if want := []string{phases.Decrypt, phases.RootfsDiff, phases.CRIURestore, phases.CUDARestore, phases.CUDAUnlock}; !slices.Equal(run, want) {
		t.Errorf("restore steps %v, want %v", run, want)
	}
	all := append(plan, run...)
	times := map[string]float64{}
	for _, n := range all {
		times[n] = 1
	}
	if got := phases.Sorted(times); !slices.Equal(got, all) {
		t.Errorf("phases.Order sorts the restore as %v, want %v", got, all)
	}
}

// TestMakePlanStops: the first failing step ends the plan, named in the
// error with its cause's code kept, and the steps after it do not run.
func TestMakePlanStops(t *testing.T) {
	c := &container{id: "c1", options: options.Default()}
	var ran []string
	step := func(name string, err error) planStep {
		return planStep{name, nil, func(context.Context, *container, *restorePlan) error { ran = append(ran, name); return err }}
	}
	wrongKey := events.Because(events.ReasonWrongKey, errors.New("encrypted with another key"))
	plan, err := makePlan(context.Background(), c, []planStep{
		step(phases.Find, nil), step(phases.Cache, nil), step(phases.Key, wrongKey), step(phases.Verify, nil)})
	if err == nil || err.Error() != "key: encrypted with another key" || events.CodeOf(err) != events.ReasonWrongKey {
		t.Fatalf("err %v (code %s)", err, events.CodeOf(err))
	}
	if want := []string{phases.Find, phases.Cache, phases.Key}; !slices.Equal(ran, want) || len(plan.phases) != 3 {
		t.Errorf("ran %v, timed %v; want %v", ran, plan.phases, want)
	}
}

// TestFallback: a restore that cannot be done cold-starts under
// restore = auto and fails the container under restore = required; either
// way it is reported once, with the plan's checkpoint and phases.
func TestFallback(t *testing.T) {
	t.Setenv("SNAPSHOT_EVENTS_DIR", t.TempDir())
	reason := events.Because(events.ReasonGPUMismatch, errors.New("find: gpu_count: checkpoint has 1, node has 0"))
	plan := &restorePlan{checkpoint: &storage.Checkpoint{Name: "ck-1"}, phases: phaseTimes{phases.Find: 0.5}}
	for _, tt := range []struct {
		restore string
		want    string
	}{{options.RestoreAuto, events.OutcomeColdStart}, {options.RestoreRequired, events.OutcomeFailed}} {
		c := &container{id: "c-" + tt.restore, options: options.Default(), controlDir: t.TempDir()}
		c.options.Restore = tt.restore
		if got := fallback(c.options); got != tt.want {
			t.Errorf("fallback under restore = %s: %s, want %s", tt.restore, got, tt.want)
		}
		err := declineRestore(context.Background(), c, plan, reason)
		if (tt.want == events.OutcomeFailed) != errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("restore = %s: declineRestore = %v", tt.restore, err)
		}
		st := readStatus(t, c)
		if st.Decision != tt.want || st.Reason != reason.Error() || st.Checkpoint != "ck-1" || st.Phases[phases.Find] != 0.5 {
			t.Errorf("restore = %s: status %+v", tt.restore, st)
		}
		ev := lastEvent(t, c.id)
		if ev.Outcome != tt.want || ev.ReasonCode != events.ReasonGPUMismatch || ev.Checkpoint != "ck-1" {
			t.Errorf("restore = %s: event %+v", tt.restore, ev)
		}
	}
}

// TestRestorePhases runs the phase table against a fake runc and a node
// without a CUDA driver: the phases that ran are timed in order; a failing
// CRIU ends the restore before the GPU phases; a GPU phase that fails after
// CRIU restored the processes kills them through runc.
func TestRestorePhases(t *testing.T) {
	t.Setenv("SNAPSHOT_EVENTS_DIR", t.TempDir())
	s := openTestStore(t)
	ck := publishTest(t, s, "web", "")
	saved := loadDriver
	t.Cleanup(func() { loadDriver = saved })
	driverErr := errors.New("driver library broken")

	for _, tt := range []struct {
		name      string
		startErr  error
		driverErr error
		wantErr   string
		wantCalls []string
		want      []string
	}{
		{"restored", nil, cudackpt.ErrNoDriver, "", []string{"start"},
			[]string{phases.RootfsDiff, phases.CRIURestore, phases.CUDARestore}},
		{"CRIU fails", errors.New("criu failed"), cudackpt.ErrNoDriver, "criu_restore: criu failed", []string{"start"},
			[]string{phases.RootfsDiff, phases.CRIURestore}},
		{"GPU fails after CRIU", nil, driverErr, "cuda_restore: driver library broken", []string{"start", "kill", "wait"},
			[]string{phases.RootfsDiff, phases.CRIURestore, phases.CUDARestore}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			loadDriver = func() (*cudackpt.Driver, error) { return nil, tt.driverErr }
			runc := &fakeRunc{startErr: tt.startErr}
			svc := &Service{TTRPCTaskService: runc}
			c := &container{id: "r1", bundle: t.TempDir(), options: options.Default(), spec: &specs.Spec{}, controlDir: t.TempDir()}
			plan := &restorePlan{checkpoint: ck, phases: phaseTimes{}}
			os.Mkdir(filepath.Join(c.bundle, "rootfs"), 0o755)
			_, err := svc.restore(context.Background(), c, plan, &taskAPI.StartRequest{ID: c.id})
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.wantErr)) {
				t.Fatalf("restore = %v, want %q", err, tt.wantErr)
			}
			if !slices.Equal(runc.calls, tt.wantCalls) {
				t.Errorf("runc calls %v, want %v", runc.calls, tt.wantCalls)
			}
			if got := phases.Sorted(plan.phases); !slices.Equal(got, tt.want) {
				t.Errorf("timed %v, want %v", got, tt.want)
			}
			if c.restored != (err == nil) {
				t.Errorf("restored = %v after %v", c.restored, err)
			}
			if err == nil {
				st := readStatus(t, c)
				if st.Decision != events.OutcomeRestored || st.Checkpoint != ck.Name || st.From != ck.Dir || len(st.Phases) != len(tt.want) {
					t.Errorf("status %+v", st)
				}
				if ev := lastEvent(t, c.id); ev.Outcome != events.OutcomeRestored || ev.BytesRead != ck.Size() {
					t.Errorf("event %+v", ev)
				}
			}
		})
	}
}

func readStatus(t *testing.T, c *container) snapshotStatus {
	t.Helper()
	var st snapshotStatus
	data, err := os.ReadFile(filepath.Join(c.controlDir, StatusFile))
	if err == nil {
		err = json.Unmarshal(data, &st)
	}
	if err != nil {
		t.Fatalf("status file: %v", err)
	}
	return st
}

func lastEvent(t *testing.T, id string) events.Event {
	t.Helper()
	evts, err := events.Read(eventsDir(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	for i := len(evts) - 1; i >= 0; i-- {
		if evts[i].ContainerID == id {
			return evts[i]
		}
	}
	t.Fatalf("no event for %s", id)
	return events.Event{}
}
