package storage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/crypt"
	"github.com/gpusnap/containerd-shim-snapshot-v2/cudackpt"
)

// SchemaVersion is the manifest format this package writes and the only one
// it reads: a reader refuses other versions rather than guess at fields it
// does not know.
const SchemaVersion = 1

// Manifest is manifest.json: everything needed to decide whether a
// checkpoint fits a container and a node, and to prove its files intact.
type Manifest struct {
	Schema int    `json:"schema"`
	Name   string `json:"name"`
	// Key is the identity key (hex sha256) that restore looks up by;
	// Identity holds the canonical fields that produced it, for humans.
	Key      string            `json:"key"`
	Identity map[string]string `json:"identity,omitempty"`
	Node     Fingerprint       `json:"node"`
	Source   Source            `json:"source"`
	Created  time.Time         `json:"created"`
	Files    []File            `json:"files"`
	// Phases holds seconds spent per checkpoint phase, for tuning.
	Phases map[string]float64 `json:"phases,omitempty"`
	// CRIUStats are CRIU's own measurements of the dump (criu.Stats).
	CRIUStats     map[string]float64 `json:"criu_stats,omitempty"`
	GPUs          []GPU              `json:"gpus,omitempty"`
	DriverVersion string             `json:"driver_version,omitempty"`
	// GPULeftovers are the container PIDs of processes without CUDA state
	// whose GPU device files were inherited leftovers (docs/gpu.md); a
	// restored container's later checkpoints treat them so again.
	GPULeftovers []int             `json:"gpu_leftovers,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	// Encryption is set when every file is encrypted (package crypt); Files
	// then record the encrypted files, which is what the store holds and
	// Verify hashes. A build that predates it refuses the manifest as
	// having an unknown field, rather than restore ciphertext.
	Encryption *Encryption `json:"encryption,omitempty"`
}

// Encryption says how a checkpoint's files are encrypted and with which
// key, so that a restoring node names a wrong or missing key before it
// decrypts anything.
type Encryption struct {
	Algorithm string `json:"algorithm"` // crypt.Algorithm
	KeyID     string `json:"key_id"`    // crypt.Key.ID
}

// Source is the container a checkpoint was taken from, for operators
// tracing a checkpoint back to its workload.
type Source struct {
	ContainerID string `json:"container_id"`
	Namespace   string `json:"namespace"`
	Hostname    string `json:"hostname"`
}

// File records one file of a checkpoint so Verify can prove it unchanged.
// A file of at most BlockSize bytes has SHA256, a larger one Blocks (one
// SHA-256 per BlockSize piece), so large files hash on all cores. A build
// that predates Blocks refuses such a manifest as having an unknown field.
type File struct {
	Path   string   `json:"path"` // relative, slash-separated
	Size   int64    `json:"size"`
	SHA256 string   `json:"sha256,omitempty"`
	Blocks []string `json:"blocks,omitempty"`
}

// GPU is a device the checkpointed process used; restore maps each source
// UUID onto a GPU of the same product on the target node. The UUID is the
// driver's own type, so restore hands it to the driver as read; it is
// written in NVML's form, "GPU-" and lower-case hex.
type GPU struct {
	UUID        cudackpt.UUID `json:"uuid"`
	Product     string        `json:"product"`
	MemoryBytes uint64        `json:"memory_bytes"`
}

// readManifest reads and validates the manifest at file. It also returns
// the bytes it decoded, which are what a signature covers: checking the
// signature over a second read of the file would let a writer swap the
// manifest between the two reads.
func readManifest(file string) (*Manifest, []byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	m, err := decodeManifest(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrManifest, file, err)
	}
	return m, data, nil
}

// decodeManifest checks the schema before decoding strictly, so a newer
// manifest reports "unsupported schema" rather than its first new field.
func decodeManifest(data []byte) (*Manifest, error) {
	var probe struct {
		Schema int `json:"schema"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("malformed or truncated JSON: %w", err)
	}
	if probe.Schema != SchemaVersion {
		return nil, fmt.Errorf("unsupported schema %d, this build reads schema %d", probe.Schema, SchemaVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	m := new(Manifest)
	if err := dec.Decode(m); err != nil {
		return nil, err
	}
	return m, m.validate()
}

// validate rejects manifests Publish would never write; Verify trusts the
// file list to stay inside the checkpoint directory.
func (m *Manifest) validate() error {
	if err := validKey(m.Key); err != nil {
		return err
	}
	if prefix, _, ok := parseName(m.Name); !ok || prefix != m.Key[:keyPrefixLen] {
		return fmt.Errorf("name %q is not a checkpoint name for key %s", m.Name, m.Key)
	}
	if e := m.Encryption; e != nil && (e.Algorithm != crypt.Algorithm || len(e.KeyID) != 16 || strings.Trim(e.KeyID, hexDigits) != "") {
		return fmt.Errorf("encryption %q with key id %q: this build reads %q with a 16-hex-digit key id", e.Algorithm, e.KeyID, crypt.Algorithm)
	}
	seen := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		if err := validPath(f.Path); err != nil {
			return err
		}
		if seen[f.Path] {
			return fmt.Errorf("file %s listed twice", f.Path)
		}
		seen[f.Path] = true
		if err := f.validDigests(); err != nil {
			return fmt.Errorf("file %s: %w", f.Path, err)
		}
	}
	return nil
}

// validDigests checks that a file carries one form of digests: one
// SHA-256 (any size: manifests written before blocks record large files
// so), or one per block for a file of more than BlockSize bytes.
func (f File) validDigests() error {
	switch {
	case f.Size < 0:
		return fmt.Errorf("invalid size %d", f.Size)
	case f.SHA256 != "" && f.Blocks != nil:
		return errors.New("both a sha256 and block digests")
	case f.Blocks == nil && !isSHA256(f.SHA256):
		return fmt.Errorf("invalid sha256 %q", f.SHA256)
	case f.Blocks != nil && (!UsesBlocks(f.Size) || len(f.Blocks) != BlockCount(f.Size)):
		return fmt.Errorf("%d block digests for %d bytes, want %d (files of more than %d bytes only)", len(f.Blocks), f.Size, BlockCount(f.Size), BlockSize)
	}
	for i, b := range f.Blocks {
		if !isSHA256(b) {
			return fmt.Errorf("block %d: invalid sha256 %q", i, b)
		}
	}
	return nil
}

// isSHA256 says whether s is a hex SHA-256 in lower case.
func isSHA256(s string) bool {
	return len(s) == 64 && strings.Trim(s, hexDigits) == ""
}

// validPath accepts only paths Publish writes: relative, clean, slash
// separated and inside the checkpoint directory.
func validPath(p string) error {
	why := ""
	switch {
	case p == "" || p == ".":
		why = "is empty"
	case strings.Contains(p, `\`):
		why = "contains a backslash"
	case path.IsAbs(p):
		why = "is absolute"
	case slices.Contains(strings.Split(p, "/"), ".."):
		why = `contains ".."`
	case path.Clean(p) != p:
		why = "is not clean"
	case p == manifestName:
		why = "is the manifest itself"
	case p == signatureName:
		why = "is the manifest's signature"
	default:
		return nil
	}
	return fmt.Errorf("file path %q %s", p, why)
}
