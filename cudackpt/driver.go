package cudackpt

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// The checkpoint ABI, as cuda.h (CUDA 12.8+/13) declares it. cuda.h itself
// is not included: it is not installed where the shim is built.
typedef int CUresult;
typedef struct { unsigned char bytes[16]; } CUuuid;
typedef struct { CUuuid oldUuid; CUuuid newUuid; } CUcheckpointGpuPair;
typedef struct { unsigned int timeoutMs; unsigned int reserved0; uint64_t reserved1[7]; } CUcheckpointLockArgs;
typedef struct { uint64_t reserved[8]; } CUcheckpointCheckpointArgs;
typedef struct { uint64_t reserved[8]; } CUcheckpointUnlockArgs;
typedef struct {
	CUcheckpointGpuPair *gpuPairs;
	unsigned int gpuPairsCount;
	char reserved[64 - sizeof(CUcheckpointGpuPair *) - sizeof(unsigned int)];
} CUcheckpointRestoreArgs;

_Static_assert(sizeof(CUcheckpointGpuPair) == 32, "gpu pair");
_Static_assert(sizeof(CUcheckpointLockArgs) == 64, "lock args");
_Static_assert(sizeof(CUcheckpointRestoreArgs) == 64, "restore args");

typedef CUresult (*pidArgFn)(int, void *);
typedef CUresult (*intOutFn)(int *);
typedef CUresult (*pidIntOutFn)(int, int *);
typedef CUresult (*initFn)(unsigned int);
typedef CUresult (*errNameFn)(CUresult, const char **);

// cgo cannot call through a function pointer: these trampolines do.
static CUresult ck_lock(void *fn, int pid, unsigned int timeoutMs) {
	CUcheckpointLockArgs a;
	memset(&a, 0, sizeof a);
	a.timeoutMs = timeoutMs;
	return ((pidArgFn)fn)(pid, &a);
}
static CUresult ck_noargs(void *fn, int pid) {
	CUcheckpointCheckpointArgs a; // same 64 zero bytes as the unlock args
	memset(&a, 0, sizeof a);
	return ((pidArgFn)fn)(pid, &a);
}
static CUresult ck_restore(void *fn, int pid, void *pairs, unsigned int n) {
	CUcheckpointRestoreArgs a;
	memset(&a, 0, sizeof a);
	a.gpuPairs = pairs;
	a.gpuPairsCount = n;
	return ((pidArgFn)fn)(pid, &a);
}
static CUresult ck_pid_int(void *fn, int pid, int *out) { return ((pidIntOutFn)fn)(pid, out); }
static CUresult ck_int(void *fn, int *out) { return ((intOutFn)fn)(out); }
static CUresult ck_init(void *fn) { return ((initFn)fn)(0); }
static const char *ck_error_name(void *fn, CUresult r) {
	const char *s = NULL;
	if (fn == NULL || ((errNameFn)fn)(r, &s) != 0) return NULL;
	return s;
}
*/
import "C"

import (
	"fmt"
	"os"
	"time"
	"unsafe"
)

// DefaultLibrary is the driver library's soname, found through the dynamic
// loader's usual search path.
const DefaultLibrary = "libcuda.so.1"

// EnvLibrary names the environment variable that overrides the library path
// when Load is given "": an operator's escape hatch for drivers installed
// outside the loader path (e.g. /usr/local/nvidia/lib64), and the hook the
// tests use to load the fake driver.
const EnvLibrary = "SNAPSHOT_LIBCUDA"

// Driver is an opened CUDA driver. It holds only immutable function
// pointers, so one Driver may be used from many goroutines at once; the
// driver serialises what it must.
type Driver struct {
	path    string
	version DriverVersion
	init    unsafe.Pointer
	errName unsafe.Pointer
	lock    unsafe.Pointer
	ckpt    unsafe.Pointer
	restore unsafe.Pointer
	unlock  unsafe.Pointer
	state   unsafe.Pointer
	tid     unsafe.Pointer
}

// Driver implements API.
var _ API = (*Driver)(nil)

// Load opens the CUDA driver library at path ("" = $SNAPSHOT_LIBCUDA, else
// libcuda.so.1). A missing library gives an error wrapping ErrNoDriver. A
// driver without the checkpoint entry points still loads (so its version can
// be reported); its checkpoint calls return errors wrapping ErrUnsupported.
// The library is never closed: unloading libcuda is not supported.
func Load(path string) (*Driver, error) {
	if path == "" {
		path = os.Getenv(EnvLibrary)
	}
	if path == "" {
		path = DefaultLibrary
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	h := C.dlopen(cpath, C.RTLD_NOW|C.RTLD_LOCAL)
	if h == nil {
		return nil, fmt.Errorf("load %s: %s: %w", path, C.GoString(C.dlerror()), ErrNoDriver)
	}
	sym := func(name string) unsafe.Pointer {
		cname := C.CString(name)
		defer C.free(unsafe.Pointer(cname))
		return C.dlsym(h, cname)
	}
	d := &Driver{
		path:    path,
		init:    sym("cuInit"),
		errName: sym("cuGetErrorName"),
		lock:    sym("cuCheckpointProcessLock"),
		ckpt:    sym("cuCheckpointProcessCheckpoint"),
		restore: sym("cuCheckpointProcessRestore"),
		unlock:  sym("cuCheckpointProcessUnlock"),
		state:   sym("cuCheckpointProcessGetState"),
		tid:     sym("cuCheckpointProcessGetRestoreThreadId"),
	}
	getVersion := sym("cuDriverGetVersion")
	if getVersion == nil {
		return nil, fmt.Errorf("load %s: no cuDriverGetVersion, not a CUDA driver: %w", path, ErrNoDriver)
	}
	var v C.int
	if r := C.ck_int(getVersion, &v); r != 0 {
		return nil, d.err("cuDriverGetVersion", 0, r)
	}
	d.version = DriverVersion(v)
	return d, nil
}

// Path is the library that was opened, for logs and doctor output.
func (d *Driver) Path() string { return d.path }

// Version returns the driver's CUDA version. The error wraps ErrUnsupported
// when the driver has no checkpoint API (older than 570 / CUDA 12.8); the
// version is returned either way so it can be reported.
func (d *Driver) Version() (DriverVersion, error) {
	if !d.version.SupportsCheckpoint() || d.lock == nil || d.state == nil {
		return d.version, fmt.Errorf("CUDA driver %s (%s) has no checkpoint API, need %s or newer (driver 570+): %w",
			d.version, d.path, MinCheckpointVersion, ErrUnsupported)
	}
	return d.version, nil
}

// SupportsRemap reports whether Restore can move state onto other GPUs.
func (d *Driver) SupportsRemap() bool { return d.version.SupportsRemap() }

// Init calls cuInit in this process. The driver needs it before Restore
// when the GPUs are not in persistence mode; with persistence mode on it
// only costs time and opens device files, so callers skip it.
func (d *Driver) Init() error {
	if d.init == nil {
		return fmt.Errorf("%s: no cuInit: %w", d.path, ErrUnsupported)
	}
	return d.check("cuInit", 0, C.ck_init(d.init))
}

// State returns pid's checkpoint state. For a process without CUDA the
// error satisfies IsNotCUDAProcess.
func (d *Driver) State(pid int) (ProcessState, error) {
	if err := d.need("cuCheckpointProcessGetState", d.state); err != nil {
		return 0, err
	}
	var s C.int // CUprocessState is a C enum: int-sized
	if r := C.ck_pid_int(d.state, C.int(pid), &s); r != 0 {
		return 0, d.err("cuCheckpointProcessGetState", pid, r)
	}
	return ProcessState(s), nil
}

// Lock waits for pid's in-flight GPU work and blocks its further CUDA
// calls. timeout 0 waits forever; it is rounded up to whole milliseconds.
func (d *Driver) Lock(pid int, timeout time.Duration) error {
	if err := d.need("cuCheckpointProcessLock", d.lock); err != nil {
		return err
	}
	ms := (timeout + time.Millisecond - 1) / time.Millisecond
	if timeout < 0 || ms > 1<<32-1 {
		return fmt.Errorf("lock pid %d: timeout %s out of range", pid, timeout)
	}
	return d.check("cuCheckpointProcessLock", pid, C.ck_lock(d.lock, C.int(pid), C.uint(ms)))
}

// Checkpoint copies a locked pid's device memory to its host memory and
// releases its GPU resources, so that CRIU can dump it.
func (d *Driver) Checkpoint(pid int) error {
	if err := d.need("cuCheckpointProcessCheckpoint", d.ckpt); err != nil {
		return err
	}
	return d.check("cuCheckpointProcessCheckpoint", pid, C.ck_noargs(d.ckpt, C.int(pid)))
}

// Restore brings a checkpointed pid's GPU state back, onto the GPUs named by
// pairs (nil: the same GPUs). The driver wants every GPU the process used in
// pairs when any are given. Drivers before 580 cannot remap: identity pairs
// are then dropped, and a real remap is refused with ErrUnsupported.
func (d *Driver) Restore(pid int, pairs []GPUPair) error {
	if err := d.need("cuCheckpointProcessRestore", d.restore); err != nil {
		return err
	}
	if !d.version.SupportsRemap() {
		for _, p := range pairs {
			if p.Old != p.New {
				return fmt.Errorf("restore pid %d: moving GPU state %s needs CUDA %s (driver 580+), have %s: %w",
					pid, p, MinRemapVersion, d.version, ErrUnsupported)
			}
		}
		pairs = nil
	}
	var ptr unsafe.Pointer
	if len(pairs) > 0 {
		// Go memory without Go pointers, only read during the call: allowed by cgo.
		ptr = unsafe.Pointer(&pairs[0])
	}
	return d.check("cuCheckpointProcessRestore", pid, C.ck_restore(d.restore, C.int(pid), ptr, C.uint(len(pairs))))
}

// Unlock lets a locked pid make CUDA calls again.
func (d *Driver) Unlock(pid int) error {
	if err := d.need("cuCheckpointProcessUnlock", d.unlock); err != nil {
		return err
	}
	return d.check("cuCheckpointProcessUnlock", pid, C.ck_noargs(d.unlock, C.int(pid)))
}

// RestoreThreadID returns the thread of pid that the driver uses to restore
// it; CRIU must not leave that thread frozen while Restore runs.
func (d *Driver) RestoreThreadID(pid int) (int, error) {
	if err := d.need("cuCheckpointProcessGetRestoreThreadId", d.tid); err != nil {
		return 0, err
	}
	var tid C.int
	if r := C.ck_pid_int(d.tid, C.int(pid), &tid); r != 0 {
		return 0, d.err("cuCheckpointProcessGetRestoreThreadId", pid, r)
	}
	return int(tid), nil
}

func (d *Driver) need(op string, fn unsafe.Pointer) error {
	if fn == nil {
		return fmt.Errorf("%s: missing from %s (CUDA %s): %w", op, d.path, d.version, ErrUnsupported)
	}
	return nil
}

func (d *Driver) check(op string, pid int, r C.CUresult) error {
	if r == 0 {
		return nil
	}
	return d.err(op, pid, r)
}

func (d *Driver) err(op string, pid int, r C.CUresult) error {
	code := int(r)
	name := knownNames[code]
	if s := C.ck_error_name(d.errName, r); s != nil {
		name = C.GoString(s)
	}
	if name == "" {
		name = "CUDA_ERROR_UNKNOWN_CODE"
	}
	return &Error{Op: op, PID: pid, Code: code, Name: name}
}

// DriverVersion is the CUDA version a driver implements, encoded as
// cuDriverGetVersion returns it: 1000*major + 10*minor (12080 = 12.8).
type DriverVersion int

// Versions that gate features of the checkpoint API.
const (
	MinCheckpointVersion DriverVersion = 12080 // driver 570: lock, checkpoint, restore, unlock
	MinRemapVersion      DriverVersion = 13000 // driver 580: restore onto other GPUs
)

// Major is the CUDA major version (12 for 12080).
func (v DriverVersion) Major() int { return int(v) / 1000 }

// Minor is the CUDA minor version (8 for 12080).
func (v DriverVersion) Minor() int { return int(v) % 1000 / 10 }

func (v DriverVersion) String() string { return fmt.Sprintf("%d.%d", v.Major(), v.Minor()) }

// SupportsCheckpoint reports whether the checkpoint API exists (CUDA 12.8+).
func (v DriverVersion) SupportsCheckpoint() bool { return v >= MinCheckpointVersion }

// SupportsRemap reports whether Restore can move state to other GPUs (CUDA 13.0+).
func (v DriverVersion) SupportsRemap() bool { return v >= MinRemapVersion }
