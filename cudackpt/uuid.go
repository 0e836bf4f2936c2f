package cudackpt

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// UUID is a GPU's identity as the driver sees it (CUuuid). NVML and
// nvidia-smi print the same 16 bytes as "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
type UUID [16]byte

// ParseUUID accepts the NVML form, with or without the "GPU-" prefix.
// MIG instance UUIDs ("MIG-...") are refused: the checkpoint API remaps
// whole GPUs only.
func ParseUUID(s string) (UUID, error) {
	var u UUID
	hexs := strings.TrimPrefix(s, "GPU-")
	if len(hexs) != 36 || hexs[8] != '-' || hexs[13] != '-' || hexs[18] != '-' || hexs[23] != '-' {
		return u, fmt.Errorf("invalid GPU UUID %q: want GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
	}
	b, err := hex.DecodeString(strings.ReplaceAll(hexs, "-", ""))
	if err != nil {
		return u, fmt.Errorf("invalid GPU UUID %q: %w", s, err)
	}
	copy(u[:], b)
	return u, nil
}

// String returns the NVML form, "GPU-" followed by lower-case hex.
func (u UUID) String() string {
	h := hex.EncodeToString(u[:])
	return "GPU-" + h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// IsZero reports whether u was never set.
func (u UUID) IsZero() bool { return u == UUID{} }

// MarshalText lets manifests store UUIDs in their readable form.
func (u UUID) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// UnmarshalText parses the form written by MarshalText.
func (u *UUID) UnmarshalText(b []byte) error {
	v, err := ParseUUID(string(b))
	if err != nil {
		return err
	}
	*u = v
	return nil
}

// GPUPair tells the driver to restore the state checkpointed on Old onto New.
// Its layout matches CUcheckpointGpuPair (two CUuuid, 32 bytes).
type GPUPair struct {
	Old UUID `json:"old"`
	New UUID `json:"new"`
}

func (p GPUPair) String() string { return p.Old.String() + "->" + p.New.String() }

// ProcessState is a CUDA process's checkpoint state (CUprocessState).
type ProcessState int

// The driver's per-process state machine:
// Running --Lock--> Locked --Checkpoint--> Checkpointed --Restore--> Locked --Unlock--> Running.
const (
	StateRunning      ProcessState = 0
	StateLocked       ProcessState = 1
	StateCheckpointed ProcessState = 2
	StateFailed       ProcessState = 3
)

func (s ProcessState) String() string {
	switch s {
	case StateRunning:
		return "running"
	case StateLocked:
		return "locked"
	case StateCheckpointed:
		return "checkpointed"
	case StateFailed:
		return "failed"
	}
	return fmt.Sprintf("state(%d)", int(s))
}
