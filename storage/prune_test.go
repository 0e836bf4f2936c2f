package storage

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPrune(t *testing.T) {
	// Each checkpoint holds 100 bytes; digits give generation order per key,
	// and creation times interleave the keys: a1 b1 a2 b2 a3.
	created := map[string]int{"a1": 1, "b1": 2, "a2": 3, "b2": 4, "a3": 5}
	tests := []struct {
		name   string
		policy PrunePolicy
		want   []string
	}{
		{"no limits", PrunePolicy{StaleStaging: -1}, nil},
		{"keep newest per key", PrunePolicy{KeepPerKey: 1}, []string{"a1", "a2", "b1"}},
		{"byte budget", PrunePolicy{MaxBytes: 300}, []string{"a1", "b1"}},
		{"budget below one checkpoint", PrunePolicy{MaxBytes: 50}, []string{"a1", "a2", "a3", "b1", "b2"}},
		{"keep then budget", PrunePolicy{KeepPerKey: 2, MaxBytes: 200}, []string{"a1", "a2", "b1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
			byName := map[string]string{}
			for _, label := range slices.Sorted(maps.Keys(created)) {
				m := &Manifest{Key: testKey(label[:1]), Created: base.Add(time.Duration(created[label]) * time.Hour)}
				c := publish(t, s, m, map[string]string{"checkpoint/pages.img": strings.Repeat("x", 100)})
				byName[c.Name] = label
			}
			broken := filepath.Join(s.Root, testKey("a")[:16]+"-g000009")
			if err := os.Mkdir(broken, 0o700); err != nil {
				t.Fatal(err)
			}
			removed, err := s.Prune(tt.policy)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, name := range removed {
				got = append(got, byName[name])
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("removed %v, want %v", got, tt.want)
			}
			list, err := s.List()
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != len(created)-len(tt.want)+1 {
				t.Errorf("%d checkpoints left, want %d plus the broken one", len(list), len(created)-len(tt.want))
			}
			if _, err := os.Stat(broken); err != nil {
				t.Errorf("Prune touched a checkpoint it can't read: %v", err)
			}
		})
	}
}

func TestPruneStaleLeftovers(t *testing.T) {
	s := openStore(t)
	old := time.Now().Add(-2 * time.Hour)
	var leftovers []string
	for _, prefix := range []string{stagingPrefix, trashPrefix} {
		dir, err := os.MkdirTemp(s.Root, prefix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(dir, old, old); err != nil {
			t.Fatal(err)
		}
		leftovers = append(leftovers, filepath.Base(dir))
	}
	fresh := stageFiles(t, s, nil) // a live writer: locked and new
	other := filepath.Join(s.Root, ".operator-notes")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	removed, err := s.Prune(PrunePolicy{StaleStaging: time.Hour})
	slices.Sort(removed)
	slices.Sort(leftovers)
	if err != nil || !slices.Equal(removed, leftovers) {
		t.Errorf("Prune = %v, %v; want %v", removed, err, leftovers)
	}
	for _, dir := range []string{fresh.Dir(), other} {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("Prune removed %s: %v", dir, err)
		}
	}
}
