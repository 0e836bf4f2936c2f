package floor

import (
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// The floors of a registry pull: the bytes cross the network (here
// loopback) and are written to the node's disk, so a pull can go no faster
// than the slower of the two.

// Loopback measures one TCP stream over loopback: size bytes of random data
// written in 1 MiB writes and discarded by the reader.
func Loopback(size int64) (Result, error) {
	r := Result{Name: "loopback_tcp", Note: "1 stream, 1 MiB writes"}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return r, err
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			_, err = io.Copy(io.Discard, c)
			c.Close()
		}
		done <- err
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return r, err
	}
	buf := randomBlock(1 << 20)
	start := time.Now()
	err = writeRepeated(c, buf, size)
	c.Close()
	if err != nil {
		return r, err
	}
	if err := <-done; err != nil {
		return r, err
	}
	r.Bytes, r.Seconds = size, time.Since(start).Seconds()
	return r, nil
}

// DiskWrite measures writing size bytes of random data into a new file in
// dir through the page cache, in 16 MiB writes, and syncing it: what a pull
// does to land a checkpoint durably. The file is removed afterwards.
func DiskWrite(dir string, size int64) (Result, error) {
	r := Result{Name: "disk_write", Note: "16 MiB writes, then fsync, in " + dir}
	f, err := os.CreateTemp(dir, "floor-write-")
	if err != nil {
		return r, err
	}
	defer os.Remove(f.Name())
	buf := randomBlock(16 << 20)
	start := time.Now()
	if err := writeRepeated(f, buf, size); err != nil {
		f.Close()
		return r, err
	}
	err = f.Sync()
	r.Bytes, r.Seconds = size, time.Since(start).Seconds()
	return r, errors.Join(err, f.Close())
}

// randomBlock is n random bytes, for writes that compression or
// deduplication must not shorten.
func randomBlock(n int) []byte {
	buf := make([]byte, n)
	rand.Read(buf)
	return buf
}

// writeRepeated writes size bytes to w, buf again and again, the last
// write cut to what is left.
func writeRepeated(w io.Writer, buf []byte, size int64) error {
	for left := size; left > 0; {
		n := min(int64(len(buf)), left)
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		left -= n
	}
	return nil
}
