package crypt

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// Encrypt streams r into w as one encrypted file. name is the file's path
// inside the checkpoint; decryption must name the same path, so a file
// swapped for another fails. Memory use is two chunks, whatever the size.
func (k *Key) Encrypt(w io.Writer, r io.Reader, name string) error {
	id := make([]byte, idSize)
	if _, err := rand.Read(id); err != nil {
		return err
	}
	h := newHeader(ChunkSize, id)
	c, err := k.cipherFor(h, name)
	if err != nil {
		return err
	}
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	// The last chunk is sealed as such, so the reader must know it is the
	// last before sealing: a one-byte peek past each full chunk tells.
	br := bufio.NewReaderSize(r, 64<<10)
	plain := make([]byte, ChunkSize)
	sealed := make([]byte, 0, ChunkSize+c.aead.Overhead())
	for i := int64(0); ; i++ {
		n, err := io.ReadFull(br, plain)
		final := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
		if err != nil && !final {
			return err
		}
		if !final {
			if _, err := br.Peek(1); errors.Is(err, io.EOF) {
				final = true
			} else if err != nil {
				return err
			}
		}
		if _, err := w.Write(c.seal(sealed[:0], plain[:n], i, final)); err != nil {
			return err
		}
		if final {
			return nil
		}
	}
}

// EncryptFile writes src, encrypted, to dst, which must not exist; dst is
// created 0600 and removed again on failure. name is as for Encrypt.
func (k *Key) EncryptFile(src, dst, name string) (err error) {
	in, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := createOutput(dst)
	if err != nil {
		return err
	}
	defer closeOutput(out, &err)
	bw := bufio.NewWriterSize(out, 4<<20)
	if err := k.Encrypt(bw, in, name); err != nil {
		return fmt.Errorf("encrypting %s: %w", name, err)
	}
	return bw.Flush()
}

// createOutput creates dst for EncryptFile or DecryptFile: a new file (never
// an existing one or a symlink), readable by its owner only.
func createOutput(dst string) (*os.File, error) {
	return os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
}

// closeOutput closes a file from createOutput and removes it when *err
// (the caller's result, joined with the close error) says the write failed,
// so no partial output is left behind.
func closeOutput(out *os.File, err *error) {
	if *err = errors.Join(*err, out.Close()); *err != nil {
		os.Remove(out.Name())
	}
}
