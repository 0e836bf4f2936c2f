// Package runtime holds what the shim needs to know about one container
// beyond runc: the identity under which its checkpoints are stored and
// matched, and its writable layer, captured at checkpoint time and applied
// to the new container's rootfs at restore time.
package runtime
