// A fake libcuda.so.1 for tests on machines without a GPU.
//
// It implements the CUDA driver's checkpoint entry points with the driver's
// per-process state machine:
//
//   RUNNING --lock--> LOCKED --checkpoint--> CHECKPOINTED --restore--> LOCKED --unlock--> RUNNING
//
// and answers CUDA_ERROR_ILLEGAL_STATE (401) to a call made in the wrong state.
//
// A "CUDA process" is any process whose initial environment holds
// FAKE_CUDA_TOKEN=<token> (read from /proc/<pid>/environ). As driver 580
// does, any other process gets CUDA_ERROR_NOT_INITIALIZED (3) and a pid that
// does not exist CUDA_ERROR_OPERATING_SYSTEM (304). State is kept per token, not per pid, in the file
// <state dir>/<token>, so it survives a CRIU dump and restore of the process
// under a new host pid.
//
// Configuration, read by the calling process (environment first, then a file
// in the state dir):
//   state dir       $FAKE_CUDA_STATE_DIR, else "state" next to this library
//   driver version  $FAKE_CUDA_DRIVER_VERSION, else file driver_version, else 13000
//   present GPUs    $FAKE_CUDA_GPUS, else file gpus: comma-separated UUIDs
//                   ("GPU-..."); unset = any GPU is present
//   injected fault  $FAKE_CUDA_FAIL="<token>:<op>:<code>,..." else file
//                   <token>.fail-<op> holding <code>; op is lock, checkpoint,
//                   restore, unlock or state. Lock with code 909 first waits
//                   for the lock's timeout (not at all for timeout 0).
// Device files: the real driver's checkpoint makes the process let go of its
// /dev/nvidia* files (its own driver thread closes them) and its restore
// takes them back. A fake CUDA process whose environment names a device file
// in FAKE_CUDA_DEVICE plays that part: after a checkpoint the fake sends it
// SIGUSR1 and waits until it holds no file of that device, after a restore
// SIGUSR2 and waits until it holds one again (5 s, else
// CUDA_ERROR_OPERATING_SYSTEM).
// A new token starts RUNNING on GPU $FAKE_CUDA_GPU of the target process's
// environment, else the first present GPU. Restore onto a GPU that is not
// present, and GPU pairs that do not map the process's current GPU, give
// CUDA_ERROR_INVALID_VALUE (1) and leave it CHECKPOINTED, as driver 580 does.
//
// The state file is "key=value" lines: state, gpu, pid (last pid seen) and
// one counter per entry point (lock, checkpoint, restore, unlock,
// state_calls), failed calls included. Every lock, checkpoint, restore and
// unlock is also appended to <state dir>/calls.log as
// "<op> <token> <pid> <result>".
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef int CUresult;
typedef struct { unsigned char bytes[16]; } CUuuid;
typedef struct { CUuuid oldUuid; CUuuid newUuid; } CUcheckpointGpuPair;
typedef struct { unsigned int timeoutMs; unsigned int reserved0; uint64_t reserved1[7]; } CUcheckpointLockArgs;
typedef struct { CUcheckpointGpuPair *gpuPairs; unsigned int gpuPairsCount; char reserved[52]; } CUcheckpointRestoreArgs;

enum { RUNNING = 0, LOCKED = 1, CHECKPOINTED = 2, FAILED = 3 };
static const char *state_names[] = {"RUNNING", "LOCKED", "CHECKPOINTED", "FAILED"};

enum {
	SUCCESS = 0, INVALID_VALUE = 1, OUT_OF_MEMORY = 2, NOT_INITIALIZED = 3,
	INVALID_DEVICE = 101, OPERATING_SYSTEM = 304, ILLEGAL_STATE = 401,
	NOT_FOUND = 500, NOT_SUPPORTED = 801, TIMEOUT = 909, UNKNOWN = 999,
};

static const struct { CUresult code; const char *name; const char *text; } errors[] = {
	{SUCCESS, "CUDA_SUCCESS", "no error"},
	{INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
	{OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
	{NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
	{INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
	{OPERATING_SYSTEM, "CUDA_ERROR_OPERATING_SYSTEM", "OS call failed or operation not supported on this OS"},
	{ILLEGAL_STATE, "CUDA_ERROR_ILLEGAL_STATE", "the operation cannot be performed in the present state"},
	{NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
	{NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
	{TIMEOUT, "CUDA_ERROR_TIMEOUT", "timeout occurred"},
	{UNKNOWN, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

// The record of one token, as stored in its state file.
struct record {
	int state, pid;
	char gpu[64];
	long lock, checkpoint, restore, unlock, get_state;
};

static const char *state_dir(void) {
	static char dir[4096];
	const char *env = getenv("FAKE_CUDA_STATE_DIR");
	if (env && *env) {
		snprintf(dir, sizeof dir, "%s", env);
	} else {
		Dl_info info;
		char self[4096] = ".";
		if (dladdr((void *)state_dir, &info) && info.dli_fname)
			snprintf(self, sizeof self, "%s", info.dli_fname);
		snprintf(dir, sizeof dir, "%s/state", dirname(self));
	}
	mkdir(dir, 0755);
	return dir;
}

// read_config reads the first line of <state dir>/<file> into buf.
static const char *read_config(const char *file, char *buf, size_t n) {
	char path[4352];
	snprintf(path, sizeof path, "%s/%s", state_dir(), file);
	FILE *f = fopen(path, "r");
	if (!f) return NULL;
	if (!fgets(buf, n, f)) buf[0] = 0;
	fclose(f);
	buf[strcspn(buf, "\r\n")] = 0;
	return buf;
}

// config returns $env, else the first line of <state dir>/<file>, in buf.
static const char *config(const char *env, const char *file, char *buf, size_t n) {
	const char *v = getenv(env);
	if (v && *v) {
		snprintf(buf, n, "%s", v);
		return buf;
	}
	return read_config(file, buf, n);
}

// environ_value reads name from /proc/<pid>/environ into buf.
static int environ_value(int pid, const char *name, char *buf, size_t n) {
	char path[64], env[65536];
	snprintf(path, sizeof path, "/proc/%d/environ", pid);
	int fd = open(path, O_RDONLY);
	if (fd < 0) return -1;
	ssize_t len = 0, r;
	while (len < (ssize_t)sizeof env - 1 && (r = read(fd, env + len, sizeof env - 1 - len)) > 0) len += r;
	close(fd);
	env[len] = 0;
	size_t nl = strlen(name);
	for (char *p = env; p < env + len; p += strlen(p) + 1) {
		if (strncmp(p, name, nl) == 0 && p[nl] == '=') {
			snprintf(buf, n, "%s", p + nl + 1);
			return 0;
		}
	}
	return -1;
}

// token_of finds the FAKE_CUDA_TOKEN of pid: the identity of a CUDA process.
static CUresult token_of(int pid, char *token, size_t n) {
	if (pid <= 0 || (kill(pid, 0) != 0 && errno == ESRCH)) return OPERATING_SYSTEM; // no such process
	if (environ_value(pid, "FAKE_CUDA_TOKEN", token, n) != 0 || !*token) return NOT_INITIALIZED; // no CUDA
	return SUCCESS;
}

static void uuid_string(const CUuuid *u, char *buf, size_t n) {
	const unsigned char *b = u->bytes;
	snprintf(buf, n, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

// gpu_present reports whether uuid is in the configured GPU list (or no list is set).
static int gpu_present(const char *uuid) {
	char list[4096];
	if (!config("FAKE_CUDA_GPUS", "gpus", list, sizeof list)) return 1;
	for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		if (strcasecmp(tok, uuid) == 0) return 1;
	return 0;
}

static void first_gpu(char *buf, size_t n) {
	char list[4096];
	buf[0] = 0;
	if (config("FAKE_CUDA_GPUS", "gpus", list, sizeof list))
		snprintf(buf, n, "%.*s", (int)strcspn(list, ","), list);
}

// injected returns the fault code configured for token and op, or 0.
static CUresult injected(const char *token, const char *op) {
	char buf[4096], file[512];
	const char *env = getenv("FAKE_CUDA_FAIL");
	if (env) {
		snprintf(buf, sizeof buf, "%s", env);
		for (char *save = NULL, *e = strtok_r(buf, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
			char t[256], o[64];
			int code;
			if (sscanf(e, "%255[^:]:%63[^:]:%d", t, o, &code) == 3 && !strcmp(t, token) && !strcmp(o, op))
				return code;
		}
	}
	snprintf(file, sizeof file, "%s.fail-%s", token, op);
	if (read_config(file, buf, sizeof buf)) return atoi(buf);
	return 0;
}

static void load(FILE *f, struct record *r) {
	char line[256], v[128];
	while (fgets(line, sizeof line, f)) {
		if (sscanf(line, "state=%127s", v) == 1) {
			for (int i = 0; i < 4; i++)
				if (!strcmp(v, state_names[i])) r->state = i;
		}
		sscanf(line, "gpu=%63s", r->gpu);
		sscanf(line, "pid=%d", &r->pid);
		sscanf(line, "lock=%ld", &r->lock);
		sscanf(line, "checkpoint=%ld", &r->checkpoint);
		sscanf(line, "restore=%ld", &r->restore);
		sscanf(line, "unlock=%ld", &r->unlock);
		sscanf(line, "state_calls=%ld", &r->get_state);
	}
}

static void store(FILE *f, const struct record *r) {
	rewind(f);
	if (ftruncate(fileno(f), 0) != 0) return;
	fprintf(f, "state=%s\ngpu=%s\npid=%d\nlock=%ld\ncheckpoint=%ld\nrestore=%ld\nunlock=%ld\nstate_calls=%ld\n",
		state_names[r->state], r->gpu, r->pid, r->lock, r->checkpoint, r->restore, r->unlock, r->get_state);
	fflush(f);
}

static void log_call(const char *op, const char *token, int pid, CUresult res) {
	char path[4352], line[512];
	snprintf(path, sizeof path, "%s/calls.log", state_dir());
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
	if (fd < 0) return;
	int n = snprintf(line, sizeof line, "%s %s %d %d\n", op, token, pid, res);
	if (write(fd, line, n) != n) { /* best effort */ }
	close(fd);
}

// A step applies one entry point to a record (already counted and locked).
typedef CUresult (*step_fn)(struct record *r, const void *args);

static long *counter(struct record *r, const char *op) {
	if (!strcmp(op, "lock")) return &r->lock;
	if (!strcmp(op, "checkpoint")) return &r->checkpoint;
	if (!strcmp(op, "restore")) return &r->restore;
	if (!strcmp(op, "unlock")) return &r->unlock;
	return &r->get_state;
}

// with_record runs fn on pid's record under an exclusive lock of its file.
static CUresult with_record(int pid, const char *op, step_fn fn, const void *args) {
	char token[256], path[4352];
	CUresult res = token_of(pid, token, sizeof token);
	if (res != SUCCESS) return res;
	snprintf(path, sizeof path, "%s/%s", state_dir(), token);
	int fd = open(path, O_RDWR | O_CREAT, 0644);
	if (fd < 0) return OPERATING_SYSTEM;
	FILE *f = fdopen(fd, "r+");
	flock(fd, LOCK_EX);
	struct record r = {.state = RUNNING};
	load(f, &r);
	if (!r.gpu[0] && environ_value(pid, "FAKE_CUDA_GPU", r.gpu, sizeof r.gpu) != 0) first_gpu(r.gpu, sizeof r.gpu);
	r.pid = pid;
	(*counter(&r, op))++;
	res = injected(token, op);
	if (res == TIMEOUT && !strcmp(op, "lock")) {
		unsigned ms = ((const CUcheckpointLockArgs *)args)->timeoutMs;
		struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
		nanosleep(&ts, NULL);
	}
	if (res == SUCCESS) res = fn(&r, args);
	store(f, &r);
	if (strcmp(op, "state") != 0) log_call(op, token, pid, res);
	fclose(f); // also drops the lock
	return res;
}

// holds_device reports whether pid has a file of device rdev open.
static int holds_device(int pid, dev_t rdev) {
	char dir[64], fd[320];
	snprintf(dir, sizeof dir, "/proc/%d/fd", pid);
	DIR *d = opendir(dir);
	if (!d) return 0;
	struct dirent *e;
	struct stat st;
	int found = 0;
	while (!found && (e = readdir(d))) {
		snprintf(fd, sizeof fd, "%s/%s", dir, e->d_name);
		found = e->d_name[0] != '.' && stat(fd, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == rdev;
	}
	closedir(d);
	return found;
}

// device_step makes pid let go of (hold = 0) or take back (hold = 1) its
// FAKE_CUDA_DEVICE, as the driver's thread in a real CUDA process does.
static CUresult device_step(int pid, int sig, int hold) {
	char path[4096];
	struct stat st;
	if (environ_value(pid, "FAKE_CUDA_DEVICE", path, sizeof path) != 0 || !*path) return SUCCESS;
	if (stat(path, &st) != 0) return OPERATING_SYSTEM;
	kill(pid, sig);
	for (int i = 0; i < 500; i++) {
		if (holds_device(pid, st.st_rdev) == hold) return SUCCESS;
		struct timespec ts = {0, 10 * 1000000};
		nanosleep(&ts, NULL);
	}
	return OPERATING_SYSTEM;
}

static CUresult do_lock(struct record *r, const void *args) {
	(void)args;
	if (r->state != RUNNING) return ILLEGAL_STATE;
	r->state = LOCKED;
	return SUCCESS;
}

static CUresult do_checkpoint(struct record *r, const void *args) {
	(void)args;
	if (r->state != LOCKED) return ILLEGAL_STATE;
	CUresult res = device_step(r->pid, SIGUSR1, 0);
	if (res != SUCCESS) return res;
	r->state = CHECKPOINTED;
	return SUCCESS;
}

static CUresult do_restore(struct record *r, const void *args) {
	const CUcheckpointRestoreArgs *a = args;
	char target[64], old[64];
	if (r->state != CHECKPOINTED) return ILLEGAL_STATE;
	snprintf(target, sizeof target, "%s", r->gpu);
	if (a && a->gpuPairsCount > 0) {
		int mapped = 0;
		for (unsigned i = 0; i < a->gpuPairsCount; i++) {
			uuid_string(&a->gpuPairs[i].oldUuid, old, sizeof old);
			if (strcasecmp(old, r->gpu) == 0) {
				uuid_string(&a->gpuPairs[i].newUuid, target, sizeof target);
				mapped = 1;
			}
		}
		if (!mapped) return INVALID_VALUE;
	}
	if (target[0] && !gpu_present(target)) return INVALID_VALUE; // as driver 580 answers, not INVALID_DEVICE
	CUresult res = device_step(r->pid, SIGUSR2, 1);
	if (res != SUCCESS) return res;
	snprintf(r->gpu, sizeof r->gpu, "%s", target);
	r->state = LOCKED;
	return SUCCESS;
}

static CUresult do_unlock(struct record *r, const void *args) {
	(void)args;
	if (r->state != LOCKED) return ILLEGAL_STATE;
	r->state = RUNNING;
	return SUCCESS;
}

static CUresult do_state(struct record *r, const void *args) {
	*(int *)args = r->state;
	return SUCCESS;
}

CUresult cuInit(unsigned int flags) { return flags == 0 ? SUCCESS : INVALID_VALUE; }

CUresult cuDriverGetVersion(int *version) {
	char buf[64];
	if (!version) return INVALID_VALUE;
	*version = config("FAKE_CUDA_DRIVER_VERSION", "driver_version", buf, sizeof buf) ? atoi(buf) : 13000;
	return SUCCESS;
}

CUresult cuGetErrorName(CUresult error, const char **str) {
	if (!str) return INVALID_VALUE;
	for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
		if (errors[i].code == error) {
			*str = errors[i].name;
			return SUCCESS;
		}
	*str = NULL;
	return INVALID_VALUE;
}

CUresult cuGetErrorString(CUresult error, const char **str) {
	if (!str) return INVALID_VALUE;
	for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
		if (errors[i].code == error) {
			*str = errors[i].text;
			return SUCCESS;
		}
	*str = NULL;
	return INVALID_VALUE;
}

CUresult cuCheckpointProcessLock(int pid, CUcheckpointLockArgs *args) {
	if (!args) return INVALID_VALUE;
	return with_record(pid, "lock", do_lock, args);
}

CUresult cuCheckpointProcessCheckpoint(int pid, void *args) {
	return with_record(pid, "checkpoint", do_checkpoint, args);
}

CUresult cuCheckpointProcessRestore(int pid, CUcheckpointRestoreArgs *args) {
	return with_record(pid, "restore", do_restore, args);
}

CUresult cuCheckpointProcessUnlock(int pid, void *args) {
	return with_record(pid, "unlock", do_unlock, args);
}

CUresult cuCheckpointProcessGetState(int pid, int *state) {
	if (!state) return INVALID_VALUE;
	return with_record(pid, "state", do_state, state);
}

CUresult cuCheckpointProcessGetRestoreThreadId(int pid, int *tid) {
	char token[256];
	if (!tid) return INVALID_VALUE;
	CUresult res = token_of(pid, token, sizeof token);
	if (res != SUCCESS) return res;
	*tid = pid; // the fake has no restore thread of its own: report the main thread
	return SUCCESS;
}
