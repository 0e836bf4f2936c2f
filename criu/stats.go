package criu

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"

	criustats "github.com/checkpoint-restore/go-criu/v7/stats"
)

// Stats are CRIU's own measurements of one dump or restore, by name:
// seconds (names ending in _s) and page counts. CRIU leaves them in its
// work directory (stats-dump, stats-restore); the shim's criu_dump and
// criu_restore phases also count runc and the container's set-up, and
// these say how much of that was CRIU's, and where it went.
//
// Of a dump: freezing_s (stopping the tasks), frozen_s (how long they
// stayed stopped), memdump_s and memwrite_s (collecting and writing
// memory), pages_scanned, pages_written. Of a restore: forking_s (building
// the process tree), restore_s (the whole restore), pages_restored.
type Stats map[string]float64

// ReadDumpStats reads the stats-dump file of CRIU's work directory.
func ReadDumpStats(workDir string) (Stats, error) {
	var st *criustats.DumpStatsEntry
	err := withStatsFile(workDir, criustats.StatsDump, func(d *os.File) (err error) {
		st, err = criustats.CriuGetDumpStats(d)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reading CRIU's %s in %s: %w", criustats.StatsDump, workDir, err)
	}
	return Stats{
		"freezing_s": micros(st.GetFreezingTime()), "frozen_s": micros(st.GetFrozenTime()),
		"memdump_s": micros(st.GetMemdumpTime()), "memwrite_s": micros(st.GetMemwriteTime()),
		"pages_scanned": float64(st.GetPagesScanned()), "pages_written": float64(st.GetPagesWritten()),
	}, nil
}

// ReadRestoreStats reads the stats-restore file of CRIU's work directory.
func ReadRestoreStats(workDir string) (Stats, error) {
	var st *criustats.RestoreStatsEntry
	err := withStatsFile(workDir, criustats.StatsRestore, func(d *os.File) (err error) {
		st, err = criustats.CriuGetRestoreStats(d)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reading CRIU's %s in %s: %w", criustats.StatsRestore, workDir, err)
	}
	return Stats{"forking_s": micros(st.GetForkingTime()), "restore_s": micros(st.GetRestoreTime()),
		"pages_restored": float64(st.GetPagesRestored())}, nil
}

// withStatsFile checks that the stats file name of dir holds as many bytes
// as its header announces (go-criu slices it unchecked: a file cut short by
// a killed CRIU would panic the shim), then hands go-criu the directory.
func withStatsFile(dir, name string, f func(*os.File) error) error {
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	if len(data) < criustats.PayloadOffset ||
		uint64(binary.LittleEndian.Uint32(data[criustats.SizeOffset:]))+criustats.PayloadOffset > uint64(len(data)) {
		return fmt.Errorf("%s is cut short (%d bytes)", name, len(data))
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return f(d)
}

// micros turns CRIU's microsecond counters into seconds.
func micros(us uint32) float64 { return float64(us) / 1e6 }
