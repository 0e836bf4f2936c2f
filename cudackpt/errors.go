package cudackpt

import (
	"errors"
	"fmt"
)

var (
	// ErrNoDriver means the CUDA driver library (or NVML) is not installed:
	// the node has no NVIDIA GPU, or its driver is not mounted where we look.
	ErrNoDriver = errors.New("NVIDIA driver library not found")
	// ErrUnsupported means the driver is present but too old for the
	// requested operation (checkpoint needs 570+, GPU remapping 580+).
	ErrUnsupported = errors.New("not supported by this NVIDIA driver")
)

// CUresult codes that the checkpoint flows act on. The names come from the
// driver (cuGetErrorName); these constants exist so callers can branch.
const (
	CodeInvalidValue    = 1   // CUDA_ERROR_INVALID_VALUE
	CodeOutOfMemory     = 2   // CUDA_ERROR_OUT_OF_MEMORY
	CodeNotInitialized  = 3   // CUDA_ERROR_NOT_INITIALIZED
	CodeOperatingSystem = 304 // CUDA_ERROR_OPERATING_SYSTEM
	CodeIllegalState    = 401 // CUDA_ERROR_ILLEGAL_STATE
	CodeNotFound        = 500 // CUDA_ERROR_NOT_FOUND
	CodeNotSupported    = 801 // CUDA_ERROR_NOT_SUPPORTED
	CodeTimeout         = 909 // CUDA_ERROR_TIMEOUT
)

// knownNames backs Error.Name when the driver cannot name a code itself.
var knownNames = map[int]string{
	CodeInvalidValue:    "CUDA_ERROR_INVALID_VALUE",
	CodeOutOfMemory:     "CUDA_ERROR_OUT_OF_MEMORY",
	CodeNotInitialized:  "CUDA_ERROR_NOT_INITIALIZED",
	CodeOperatingSystem: "CUDA_ERROR_OPERATING_SYSTEM",
	CodeIllegalState:    "CUDA_ERROR_ILLEGAL_STATE",
	CodeNotFound:        "CUDA_ERROR_NOT_FOUND",
	CodeNotSupported:    "CUDA_ERROR_NOT_SUPPORTED",
	CodeTimeout:         "CUDA_ERROR_TIMEOUT",
}

// Error is a failed driver call. It keeps the raw CUresult so callers can
// tell a timeout from an illegal state without parsing text.
type Error struct {
	Op   string // driver entry point, e.g. "cuCheckpointProcessLock"
	PID  int    // target process; 0 for calls without one
	Code int    // CUresult
	Name string // e.g. "CUDA_ERROR_TIMEOUT"
}

func (e *Error) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("%s: %s (%d)", e.Op, e.Name, e.Code)
	}
	return fmt.Sprintf("%s pid %d: %s (%d)", e.Op, e.PID, e.Name, e.Code)
}

// codeOf returns the CUresult inside err, or -1.
func codeOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return -1
}

// IsNotCUDAProcess reports whether err is the driver saying that the target
// pid holds no CUDA state. Driver 580 answers CUDA_ERROR_NOT_INITIALIZED for
// a live process that never initialised CUDA (and the fake does the same);
// CUDA_ERROR_NOT_FOUND is accepted too. CUDA_ERROR_INVALID_VALUE is not:
// it means a bad argument, and reading it as "no CUDA here" could make a
// checkpoint silently skip a CUDA process. A pid that no longer exists gets
// CUDA_ERROR_OPERATING_SYSTEM, which is also what a broken restore returns,
// so it is not matched here either (FindCUDAProcesses checks for exited
// pids itself).
func IsNotCUDAProcess(err error) bool {
	switch codeOf(err) {
	case CodeNotInitialized, CodeNotFound:
		return true
	}
	return false
}

// IsTimeout reports whether err is a lock that did not complete in time,
// typically because the process is frozen or stuck in a long kernel.
func IsTimeout(err error) bool { return codeOf(err) == CodeTimeout }

// IsIllegalState reports whether err is a call made in the wrong state,
// e.g. checkpointing a process that is not locked.
func IsIllegalState(err error) bool { return codeOf(err) == CodeIllegalState }
