// Package cudackpt moves a CUDA process's GPU state to host memory and back
// through the CUDA driver checkpoint API, so that CRIU can dump and restore a
// GPU container like any other process tree.
//
// The driver library is opened at run time (dlopen), never linked: the shim
// runs on CPU-only nodes too, where Load reports ErrNoDriver. GPU inventory
// comes from NVML (go-nvml), which is also opened at run time.
//
// The orchestration helpers (FindCUDAProcesses, CheckpointAll, RestoreAll,
// MapGPUs, VisibleDevices) are pure functions over small interfaces so the
// shim's flows can be tested without a GPU; package cudackpt/fakecuda builds
// a fake libcuda.so.1 that enforces the driver's per-process state machine.
package cudackpt
