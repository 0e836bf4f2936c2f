package criu

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v7/crit"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/stats"
	"google.golang.org/protobuf/proto"
)

// writeStats writes a stats image as CRIU does, with go-criu's crit.
func writeStats(t *testing.T, dir, name string, entry *stats.StatsEntry) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img := &crit.CriuImage{Magic: "STATS", Entries: []*crit.CriuEntry{{Message: entry}}}
	if err := crit.New(nil, f, "", false, false).Encode(img); err != nil {
		t.Fatal(err)
	}
}

func TestReadDumpStats(t *testing.T) {
	dir := t.TempDir()
	writeStats(t, dir, dumpStatsFile, &stats.StatsEntry{Dump: &stats.DumpStatsEntry{
		FreezingTime: proto.Uint32(1500), FrozenTime: proto.Uint32(2_250_000), MemdumpTime: proto.Uint32(1_000_000),
		MemwriteTime: proto.Uint32(750_000), PagesScanned: proto.Uint64(4096), PagesSkippedParent: proto.Uint64(0),
		PagesWritten: proto.Uint64(4000), PagesLazy: proto.Uint64(0),
	}})
	got, err := ReadDumpStats(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{"freezing_s": 0.0015, "frozen_s": 2.25, "memdump_s": 1, "memwrite_s": 0.75, "pages_scanned": 4096, "pages_written": 4000}
	if !maps.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestReadRestoreStats(t *testing.T) {
	dir := t.TempDir()
	writeStats(t, dir, restoreStatsFile, &stats.StatsEntry{Restore: &stats.RestoreStatsEntry{
		PagesCompared: proto.Uint64(0), PagesSkippedCow: proto.Uint64(0), ForkingTime: proto.Uint32(20_000),
		RestoreTime: proto.Uint32(3_500_000), PagesRestored: proto.Uint64(123),
	}})
	got, err := ReadRestoreStats(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Stats{"forking_s": 0.02, "restore_s": 3.5, "pages_restored": 123}); !maps.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// A directory without the file, and a file that is not a stats image, are
// errors that name the file and the directory.
func TestReadStatsErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadRestoreStats(dir); err == nil || !strings.Contains(err.Error(), "stats-restore in "+dir) {
		t.Errorf("missing file: %v", err)
	}
	os.WriteFile(filepath.Join(dir, dumpStatsFile), []byte("not a CRIU image at all"), 0o644)
	if _, err := ReadDumpStats(dir); err == nil || !strings.Contains(err.Error(), "stats-dump in "+dir) {
		t.Errorf("garbage file: %v", err)
	}
	// Cut short, as by a CRIU killed while writing it.
	for _, n := range []int64{5, 14} {
		writeStats(t, dir, restoreStatsFile, &stats.StatsEntry{Restore: &stats.RestoreStatsEntry{
			PagesCompared: proto.Uint64(1), PagesSkippedCow: proto.Uint64(2), ForkingTime: proto.Uint32(3), RestoreTime: proto.Uint32(4)}})
		os.Truncate(filepath.Join(dir, restoreStatsFile), n)
		if _, err := ReadRestoreStats(dir); err == nil || !strings.Contains(err.Error(), "cut short") {
			t.Errorf("file cut to %d bytes: %v", n, err)
		}
	}
}
