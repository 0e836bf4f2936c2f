package storage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestVerify(t *testing.T) {
	pages := "checkpoint/pages-1.img" // 4096 bytes of 'p' in sampleFiles
	tests := []struct {
		name   string
		damage func(dir string) error
		want   []string // substrings of the error; none means Verify passes
	}{
		{"intact", func(string) error { return nil }, nil},
		{"flipped byte", func(dir string) error {
			return writeAt(filepath.Join(dir, pages), 100, "q")
		}, []string{pages + ": sha256: expected "}},
		{"truncated", func(dir string) error {
			return os.Truncate(filepath.Join(dir, pages), 100)
		}, []string{pages + ": size: expected 4096, got 100"}},
		{"extra file", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "checkpoint", "extra.img"), nil, 0o600)
		}, []string{"checkpoint/extra.img: not in manifest"}},
		{"missing file", func(dir string) error {
			return os.Remove(filepath.Join(dir, "spec.dump"))
		}, []string{"spec.dump: missing"}},
		{"file replaced by symlink", func(dir string) error {
			p := filepath.Join(dir, "spec.dump")
			return errors.Join(os.Remove(p), os.Symlink("/etc/passwd", p))
		}, []string{"spec.dump: is a symlink, expected a regular file"}},
		{"extra symlink", func(dir string) error {
			return os.Symlink("/etc", filepath.Join(dir, "checkpoint", "host"))
		}, []string{"checkpoint/host: unexpected symlink"}},
		{"named pipe", func(dir string) error {
			return syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600)
		}, []string{"fifo: unexpected named pipe"}},
		{"file replaced by directory", func(dir string) error {
			p := filepath.Join(dir, "deleted.files")
			return errors.Join(os.Remove(p), os.Mkdir(p, 0o700))
		}, []string{"deleted.files: is a directory, expected a regular file"}},
		{"several problems", func(dir string) error {
			return errors.Join(os.Remove(filepath.Join(dir, "spec.dump")), os.Truncate(filepath.Join(dir, pages), 1))
		}, []string{"spec.dump: missing", pages + ": size: expected 4096, got 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			c := publish(t, s, &Manifest{Key: testKey("v")}, sampleFiles)
			if err := tt.damage(c.Dir); err != nil {
				t.Fatal(err)
			}
			err := c.Verify(context.Background(), nil)
			if len(tt.want) == 0 {
				if err != nil {
					t.Errorf("Verify: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.Name) {
				t.Fatalf("Verify error = %v, want ErrCorrupt naming %s", err, c.Name)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Verify error = %v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

func writeAt(p string, off int64, s string) error {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteAt([]byte(s), off)
	return errors.Join(err, f.Close())
}

func TestVerifyProgress(t *testing.T) {
	s := openStore(t)
	c := publish(t, s, &Manifest{Key: testKey("p")}, sampleFiles)
	if err := os.Remove(filepath.Join(c.Dir, "spec.dump")); err != nil {
		t.Fatal(err)
	}
	var last, total int64
	c.Verify(context.Background(), func(done, tot int64) {
		if done < last {
			t.Errorf("progress went back from %d to %d", last, done)
		}
		last, total = done, tot
	})
	if total != c.Size() || last != total {
		t.Errorf("progress ended at %d/%d, want %d/%d", last, total, c.Size(), c.Size())
	}
}

func TestVerifyWithoutManifest(t *testing.T) {
	err := (&Checkpoint{Name: "x", Err: ErrManifest}).Verify(context.Background(), nil)
	if !errors.Is(err, ErrManifest) {
		t.Errorf("Verify error = %v, want ErrManifest", err)
	}
}

// TestVerifyCancelled: a cancelled verification is not a corrupt checkpoint.
func TestVerifyCancelled(t *testing.T) {
	s := openStore(t)
	c := publish(t, s, &Manifest{Key: testKey("c")}, sampleFiles)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := c.Verify(ctx, nil)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("want context.Canceled and not ErrCorrupt, got %v", err)
	}
}
