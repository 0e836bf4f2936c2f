package criu

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"

	"github.com/checkpoint-restore/go-criu/v7/crit"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/stats"
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

// The files CRIU writes its measurements to, in its work directory.
const (
	dumpStatsFile    = "stats-dump"
	restoreStatsFile = "stats-restore"
)

// ReadDumpStats reads the stats-dump file of CRIU's work directory.
func ReadDumpStats(workDir string) (Stats, error) {
	e, err := readStats(workDir, dumpStatsFile)
	if err != nil {
		return nil, err
	}
	d := e.GetDump()
	if d == nil {
		return nil, fmt.Errorf("CRIU's %s in %s holds no dump statistics", dumpStatsFile, workDir)
	}
	return Stats{
		"freezing_s": micros(d.GetFreezingTime()), "frozen_s": micros(d.GetFrozenTime()),
		"memdump_s": micros(d.GetMemdumpTime()), "memwrite_s": micros(d.GetMemwriteTime()),
		"pages_scanned": float64(d.GetPagesScanned()), "pages_written": float64(d.GetPagesWritten()),
	}, nil
}

// ReadRestoreStats reads the stats-restore file of CRIU's work directory.
func ReadRestoreStats(workDir string) (Stats, error) {
	e, err := readStats(workDir, restoreStatsFile)
	if err != nil {
		return nil, err
	}
	r := e.GetRestore()
	if r == nil {
		return nil, fmt.Errorf("CRIU's %s in %s holds no restore statistics", restoreStatsFile, workDir)
	}
	return Stats{"forking_s": micros(r.GetForkingTime()), "restore_s": micros(r.GetRestoreTime()),
		"pages_restored": float64(r.GetPagesRestored())}, nil
}

// readStats decodes one stats image with go-criu's crit (the package whose
// protobuf types criuimage uses too: go-criu's separate stats package
// registers the same proto file, and a binary with both panics at start).
// The file must hold as many bytes as its header announces first: crit
// would allocate whatever a corrupt size says, and read a file cut short
// by a killed CRIU as zeros.
func readStats(dir, name string) (*stats.StatsEntry, error) {
	path := filepath.Join(dir, name)
	fail := func(err error) (*stats.StatsEntry, error) {
		return nil, fmt.Errorf("reading CRIU's %s in %s: %w", name, dir, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fail(err)
	}
	// Two magics (the service image's, then the stats'), the entry's size, the entry.
	const header = 12
	if len(data) < header || uint64(binary.LittleEndian.Uint32(data[8:]))+header != uint64(len(data)) {
		return fail(fmt.Errorf("%d bytes, not one whole stats entry (cut short?)", len(data)))
	}
	f, err := os.Open(path)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	img, err := crit.New(f, nil, "", false, false).Decode(&stats.StatsEntry{})
	if err != nil {
		return fail(err)
	}
	if img.Magic != "STATS" || len(img.Entries) != 1 {
		return fail(fmt.Errorf("a %s image with %d entries, not one stats entry", img.Magic, len(img.Entries)))
	}
	e, ok := img.Entries[0].Message.(*stats.StatsEntry)
	if !ok {
		return fail(fmt.Errorf("decoded as %T", img.Entries[0].Message))
	}
	return e, nil
}

// micros turns CRIU's microsecond counters into seconds.
func micros(us uint32) float64 { return float64(us) / 1e6 }
