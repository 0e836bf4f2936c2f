package shim

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestCRIUConfig(t *testing.T) {
	bundle := t.TempDir()
	spec := &specs.Spec{}
	changed, err := addCRIUConfig(spec, bundle)
	path := filepath.Join(bundle, criuConfigName)
	if err != nil || !changed || spec.Annotations[criuConfigAnnotation] != path {
		t.Fatalf("changed %v, err %v, annotations %v", changed, err, spec.Annotations)
	}
	read := func() string {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	// The node's runc.conf, if any, comes first; this test only sees ours.
	if got := read(); !endsWith(got, "skip-in-flight\ntcp-close\n") {
		t.Fatalf("restore configuration %q", got)
	}
	c := &container{bundle: bundle, spec: spec}
	opts, err := typeurl.MarshalAny(&runcoptions.CheckpointOptions{OpenTcp: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := prepareCRIUConfigForDump(c, &taskAPI.CheckpointTaskRequest{Options: typeurl.MarshalProto(opts)}, nil); err != nil {
		t.Fatal(err)
	}
	if got := read(); !endsWith(got, "skip-in-flight\n") {
		t.Fatalf("tcp-established dump configuration %q", got)
	}
	if err := prepareCRIUConfigForDump(c, &taskAPI.CheckpointTaskRequest{}, nil); err != nil || !endsWith(read(), "tcp-close\n") {
		t.Fatalf("plain dump configuration %q, %v", read(), err)
	}
	// GPU leftovers are named to the patched CRIU, for this dump only.
	if err := prepareCRIUConfigForDump(c, &taskAPI.CheckpointTaskRequest{}, []int{41, 42}); err != nil ||
		!endsWith(read(), "tcp-close\ninherited-devices 41,42\n") {
		t.Fatalf("dump configuration with leftovers %q, %v", read(), err)
	}
	if err := prepareCRIUConfigForDump(c, &taskAPI.CheckpointTaskRequest{}, nil); err != nil || !endsWith(read(), "tcp-close\n") {
		t.Fatalf("the next dump kept the leftovers: %q, %v", read(), err)
	}

	own := &specs.Spec{Annotations: map[string]string{criuConfigAnnotation: "/etc/mine.conf"}}
	if changed, err := addCRIUConfig(own, t.TempDir()); changed || err != nil || own.Annotations[criuConfigAnnotation] != "/etc/mine.conf" {
		t.Fatalf("a spec's own CRIU configuration was replaced: %v %v %v", changed, err, own.Annotations)
	}
	mine := &container{bundle: t.TempDir(), spec: own}
	if err := prepareCRIUConfigForDump(mine, &taskAPI.CheckpointTaskRequest{}, []int{41}); !errors.Is(err, ErrGPUDeviceHeld) {
		t.Fatalf("leftovers with the spec's own CRIU configuration: %v", err)
	}
}

func endsWith(s, suffix string) bool {
	return len(s) >= len(suffix) && s[len(s)-len(suffix):] == suffix
}

func TestUseCRIU(t *testing.T) {
	t.Setenv("PATH", "/usr/bin:/bin")
	useCRIU("")
	if got := os.Getenv("PATH"); got != "/usr/bin:/bin" {
		t.Fatalf("no criu_path changed PATH to %q", got)
	}
	useCRIU("/opt/criu/sbin/criu")
	useCRIU("/opt/criu/sbin/criu")
	if got := os.Getenv("PATH"); got != "/opt/criu/sbin:/usr/bin:/bin" {
		t.Fatalf("PATH = %q, want criu_path's directory first, once", got)
	}
}

// TestExplainCRIU: a failed dump or restore carries CRIU's own error lines;
// without a log the error stays as it was.
func TestExplainCRIU(t *testing.T) {
	dir := t.TempDir()
	runcErr := errors.New("criu failed: type DUMP errno 0")
	logPath := filepath.Join(dir, criuDumpLog)
	start := time.Now().Add(-time.Second)
	if got := explainCRIU(runcErr, logPath, start); got != runcErr {
		t.Fatalf("without a log: %v", got)
	}
	log := "(00.001) Warn: something\n(00.002) Error (criu/proc_parse.c:118): handle_device_vma plugin failed\n"
	if err := os.WriteFile(logPath, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	got := explainCRIU(runcErr, logPath, start)
	if !errors.Is(got, runcErr) || !strings.Contains(got.Error(), "handle_device_vma plugin failed") || !strings.Contains(got.Error(), logPath) {
		t.Fatalf("with a log: %v", got)
	}
	// An earlier run's log does not explain this failure.
	if got := explainCRIU(runcErr, logPath, time.Now().Add(time.Minute)); got != runcErr {
		t.Fatalf("with a stale log: %v", got)
	}
}

// TestKeepDumpWorkDir: the dump gets a work directory that outlives it, so
// that CRIU's statistics can be read: one in the bundle when the client
// names none (with or without runc options), the client's own otherwise,
// and none for options the shim does not know.
func TestKeepDumpWorkDir(t *testing.T) {
	c := &container{bundle: t.TempDir()}
	withOpts := func(o *runcoptions.CheckpointOptions) *taskAPI.CheckpointTaskRequest {
		a, err := typeurl.MarshalAnyToProto(o)
		if err != nil {
			t.Fatal(err)
		}
		return &taskAPI.CheckpointTaskRequest{Options: a}
	}
	for name, r := range map[string]*taskAPI.CheckpointTaskRequest{
		"no options (CRI)":         {},
		"runc options without one": withOpts(&runcoptions.CheckpointOptions{Exit: true}),
	} {
		work, remove, err := keepDumpWorkDir(c, r)
		if err != nil || work != filepath.Join(c.bundle, criuDumpWork) {
			t.Fatalf("%s: work %q, %v", name, work, err)
		}
		if opts := checkpointOptions(r); opts == nil || opts.WorkPath != work || (name != "no options (CRI)" && !opts.Exit) {
			t.Errorf("%s: options sent on: %+v", name, opts)
		}
		if st, err := os.Stat(work); err != nil || !st.IsDir() {
			t.Errorf("%s: %v", name, err)
		}
		remove()
		if _, err := os.Stat(work); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: work directory left after remove: %v", name, err)
		}
	}

	own := t.TempDir()
	r := withOpts(&runcoptions.CheckpointOptions{WorkPath: own})
	if work, remove, err := keepDumpWorkDir(c, r); err != nil || work != own {
		t.Fatalf("client's work path: %q, %v", work, err)
	} else if remove(); !dirExists(own) {
		t.Errorf("the client's work directory was removed")
	}

	other, _ := typeurl.MarshalAnyToProto(&runcoptions.Options{})
	r = &taskAPI.CheckpointTaskRequest{Options: other}
	if work, _, err := keepDumpWorkDir(c, r); err != nil || work != "" || r.Options != other {
		t.Errorf("options of another kind: work %q, %v, options replaced: %v", work, err, r.Options != other)
	}
}

func dirExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}
