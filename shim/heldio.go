package shim

import (
	"os"
	"syscall"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
)

// heldIO keeps a client's output fifos open for writing while a restore is
// attempted. A fifo's reader (ctr, containerd's CRI logger) stops reading
// once every writer has closed it. When CRIU restored the process and a
// later step failed (the GPU state), killing the restored process closes the
// runc shim's writers; the cold start's writers could then never open
// (opening a fifo for writing waits for a reader) and the fallback would
// fail. With one more writer held across the replacement, the reader never
// sees the end.
type heldIO []*os.File

// holdIO opens the request's stdout and stderr fifos for writing, where
// they are fifos with a reader; files, logging URIs and terminals are left
// alone.
func holdIO(r *taskAPI.CreateTaskRequest) heldIO {
	var held heldIO
	for _, path := range []string{r.Stdout, r.Stderr} {
		if st, err := os.Stat(path); path == "" || err != nil || st.Mode()&os.ModeNamedPipe == 0 {
			continue
		}
		if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			held = append(held, f)
		}
	}
	return held
}

// release closes the held writers, once the container's own are open.
func (h heldIO) release() {
	for _, f := range h {
		f.Close()
	}
}
