package storage

import (
	"strconv"
)

// GPUNode is what a node offers a restoring container: the GPUs the
// container was given, in order, and the node's NVIDIA driver version.
type GPUNode struct {
	GPUs          []GPU
	DriverVersion string
}

// GPUCompatible reports whether the GPU state recorded in m can be put back
// on node, as a *MismatchError naming the first field that differs. The
// driver API restores device memory byte for byte, so each target GPU must
// be the same product with at least as much memory, there must be exactly
// as many GPUs (the i-th checkpointed GPU maps onto the i-th given one), and
// the driver must be the checkpoint's or newer. A checkpoint without GPUs
// fits any node.
func (m *Manifest) GPUCompatible(node GPUNode) error {
	if len(m.GPUs) == 0 {
		return nil
	}
	if len(node.GPUs) != len(m.GPUs) {
		return &MismatchError{"gpu_count", strconv.Itoa(len(m.GPUs)), strconv.Itoa(len(node.GPUs)), "the container must be given as many GPUs"}
	}
	for i, src := range m.GPUs {
		dst := node.GPUs[i]
		if src.Product != dst.Product {
			return &MismatchError{"gpus[" + strconv.Itoa(i) + "].product", src.Product, dst.Product, "must be equal"}
		}
		if dst.MemoryBytes < src.MemoryBytes {
			return &MismatchError{"gpus[" + strconv.Itoa(i) + "].memory_bytes",
				strconv.FormatUint(src.MemoryBytes, 10), strconv.FormatUint(dst.MemoryBytes, 10), "node must have as much or more"}
		}
	}
	if m.DriverVersion != "" && (node.DriverVersion == "" || CompareVersions(node.DriverVersion, m.DriverVersion) < 0) {
		return &MismatchError{"driver_version", m.DriverVersion, node.DriverVersion, "node must be the same or newer"}
	}
	return nil
}
