// A minimal CUDA process for the real-driver test (gpu_test.go): it fills a
// device buffer with a pattern, then keeps reading it back and prints
// "ok <n>" every half second, "bad <n>" if the pattern changed, or
// "error <call> <code>" if a driver call fails. Built with plain gcc: the
// driver is opened with dlopen, so no CUDA headers or toolkit are needed.
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
#define PATTERN 0xC0FFEEu

static void *lib;
static void *sym(const char *name) {
	void *p = dlsym(lib, name);
	if (!p) { printf("error dlsym-%s 0\n", name); exit(1); }
	return p;
}
#define CHECK(call, expr) do { CUresult r_ = (expr); if (r_) { printf("error %s %d\n", call, r_); fflush(stdout); exit(1); } } while (0)

int main(int argc, char **argv) {
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256, bytes = mib << 20;
	const char *path = getenv("SNAPSHOT_LIBCUDA");
	lib = dlopen(path && *path ? path : "libcuda.so.1", RTLD_NOW);
	if (!lib) { printf("error dlopen 0\n"); return 1; }
	CUresult (*init)(unsigned) = sym("cuInit");
	CUresult (*deviceGet)(int *, int) = sym("cuDeviceGet");
	CUresult (*retain)(void **, int) = sym("cuDevicePrimaryCtxRetain");
	CUresult (*setCurrent)(void *) = sym("cuCtxSetCurrent");
	CUresult (*alloc)(CUdeviceptr *, size_t) = sym("cuMemAlloc_v2");
	CUresult (*memset32)(CUdeviceptr, unsigned, size_t) = sym("cuMemsetD32_v2");
	CUresult (*dtoh)(void *, CUdeviceptr, size_t) = sym("cuMemcpyDtoH_v2");
	int dev;
	void *ctx;
	CUdeviceptr buf;
	CHECK("cuInit", init(0));
	CHECK("cuDeviceGet", deviceGet(&dev, 0));
	CHECK("cuDevicePrimaryCtxRetain", retain(&ctx, dev));
	CHECK("cuCtxSetCurrent", setCurrent(ctx));
	CHECK("cuMemAlloc", alloc(&buf, bytes));
	CHECK("cuMemsetD32", memset32(buf, PATTERN, bytes / 4));
	printf("ready\n");
	fflush(stdout);
	for (unsigned long n = 1;; n++) {
		unsigned word;
		size_t off = (n * 4099 * 4) % bytes;
		CHECK("cuMemcpyDtoH", dtoh(&word, buf + off, sizeof word));
		if (word != PATTERN) { printf("bad %lu\n", n); fflush(stdout); return 2; }
		if (n % 10 == 0) { printf("ok %lu\n", n); fflush(stdout); }
		usleep(50000);
	}
}
