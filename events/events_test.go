package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var day0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

func restored(at time.Time, id string) Event {
	return Event{Time: at, Kind: KindRestore, Outcome: OutcomeRestored, ContainerID: id, Namespace: "k8s.io",
		Checkpoint: "0123456789abcdef-g000001", Phases: map[string]float64{"lookup": 0.03, "criu_restore": 3.29}, BytesRead: 3 << 30}
}

func TestRecordReadRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "events")
	in := []Event{
		restored(day0, "a"),
		{Time: day0.Add(time.Minute), Kind: KindRestore, Outcome: OutcomeColdStart, ContainerID: "b",
			Reason: "lookup: store /s holds no checkpoint", ReasonCode: ReasonNoCheckpoint, Phases: map[string]float64{"lookup": 0.01}},
		{Time: day0.Add(2 * time.Minute), Kind: KindCheckpoint, Outcome: OutcomeCheckpointed, ContainerID: "c",
			Checkpoint: "0123456789abcdef-g000002", Phases: map[string]float64{"criu_dump": 12.5}, BytesWritten: 1 << 20},
		// The next UTC day goes to the next file; a local time is stored as UTC.
		{Time: day0.Add(14 * time.Hour).In(time.FixedZone("X", 3600)), Kind: KindCheckpoint, Outcome: OutcomeCheckpointFailed,
			ContainerID: "d", Reason: "pausing for the checkpoint: \"x\"\nsecond line"},
	}
	for _, e := range in {
		if err := (Writer{Dir: dir, Now: func() time.Time { return day0 }}).Record(e); err != nil {
			t.Fatal(err)
		}
	}
	assertMode(t, dir, 0o700|os.ModeDir)
	for _, name := range []string{"events-2026-11-27.jsonl", "events-2026-11-28.jsonl"} {
		assertMode(t, filepath.Join(dir, name), 0o600)
	}
	got, err := Read(dir, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(in)
	want[3].ReasonCode = ReasonOther // filled in by Record: the writer named no cause
	want[3].Time = want[3].Time.UTC()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Read =\n%+v\nwant\n%+v", got, want)
	}

	// since filters by time, also inside a file.
	got, _ = Read(dir, day0.Add(90*time.Second))
	if len(got) != 2 || got[0].ContainerID != "c" || got[1].ContainerID != "d" {
		t.Errorf("Read since = %+v", got)
	}
	got, _ = Read(dir, day0.Add(48*time.Hour))
	if len(got) != 0 {
		t.Errorf("Read since the future = %+v", got)
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != want {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode(), want)
	}
}

func TestRecordDefaults(t *testing.T) {
	dir := t.TempDir()
	before := time.Now()
	if err := Record(dir, Event{Kind: KindRestore, Outcome: OutcomeFailed,
		Reason: "restore from checkpoint x failed: criu_restore: exit status 1"}); err != nil {
		t.Fatal(err)
	}
	got, err := Read(dir, before.Add(-time.Second))
	if err != nil || len(got) != 1 {
		t.Fatalf("Read = %+v, %v", got, err)
	}
	if e := got[0]; e.Time.Before(before.Add(-time.Second)) || e.Time.Location() != time.UTC || e.ReasonCode != ReasonOther {
		t.Errorf("recorded %+v", e)
	}
	// A code given by the caller is kept.
	Record(dir, Event{Kind: KindRestore, Outcome: OutcomeColdStart, Reason: "x", ReasonCode: "custom"})
	got, _ = Read(dir, time.Time{})
	if len(got) != 2 || got[1].ReasonCode != "custom" {
		t.Errorf("Read = %+v", got)
	}
}

func TestRecordRejects(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "events")
	for _, e := range []Event{
		{Kind: "restart", Outcome: OutcomeRestored},
		{Kind: KindRestore, Outcome: OutcomeCheckpointed},
		{Kind: KindCheckpoint, Outcome: OutcomeColdStart},
		{Kind: KindCheckpoint},
	} {
		if err := Record(dir, e); err == nil {
			t.Errorf("Record(%+v) succeeded", e)
		}
	}
	if _, err := os.Stat(dir); err == nil {
		t.Error("a rejected event created the directory")
	}
}

func TestReadMissingDir(t *testing.T) {
	got, err := Read(filepath.Join(t.TempDir(), "none"), time.Time{})
	if got != nil || err != nil {
		t.Errorf("Read of a missing directory = %v, %v", got, err)
	}
}

// writerEnv makes the test binary a writer process for TestConcurrentWriters.
const writerEnv = "EVENTS_TEST_WRITER"

// TestHelperWriter is not a test: run by TestConcurrentWriters in a
// subprocess, it records events as another shim process would.
func TestHelperWriter(t *testing.T) {
	spec := os.Getenv(writerEnv)
	if spec == "" {
		t.Skip("helper process")
	}
	dir, n, _ := strings.Cut(spec, ",")
	count, _ := strconv.Atoi(n)
	writeMany(t, dir, "proc", count)
}

// writeMany records count events from writer, every third with a reason
// longer than PIPE_BUF (4096 bytes), so only the lock keeps lines whole.
func writeMany(t *testing.T, dir, writer string, count int) {
	for i := range count {
		e := restored(day0.Add(time.Duration(i)*time.Millisecond), fmt.Sprintf("%s-%d", writer, i))
		if i%3 == 0 {
			e.Outcome, e.Reason = OutcomeColdStart, "lookup: "+strings.Repeat(writer[:1], 20000)
		}
		if err := (Writer{Dir: dir, Now: func() time.Time { return day0 }}).Record(e); err != nil {
			t.Error(err)
			return
		}
	}
}

func TestConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	const goroutines, perWriter = 6, 150

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	procs := make([]*exec.Cmd, 2)
	for i := range procs {
		procs[i] = exec.Command(exe, "-test.run=^TestHelperWriter$", "-test.count=1")
		procs[i].Env = append(os.Environ(), writerEnv+"="+dir+","+strconv.Itoa(perWriter))
		procs[i].Stderr = os.Stderr
		if err := procs[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() { writeMany(t, dir, fmt.Sprintf("g%d", g), perWriter) })
	}
	wg.Wait()
	for _, p := range procs {
		if err := p.Wait(); err != nil {
			t.Fatalf("writer process: %v", err)
		}
	}

	// Every line in the file is one whole event.
	data, err := os.ReadFile(filepath.Join(dir, FileName(day0)))
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	total := (goroutines + len(procs)) * perWriter
	if len(lines) != total {
		t.Fatalf("%d lines, want %d", len(lines), total)
	}
	for i, line := range lines {
		var e Event
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("line %d is not one event: %v: %.200s", i+1, err, line)
		}
	}
	got, err := Read(dir, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range got {
		seen[e.ContainerID] = true
	}
	if len(got) != total || len(seen) != total-perWriter { // the processes share writer name "proc"
		t.Errorf("Read %d events, %d distinct containers; want %d, %d", len(got), len(seen), total, total-perWriter)
	}
}

func TestTornLine(t *testing.T) {
	dir := t.TempDir()
	w := Writer{Dir: dir, Now: func() time.Time { return day0 }}
	for _, id := range []string{"a", "b"} {
		if err := w.Record(restored(day0, id)); err != nil {
			t.Fatal(err)
		}
	}
	// A writer died in the middle of its line.
	path := filepath.Join(dir, FileName(day0))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"time":"2026-11-27T10:00:00Z","kind":"restore","outc`)
	f.Close()

	got, err := Read(dir, time.Time{})
	if err != nil || len(got) != 2 {
		t.Fatalf("Read with a torn last line = %+v, %v", got, err)
	}
	// The next writer ends the torn line first: only the torn event is lost.
	if err := w.Record(restored(day0.Add(time.Second), "c")); err != nil {
		t.Fatal(err)
	}
	got, err = Read(dir, time.Time{})
	if ids := containerIDs(got); err != nil || !slices.Equal(ids, []string{"a", "b", "c"}) {
		t.Errorf("Read after the next write = %v, %v", ids, err)
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), "\"outc\n{") {
		t.Errorf("torn line not ended before the next event:\n%s", data)
	}
}

func containerIDs(evts []Event) []string {
	var ids []string
	for _, e := range evts {
		ids = append(ids, e.ContainerID)
	}
	return ids
}

func TestPrune(t *testing.T) {
	dir := t.TempDir()
	for d := -9; d <= 0; d++ {
		name := FileName(day0.AddDate(0, 0, d))
		os.WriteFile(filepath.Join(dir, name), []byte("{}\n"), 0o600)
	}
	for _, other := range []string{"events-2020-01-01.json", "notes.txt", "events-2020-13-01.jsonl"} {
		os.WriteFile(filepath.Join(dir, other), nil, 0o600)
	}
	w := Writer{Dir: dir, KeepDays: 3, Now: func() time.Time { return day0 }}
	if err := w.Record(restored(day0, "a")); err != nil {
		t.Fatal(err)
	}
	want := []string{"events-2020-01-01.json", "events-2020-13-01.jsonl",
		"events-2026-11-25.jsonl", "events-2026-11-26.jsonl", "events-2026-11-27.jsonl", "notes.txt"}
	if got := dirNames(t, dir); !slices.Equal(got, want) {
		t.Errorf("after pruning to 3 days: %v, want %v", got, want)
	}

	// The default keeps 7 days.
	for d := -9; d < 0; d++ {
		os.WriteFile(filepath.Join(dir, FileName(day0.AddDate(0, 0, d))), nil, 0o600)
	}
	w.KeepDays = 0
	w.Record(restored(day0, "b"))
	got := dirNames(t, dir)
	if !slices.Contains(got, "events-2026-11-21.jsonl") || slices.Contains(got, "events-2026-11-20.jsonl") {
		t.Errorf("after pruning to the default: %v", got)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestTotalSeconds(t *testing.T) {
	e := Event{Phases: map[string]float64{"lookup": 0.25, "verify": 0.5, "criu_restore": 2}}
	if got := e.TotalSeconds(); got != 2.75 {
		t.Errorf("TotalSeconds = %v", got)
	}
}

func TestLockWaitBounded(t *testing.T) {
	dir := t.TempDir()
	w := Writer{Dir: dir, Now: func() time.Time { return day0 }}
	if err := w.Record(restored(day0, "a")); err != nil {
		t.Fatal(err)
	}
	// A stuck writer holds the lock: Record gives up instead of hanging.
	f, err := os.Open(filepath.Join(dir, FileName(day0)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	saved := lockWait
	lockWait = 50 * time.Millisecond
	defer func() { lockWait = saved }()
	if err := w.Record(restored(day0, "b")); err == nil || !strings.Contains(err.Error(), "held the lock") {
		t.Errorf("Record with the lock held = %v", err)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	if err := w.Record(restored(day0, "c")); err != nil {
		t.Fatal(err)
	}
	got, _ := Read(dir, time.Time{})
	if ids := containerIDs(got); !slices.Equal(ids, []string{"a", "c"}) {
		t.Errorf("events %v, want a c", ids)
	}
}
