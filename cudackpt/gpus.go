package cudackpt

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// GPU is one device of the node, as NVML reports it.
type GPU struct {
	Index       int    // NVML index (PCI bus order)
	Minor       int    // N of /dev/nvidiaN; -1 if unknown
	UUID        UUID   //
	Name        string // product name, e.g. "NVIDIA H100 80GB HBM3"
	MemoryBytes uint64 // total device memory
	Persistence bool   // persistence mode on (Restore needs it, or cuInit)
}

// DriverInfo describes the node's NVIDIA driver.
type DriverInfo struct {
	Version string        // kernel driver, e.g. "580.159.04"
	CUDA    DriverVersion // CUDA version it implements, e.g. 13000
}

// MapGPUs pairs the GPUs a checkpoint was taken on (source, in the order the
// manifest lists them) with the GPUs the restoring container was given
// (target, in the same order), the i-th with the i-th. Both lists must be
// the same length and free of duplicates.
func MapGPUs(source, target []UUID) ([]GPUPair, error) {
	if len(source) != len(target) {
		return nil, fmt.Errorf("checkpoint was taken on %d GPU(s) but the container has %d", len(source), len(target))
	}
	if err := unique("checkpoint", source); err != nil {
		return nil, err
	}
	if err := unique("container", target); err != nil {
		return nil, err
	}
	pairs := make([]GPUPair, len(source))
	for i := range source {
		pairs[i] = GPUPair{Old: source[i], New: target[i]}
	}
	return pairs, nil
}

func unique(what string, uuids []UUID) error {
	seen := map[UUID]bool{}
	for _, u := range uuids {
		if seen[u] {
			return fmt.Errorf("%s lists GPU %s twice", what, u)
		}
		seen[u] = true
	}
	return nil
}

// Where a container's GPUs can be read from its OCI spec.
const (
	envVisibleDevices = "NVIDIA_VISIBLE_DEVICES"
	cdiAnnotation     = "cdi.k8s.io/"
	cdiGPUKind        = "nvidia.com/gpu"
)

var deviceNode = regexp.MustCompile(`^/dev/nvidia([0-9]+)$`)

// VisibleDevices returns the GPUs of inventory that a container was given,
// sorted by index (the order CUDA enumerates them in), so a checkpoint and
// its restore list them alike. Sources, first that names any GPU wins:
//
//  1. /dev/nvidiaN nodes in spec.Linux.Devices: what the container can open
//     (CDI devices resolved by containerd land here);
//  2. CDI annotations cdi.k8s.io/*: "nvidia.com/gpu=0", "=GPU-<uuid>", "=all";
//  3. env NVIDIA_VISIBLE_DEVICES (the legacy nvidia-container-runtime hook):
//     indices, UUIDs, "all"; "none", "void" or "" mean no GPU.
//
// A name that matches no GPU of the node is an error: restoring with a
// guessed device set would be worse than not restoring.
func VisibleDevices(spec *specs.Spec, inventory []GPU) ([]GPU, error) {
	if spec == nil {
		return nil, nil
	}
	pick := func(names []string, how string) ([]GPU, error) {
		var out []GPU
		for _, name := range names {
			gpus, err := lookup(name, inventory)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", how, err)
			}
			out = append(out, gpus...)
		}
		slices.SortFunc(out, func(a, b GPU) int { return a.Index - b.Index })
		return slices.CompactFunc(out, func(a, b GPU) bool { return a.UUID == b.UUID }), nil
	}

	if spec.Linux != nil {
		var names []string
		for _, d := range spec.Linux.Devices {
			if m := deviceNode.FindStringSubmatch(d.Path); m != nil {
				names = append(names, "/dev/nvidia"+m[1])
			}
		}
		if len(names) > 0 {
			return pick(names, "device nodes")
		}
	}

	var names []string
	for key, value := range spec.Annotations {
		if !strings.HasPrefix(key, cdiAnnotation) {
			continue
		}
		for _, dev := range strings.Split(value, ",") {
			if kind, name, ok := strings.Cut(strings.TrimSpace(dev), "="); ok && kind == cdiGPUKind {
				names = append(names, name)
			}
		}
	}
	if len(names) > 0 {
		return pick(names, "CDI annotations")
	}

	if spec.Process != nil {
		for _, kv := range slices.Backward(spec.Process.Env) { // the last setting wins
			value, ok := strings.CutPrefix(kv, envVisibleDevices+"=")
			if !ok {
				continue
			}
			switch value = strings.TrimSpace(value); value {
			case "", "none", "void":
				return nil, nil
			}
			return pick(strings.Split(value, ","), envVisibleDevices)
		}
	}
	return nil, nil
}

// lookup resolves one device name: "all", an index, a UUID or a device node.
func lookup(name string, inventory []GPU) ([]GPU, error) {
	name = strings.TrimSpace(name)
	if name == "all" {
		return inventory, nil
	}
	match := func(ok func(GPU) bool) ([]GPU, error) {
		for _, g := range inventory {
			if ok(g) {
				return []GPU{g}, nil
			}
		}
		return nil, fmt.Errorf("GPU %q is not on this node", name)
	}
	if m := deviceNode.FindStringSubmatch(name); m != nil {
		minor, _ := strconv.Atoi(m[1])
		return match(func(g GPU) bool { return g.Minor == minor || (g.Minor < 0 && g.Index == minor) })
	}
	if idx, err := strconv.Atoi(name); err == nil {
		return match(func(g GPU) bool { return g.Index == idx })
	}
	if strings.HasPrefix(name, "MIG-") || strings.Contains(name, ":") {
		return nil, fmt.Errorf("GPU %q: MIG devices cannot be checkpointed, only whole GPUs", name)
	}
	u, err := ParseUUID(name)
	if err != nil {
		return nil, err
	}
	return match(func(g GPU) bool { return g.UUID == u })
}
