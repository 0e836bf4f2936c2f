package shim

import "context"

// removeControlDir removes a container's control directory on the host.
// The control directory itself arrives with the checkpoint/restore work;
// until then there is nothing to remove.
func removeControlDir(ctx context.Context, id string) {}
