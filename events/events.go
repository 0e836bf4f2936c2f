// Package events is the node's record of what the snapshot shim decided:
// one event per restore decision (restored, cold start, failed) and one per
// checkpoint (written or failed), appended as JSON lines to one file per UTC
// day in a node-level directory. Many shim processes (one per pod) append to
// the same files at once; gpusnap status and gpusnap metrics read them back.
//
// The files are the only state: counters derived from them (see Collector)
// cover the events still on disk, so they drop when the oldest day is pruned.
package events

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// DefaultDir is where the shim records events and gpusnap reads them.
const DefaultDir = "/var/lib/containerd-shim-snapshot/events"

// DefaultKeepDays is how many UTC days of event files Record keeps.
const DefaultKeepDays = 7

// Kinds of events.
const (
	KindRestore    = "restore"
	KindCheckpoint = "checkpoint"
	// KindTransfer is a checkpoint pushed to or pulled from a registry
	// (the handler's registry option).
	KindTransfer = "transfer"
)

// Outcomes. A restore event is restored, cold-start (restore = auto fell
// back, Reason says why) or failed (restore = required, Reason says why); a
// checkpoint event is checkpointed or checkpoint-failed.
const (
	OutcomeRestored         = "restored"
	OutcomeColdStart        = "cold-start"
	OutcomeFailed           = "failed"
	OutcomeCheckpointed     = "checkpointed"
	OutcomeCheckpointFailed = "checkpoint-failed"
	OutcomePushed           = "pushed"
	OutcomePushFailed       = "push-failed"
	OutcomePulled           = "pulled"
	OutcomePullFailed       = "pull-failed"
)

// RestoreOutcomes and CheckpointOutcomes are the outcomes of each kind.
var (
	RestoreOutcomes    = []string{OutcomeRestored, OutcomeColdStart, OutcomeFailed}
	CheckpointOutcomes = []string{OutcomeCheckpointed, OutcomeCheckpointFailed}
	TransferOutcomes   = []string{OutcomePushed, OutcomePushFailed, OutcomePulled, OutcomePullFailed}
)

// Event is one restore decision or one checkpoint.
type Event struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Outcome string    `json:"outcome"`
	// Reason is the shim's explanation of a cold start or failure, in
	// plain words; ReasonCode its stable label (see CodeOf).
	Reason      string `json:"reason,omitempty"`
	ReasonCode  string `json:"reason_code,omitempty"`
	ContainerID string `json:"container_id,omitempty"`
	Namespace   string `json:"namespace,omitempty"`
	Checkpoint  string `json:"checkpoint,omitempty"`
	// Phases are the timed steps, name -> seconds, as in the manifest and
	// the control directory's status file.
	Phases map[string]float64 `json:"phases_seconds,omitempty"`
	// CRIUStats are CRIU's own measurements of the dump or restore
	// (criu.Stats: seconds in the _s names, page counts).
	CRIUStats map[string]float64 `json:"criu_stats,omitempty"`
	// BytesRead is the size of the checkpoint a restore read; BytesWritten
	// the size of the checkpoint a checkpoint published.
	BytesRead    int64 `json:"bytes_read,omitempty"`
	BytesWritten int64 `json:"bytes_written,omitempty"`
}

// TotalSeconds is the sum of the event's phases. For a restore it leaves
// out the wait between containerd's Create and Start calls.
func (e Event) TotalSeconds() float64 {
	var sum float64
	for _, name := range slices.Sorted(maps.Keys(e.Phases)) { // fixed order: same sum every time
		sum += e.Phases[name]
	}
	return sum
}

// validate rejects an event that status and metrics could not place.
func (e Event) validate() error {
	switch e.Kind {
	case KindRestore:
		if !slices.Contains(RestoreOutcomes, e.Outcome) {
			return fmt.Errorf("event: outcome %q is not one of %s for kind %q", e.Outcome, strings.Join(RestoreOutcomes, ", "), e.Kind)
		}
	case KindCheckpoint:
		if !slices.Contains(CheckpointOutcomes, e.Outcome) {
			return fmt.Errorf("event: outcome %q is not one of %s for kind %q", e.Outcome, strings.Join(CheckpointOutcomes, ", "), e.Kind)
		}
	case KindTransfer:
		if !slices.Contains(TransferOutcomes, e.Outcome) {
			return fmt.Errorf("event: outcome %q is not one of %s for kind %q", e.Outcome, strings.Join(TransferOutcomes, ", "), e.Kind)
		}
	default:
		return fmt.Errorf("event: kind %q is not %q, %q or %q", e.Kind, KindRestore, KindCheckpoint, KindTransfer)
	}
	return nil
}

const (
	filePrefix = "events-"
	fileSuffix = ".jsonl"
	dayLayout  = "2006-01-02"
	dirMode    = 0o700
	fileMode   = 0o600
)

// FileName is the file that holds events of t's UTC day.
func FileName(t time.Time) string {
	return filePrefix + t.UTC().Format(dayLayout) + fileSuffix
}

// fileDay parses an event file's name; ok is false for any other file.
func fileDay(name string) (day time.Time, ok bool) {
	s, found := strings.CutPrefix(name, filePrefix)
	if !found {
		return time.Time{}, false
	}
	s, found = strings.CutSuffix(s, fileSuffix)
	if !found {
		return time.Time{}, false
	}
	day, err := time.Parse(dayLayout, s)
	if err != nil || day.Format(dayLayout) != s {
		return time.Time{}, false
	}
	return day, true
}

// Writer records events into Dir, keeping KeepDays UTC days of files.
type Writer struct {
	Dir string
	// KeepDays is how many days of files to keep, today's included;
	// 0 means DefaultKeepDays.
	KeepDays int
	// Now is the clock for an event without a time and for pruning;
	// nil means time.Now.
	Now func() time.Time
}

// Record appends e to the events in dir and prunes files older than
// DefaultKeepDays. See Writer.Record.
func Record(dir string, e Event) error {
	return Writer{Dir: dir}.Record(e)
}

// Record appends e as one JSON line to the file of its UTC day, creating
// the directory (0700) and file (0600) as needed, then deletes event files
// of days before the retention window. An event without a time gets the
// current time, and one with a Reason but no ReasonCode gets "other" (the
// writer knows the cause and names it with CodeOf; the words are not parsed).
//
// Any number of processes may record into the same directory at once: the
// line is appended (O_APPEND) in one write while holding an exclusive flock
// on the file, so lines never interleave whatever their length; a line torn
// by a writer that died mid-write is ended before the next line, so it costs
// only itself. Record waits at most 5 seconds for the lock, then returns an
// error without recording: the caller's work must not hang on its record.
func (w Writer) Record(e Event) error {
	if err := e.validate(); err != nil {
		return err
	}
	now := w.now()
	if e.Time.IsZero() {
		e.Time = now
	}
	e.Time = e.Time.UTC()
	if e.ReasonCode == "" && e.Reason != "" {
		e.ReasonCode = ReasonOther
	}
	line, err := json.Marshal(e) // escapes newlines in strings: always one line
	if err != nil {
		return fmt.Errorf("record event: %w", err)
	}
	line = append(line, '\n')
	if err := os.MkdirAll(w.Dir, dirMode); err != nil {
		return fmt.Errorf("record event: %w", err)
	}
	if err := appendLine(filepath.Join(w.Dir, FileName(e.Time)), line); err != nil {
		return fmt.Errorf("record event: %w", err)
	}
	if err := w.prune(now); err != nil {
		return fmt.Errorf("event recorded, but pruning old event files: %w", err)
	}
	return nil
}

func (w Writer) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// appendLine appends line to path under an exclusive flock, first ending a
// torn last line if a writer died mid-write.
func appendLine(path string, line []byte) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, fileMode)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := flock(f); err != nil {
		return fmt.Errorf("lock %s: %w", path, err)
	}
	// Closing the file releases the lock.
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if size := fi.Size(); size > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, size-1); err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if last[0] != '\n' {
			line = append([]byte{'\n'}, line...)
		}
	}
	if _, err := f.Write(line); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// lockWait bounds the wait for another writer's lock: a writer holds it
// for one write, so a longer wait means a stuck process, and a restore must
// not hang on its bookkeeping.
var lockWait = 5 * time.Second

// flock takes an exclusive lock on f, polling so that the wait is bounded.
func flock(f *os.File) error {
	deadline := time.Now().Add(lockWait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case !errors.Is(err, syscall.EWOULDBLOCK):
			return err
		case time.Now().After(deadline):
			return fmt.Errorf("another writer held the lock for %s", lockWait)
		}
		time.Sleep(time.Millisecond)
	}
}

// prune deletes event files of days before the retention window; files
// other writers deleted first are fine.
func (w Writer) prune(now time.Time) error {
	keep := w.KeepDays
	if keep <= 0 {
		keep = DefaultKeepDays
	}
	today := now.UTC().Truncate(24 * time.Hour)
	oldest := today.AddDate(0, 0, -(keep - 1))
	entries, err := os.ReadDir(w.Dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if day, ok := fileDay(e.Name()); ok && day.Before(oldest) {
			if err := os.Remove(filepath.Join(w.Dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Read returns the events in dir at or after since, oldest first. A missing
// directory holds no events. Lines that are not a complete JSON event (the
// torn line of a writer that died mid-write) are skipped.
func Read(dir string, since time.Time) ([]Event, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	var out []Event
	for _, entry := range entries { // ReadDir sorts by name: day order
		day, ok := fileDay(entry.Name())
		if !ok || !entry.Type().IsRegular() || !day.AddDate(0, 0, 1).After(since) {
			continue
		}
		evts, err := readFile(filepath.Join(dir, entry.Name()), since)
		if errors.Is(err, fs.ErrNotExist) { // pruned meanwhile
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read events: %w", err)
		}
		out = append(out, evts...)
	}
	// Concurrent writers may append a few milliseconds out of order.
	slices.SortStableFunc(out, func(a, b Event) int { return a.Time.Compare(b.Time) })
	return out, nil
}

func readFile(path string, since time.Time) ([]Event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Event
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			var e Event
			if json.Unmarshal(line, &e) == nil && !e.Time.IsZero() && !e.Time.Before(since) {
				out = append(out, e)
			}
		}
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
}
