package cudackpt

import (
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Inventory lists the node's GPUs and its driver through NVML
// (libnvidia-ml.so.1, opened at run time). On a node without the NVIDIA
// driver the error wraps ErrNoDriver.
func Inventory() ([]GPU, DriverInfo, error) {
	lib := nvml.New()
	switch r := lib.Init(); r {
	case nvml.SUCCESS:
	case nvml.ERROR_LIBRARY_NOT_FOUND, nvml.ERROR_DRIVER_NOT_LOADED:
		return nil, DriverInfo{}, fmt.Errorf("nvml init: %s: %w", nvml.ErrorString(r), ErrNoDriver)
	default:
		return nil, DriverInfo{}, nvmlError("init", r)
	}
	defer lib.Shutdown()

	var info DriverInfo
	var r nvml.Return
	if info.Version, r = lib.SystemGetDriverVersion(); r != nvml.SUCCESS {
		return nil, info, nvmlError("driver version", r)
	}
	cuda, r := lib.SystemGetCudaDriverVersion()
	if r != nvml.SUCCESS {
		return nil, info, nvmlError("CUDA driver version", r)
	}
	info.CUDA = DriverVersion(cuda)

	n, r := lib.DeviceGetCount()
	if r != nvml.SUCCESS {
		return nil, info, nvmlError("device count", r)
	}
	gpus := make([]GPU, 0, n)
	for i := range n {
		g, err := describe(lib, i)
		if err != nil {
			return nil, info, err
		}
		gpus = append(gpus, g)
	}
	return gpus, info, nil
}

func describe(lib nvml.Interface, index int) (GPU, error) {
	g := GPU{Index: index, Minor: -1}
	dev, r := lib.DeviceGetHandleByIndex(index)
	if r != nvml.SUCCESS {
		return g, nvmlError(fmt.Sprintf("GPU %d handle", index), r)
	}
	uuid, r := dev.GetUUID()
	if r != nvml.SUCCESS {
		return g, nvmlError(fmt.Sprintf("GPU %d UUID", index), r)
	}
	var err error
	if g.UUID, err = ParseUUID(uuid); err != nil {
		return g, fmt.Errorf("GPU %d: %w", index, err)
	}
	if g.Name, r = dev.GetName(); r != nvml.SUCCESS {
		return g, nvmlError(fmt.Sprintf("GPU %d name", index), r)
	}
	mem, r := dev.GetMemoryInfo()
	if r != nvml.SUCCESS {
		return g, nvmlError(fmt.Sprintf("GPU %d memory", index), r)
	}
	g.MemoryBytes = mem.Total
	if minor, r := dev.GetMinorNumber(); r == nvml.SUCCESS {
		g.Minor = minor
	}
	// Persistence mode is a Linux-only query; treat "not supported" as off.
	if mode, r := dev.GetPersistenceMode(); r == nvml.SUCCESS {
		g.Persistence = mode == nvml.FEATURE_ENABLED
	}
	return g, nil
}

func nvmlError(what string, r nvml.Return) error {
	return fmt.Errorf("nvml %s: %s (%d)", what, nvml.ErrorString(r), int(r))
}
