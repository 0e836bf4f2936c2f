package crypt

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newTestKey(t testing.TB) *Key {
	t.Helper()
	k, err := NewKey([]byte(rand.Text() + rand.Text())[:KeySize])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// encrypted writes plain to a file, encrypts it under name and returns the
// encrypted file's path.
func encrypted(t testing.TB, k *Key, plain []byte, name string) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "plain")
	if err := os.WriteFile(src, plain, 0o600); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "sealed")
	if err := k.EncryptFile(src, dst, name); err != nil {
		t.Fatal(err)
	}
	return dst
}

// decrypt decrypts src under name and returns the plaintext; on error it
// also checks that no output file was left.
func decrypt(t *testing.T, k *Key, src, name string, workers int) ([]byte, error) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "out")
	err := k.DecryptFile(context.Background(), src, dst, name, workers)
	if err != nil {
		if _, statErr := os.Lstat(dst); !errors.Is(statErr, fs.ErrNotExist) {
			t.Errorf("a failed decryption left %s behind", dst)
		}
		return nil, err
	}
	return os.ReadFile(dst)
}

func random(t testing.TB, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestRoundTrip(t *testing.T) {
	k := newTestKey(t)
	for _, size := range []int{0, 1, ChunkSize - 1, ChunkSize, ChunkSize + 1, 5*ChunkSize + 12345} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			plain := random(t, size)
			src := encrypted(t, k, plain, "checkpoint/pages-1.img")
			chunks := max(1, (size+ChunkSize-1)/ChunkSize)
			if size > 0 && size%ChunkSize == 0 {
				chunks = size / ChunkSize
			}
			fi, err := os.Stat(src)
			if err != nil {
				t.Fatal(err)
			}
			if want := int64(headerSize + size + chunks*tagSize); fi.Size() != want {
				t.Errorf("encrypted size %d, want %d (header, plaintext, %d tags)", fi.Size(), want, chunks)
			}
			sealed, _ := os.ReadFile(src)
			if size >= 64 && bytes.Contains(sealed, plain[:64]) {
				t.Error("the encrypted file contains the plaintext")
			}
			// The sequential and the parallel decryption must agree with
			// the plaintext and so with each other.
			for _, workers := range []int{1, 8} {
				got, err := decrypt(t, k, src, "checkpoint/pages-1.img", workers)
				if err != nil {
					t.Fatalf("workers %d: %v", workers, err)
				}
				if !bytes.Equal(got, plain) {
					t.Fatalf("workers %d: decrypted %d bytes differ from the %d encrypted", workers, len(got), len(plain))
				}
			}
		})
	}
}

// TestTamper: every change to an encrypted file, and the wrong key or path,
// fails authentication instead of producing plaintext.
func TestTamper(t *testing.T) {
	k := newTestKey(t)
	const name = "checkpoint/pages-1.img"
	plain := random(t, 3*ChunkSize+100) // chunks 0-2 full, chunk 3 short
	src := encrypted(t, k, plain, name)
	sealed, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	full := ChunkSize + tagSize
	chunkAt := func(i int) []byte { return sealed[headerSize+i*full : min(len(sealed), headerSize+(i+1)*full)] }
	other := encrypted(t, k, random(t, 3*ChunkSize+100), "checkpoint/pages-2.img")
	otherSealed, _ := os.ReadFile(other)

	flip := func(off int) []byte {
		b := bytes.Clone(sealed)
		b[off] ^= 0x01
		return b
	}
	cases := []struct {
		name string
		file []byte
		key  *Key
		as   string
		want error
	}{
		{"wrong key", sealed, newTestKey(t), name, ErrAuth},
		{"flipped byte in the header's file id", flip(20), k, name, ErrAuth},
		{"flipped byte in the header's chunk size", flip(15), k, name, ErrAuth},
		{"flipped magic", flip(0), k, name, ErrFormat},
		{"flipped byte in chunk 0", flip(headerSize + 7), k, name, ErrAuth},
		{"flipped byte in chunk 1", flip(headerSize + full + 500), k, name, ErrAuth},
		{"flipped byte in chunk 2's tag", flip(headerSize + 3*full - 1), k, name, ErrAuth},
		{"flipped byte in the last chunk", flip(len(sealed) - 50), k, name, ErrAuth},
		{"truncated at a chunk boundary", sealed[:headerSize+3*full], k, name, ErrAuth},
		{"truncated inside a chunk", sealed[:headerSize+full+1000], k, name, ErrAuth},
		{"truncated to a partial tag", sealed[:headerSize+3*full+5], k, name, ErrAuth},
		{"truncated to the header", sealed[:headerSize], k, name, ErrAuth},
		{"truncated inside the header", sealed[:10], k, name, ErrFormat},
		{"extended by a copy of the last chunk", append(bytes.Clone(sealed), chunkAt(3)...), k, name, ErrAuth},
		{"chunks 0 and 1 swapped", concat(sealed[:headerSize], chunkAt(1), chunkAt(0), chunkAt(2), chunkAt(3)), k, name, ErrAuth},
		{"chunk 1 dropped", concat(sealed[:headerSize], chunkAt(0), chunkAt(2), chunkAt(3)), k, name, ErrAuth},
		{"chunk 1 from another file", concat(sealed[:headerSize], chunkAt(0), otherSealed[headerSize+full:headerSize+2*full], chunkAt(2), chunkAt(3)), k, name, ErrAuth},
		{"another file of the checkpoint in its place", otherSealed, k, name, ErrAuth},
		{"decrypted under another path", sealed, k, "checkpoint/pages-2.img", ErrAuth},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "sealed")
			if err := os.WriteFile(p, tc.file, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, workers := range []int{1, 4} {
				got, err := decrypt(t, tc.key, p, tc.as, workers)
				if !errors.Is(err, tc.want) {
					t.Fatalf("workers %d: got %d bytes, error %v; want %v", workers, len(got), err, tc.want)
				}
				if !strings.Contains(err.Error(), "decrypting "+tc.as) {
					t.Errorf("error %q does not name the file", err)
				}
			}
		})
	}
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestDecryptCancelled(t *testing.T) {
	k := newTestKey(t)
	src := encrypted(t, k, random(t, 4*ChunkSize), "f")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dst := filepath.Join(t.TempDir(), "out")
	if err := k.DecryptFile(ctx, src, dst, "f", 2); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if _, err := os.Lstat(dst); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("a cancelled decryption left its output behind")
	}
}

func TestDecryptTree(t *testing.T) {
	k := newTestKey(t)
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "plain")
	files := map[string][]byte{"checkpoint/pages-1.img": random(t, 2*ChunkSize+3), "rootfs-diff.tar": random(t, 10), "spec.dump": nil}
	var names []string
	for name, data := range files {
		p := filepath.Join(t.TempDir(), "p")
		os.WriteFile(p, data, 0o600)
		os.MkdirAll(filepath.Join(src, "checkpoint"), 0o700)
		if err := k.EncryptFile(p, filepath.Join(src, name), name); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	if err := k.DecryptTree(context.Background(), src, dst, names, 0); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		got, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: %v, %d bytes, want %d", name, err, len(got), len(data))
		}
		if fi, _ := os.Stat(filepath.Join(dst, name)); fi == nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", name, fi)
		}
	}
	if err := k.DecryptTree(context.Background(), src, dst, []string{"../x"}, 0); err == nil {
		t.Error("DecryptTree wrote outside its directory")
	}
}

func TestParseKey(t *testing.T) {
	raw := random(t, KeySize)
	hexKey := fmt.Sprintf("%x", raw)
	want, _ := NewKey(raw)
	for _, tc := range []struct {
		name, data string
		ok         bool
	}{
		{"raw", string(raw), true},
		{"hex", hexKey, true},
		{"hex and newline", hexKey + "\n", true},
		{"31 bytes", string(raw[:31]), false},
		{"33 bytes", string(raw) + "x", false},
		{"64 non-hex", strings.Repeat("z", 64), false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParseKey([]byte(tc.data))
			if tc.ok != (err == nil) || (tc.ok && k.ID != want.ID) {
				t.Fatalf("ParseKey: %v, %v", k, err)
			}
		})
	}
	if len(want.ID) != 16 {
		t.Errorf("key id %q is not 8 bytes in hex", want.ID)
	}
}

// BenchmarkDecrypt decrypts a 1 GiB file with one worker and with
// GOMAXPROCS workers; the encrypted file sits in the page cache.
func BenchmarkDecrypt(b *testing.B) {
	k := newTestKey(b)
	dir := b.TempDir()
	plain := filepath.Join(dir, "plain")
	f, err := os.Create(plain)
	if err != nil {
		b.Fatal(err)
	}
	chunk := random(b, 1<<20)
	for range 1024 {
		f.Write(chunk)
	}
	f.Close()
	src := filepath.Join(dir, "sealed")
	if err := k.EncryptFile(plain, src, "pages"); err != nil {
		b.Fatal(err)
	}
	os.Remove(plain)
	for _, workers := range []int{1, 0} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			b.SetBytes(1 << 30)
			for b.Loop() {
				dst := filepath.Join(dir, "out")
				if err := k.DecryptFile(context.Background(), src, dst, "pages", workers); err != nil {
					b.Fatal(err)
				}
				os.Remove(dst)
			}
		})
	}
}
