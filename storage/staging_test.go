package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
)

// raceWriters stages one checkpoint per writer, then publishes them all at
// once through publish, returning each writer's result.
func raceWriters(t *testing.T, s *Store, writers int, publish func(*Staging) (*Checkpoint, error)) ([]*Checkpoint, []error) {
	t.Helper()
	results, errs := make([]*Checkpoint, writers), make([]error, writers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range writers {
		st := stageFiles(t, s, map[string]string{"checkpoint/core.img": fmt.Sprint("writer ", i)})
		wg.Go(func() {
			<-start
			results[i], errs[i] = publish(st)
		})
	}
	close(start)
	wg.Wait()
	return results, errs
}

// checkRaceOutcome checks what every race must end with: each writer either
// published or got ErrExists, every visible checkpoint is a winner's and
// verifies, and no staging directory is left.
func checkRaceOutcome(t *testing.T, s *Store, results []*Checkpoint, errs []error) (winners []string) {
	t.Helper()
	for i, err := range errs {
		switch {
		case err == nil:
			winners = append(winners, results[i].Name)
		case !errors.Is(err, ErrExists):
			t.Errorf("writer %d: error %v, want ErrExists", i, err)
		}
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(winners)
	if !slices.Equal(names(list), winners) {
		t.Errorf("visible %v, winners %v", names(list), winners)
	}
	for _, c := range list {
		if err := c.Verify(context.Background(), nil); err != nil {
			t.Error(err)
		}
	}
	if got := rootEntries(t, s); len(got) != len(list) {
		t.Errorf("store root holds %v, want only %v", got, names(list))
	}
	return winners
}

func TestConcurrentPublishSameGeneration(t *testing.T) {
	s := openStore(t)
	key := testKey("race")
	results, errs := raceWriters(t, s, 8, func(st *Staging) (*Checkpoint, error) {
		return st.publishAt(&Manifest{Key: key}, 1)
	})
	winners := checkRaceOutcome(t, s, results, errs)
	if want := []string{checkpointName(key, 1)}; !slices.Equal(winners, want) {
		t.Errorf("winners %v, want exactly %v", winners, want)
	}
	if latest, err := s.Latest(key); err != nil || latest.Name != checkpointName(key, 1) {
		t.Errorf("Latest = %v, %v", latest, err)
	}
}

// With Publish choosing generations itself, a writer that starts after the
// winner's rename takes the next generation; the rest lose with ErrExists.
func TestConcurrentPublish(t *testing.T) {
	s := openStore(t)
	key := testKey("race")
	results, errs := raceWriters(t, s, 8, func(st *Staging) (*Checkpoint, error) {
		return st.Publish(&Manifest{Key: key})
	})
	if winners := checkRaceOutcome(t, s, results, errs); len(winners) == 0 {
		t.Error("no writer published")
	}
}
