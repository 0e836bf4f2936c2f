package storage

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// PrunePolicy bounds what a store keeps. KeepPerKey and MaxBytes of zero
// (or less) mean no limit.
type PrunePolicy struct {
	// KeepPerKey is how many of the newest generations each key keeps.
	KeepPerKey int
	// MaxBytes caps the manifests' total payload; the oldest checkpoints
	// (by Created) go first, whatever their key.
	MaxBytes int64
	// StaleStaging is the age at which staging directories of dead writers
	// and trash of interrupted removals are deleted; 0 deletes them at any
	// age, negative never. A writer that is still alive holds a lock on its
	// staging directory, which spares it at any age. Filesystems without
	// flock (NFSv4 refuses it on directories) rely on the age alone, so
	// shared stores need an age above the longest checkpoint.
	StaleStaging time.Duration
}

// Prune applies the policy and returns the names it removed. It never
// removes a checkpoint whose manifest is unreadable: on a shared store that
// may be a newer shim's schema, so it is left for an operator, whom List
// shows it to.
func (s *Store) Prune(p PrunePolicy) ([]string, error) {
	list, err := s.List()
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	healthy := slices.DeleteFunc(list, func(c *Checkpoint) bool { return c.Err != nil })
	var removed []string
	var errs []error
	for _, c := range victims(healthy, p) {
		if err := s.Remove(c.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, c.Name)
	}
	if p.StaleStaging >= 0 {
		leftovers, err := s.pruneLeftovers(p.StaleStaging)
		removed = append(removed, leftovers...)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("prune %s: %w", s.Root, err)
	}
	return removed, nil
}

// victims picks what the policy drops: per key, all but the newest
// KeepPerKey generations; then, oldest first, until the rest fits MaxBytes.
func victims(cs []*Checkpoint, p PrunePolicy) (drop []*Checkpoint) {
	slices.SortFunc(cs, func(a, b *Checkpoint) int { return cmp.Compare(b.Generation, a.Generation) })
	perKey := map[string]int{}
	var keep []*Checkpoint
	var total int64
	for _, c := range cs {
		perKey[c.Manifest.Key]++
		if p.KeepPerKey > 0 && perKey[c.Manifest.Key] > p.KeepPerKey {
			drop = append(drop, c)
			continue
		}
		keep = append(keep, c)
		total += c.Size()
	}
	slices.SortStableFunc(keep, func(a, b *Checkpoint) int { return a.Manifest.Created.Compare(b.Manifest.Created) })
	for _, c := range keep {
		if p.MaxBytes <= 0 || total <= p.MaxBytes {
			break
		}
		drop = append(drop, c)
		total -= c.Size()
	}
	return drop
}

// pruneLeftovers deletes staging directories of dead writers and trash of
// interrupted removals that are at least age old.
func (s *Store) pruneLeftovers(age time.Duration) (removed []string, err error) {
	entries, err := os.ReadDir(s.Root)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		staging := strings.HasPrefix(name, stagingPrefix)
		if !e.IsDir() || !staging && !strings.HasPrefix(name, trashPrefix) {
			continue
		}
		info, err := e.Info()
		if err != nil || age > 0 && time.Since(info.ModTime()) < age {
			continue
		}
		done, err := removeLeftover(filepath.Join(s.Root, name), staging)
		if err != nil {
			errs = append(errs, err)
		} else if done {
			removed = append(removed, name)
		}
	}
	return removed, errors.Join(errs...)
}

// removeLeftover deletes dir unless it is a staging directory whose writer
// is alive (still holds its lock) or already moved it away.
func removeLeftover(dir string, staging bool) (bool, error) {
	if staging {
		lock, err := lockDir(dir)
		switch {
		case errors.Is(err, syscall.EWOULDBLOCK), errors.Is(err, fs.ErrNotExist):
			return false, nil
		case err == nil:
			defer lock.Close()
		}
	}
	return true, os.RemoveAll(dir)
}
