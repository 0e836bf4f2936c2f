package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/crypt"
	"github.com/gpusnap/containerd-shim-snapshot-v2/integration/testbed"
)

// encryptionRuns is how many restores of each kind encryptionBench times,
// interleaved so that drift affects both alike.
const encryptionRuns = 3

// encryptionResult is one run of the encryption benchmark, per kind
// ("clear", "encrypted").
type encryptionResult struct {
	checkpoint map[string]time.Duration
	restores   map[string][]time.Duration
	// phases are the restore phases of each restore, from the status file.
	phases     map[string][]map[string]float64
	imageBytes map[string]int64
	decryptDir string
}

// encryptionBench checkpoints the workload once into a store in the clear
// and once into a store of a handler with encryption_key, then restores
// from each in turn: what encryption costs at checkpoint (a written copy
// instead of hard links) and at restore (the decrypt phase, and CRIU
// reading from decrypt_dir).
func encryptionBench(bed *testbed.Bed, dir string, stateMB, warmup int, decryptDir string) (*encryptionResult, error) {
	env := []string{fmt.Sprintf("STATE_MB=%d", stateMB), fmt.Sprintf("WARMUP_SECONDS=%d", warmup)}
	key, _, err := crypt.GenerateKeyFile()
	if err != nil {
		return nil, err
	}
	keyFile := filepath.Join(dir, "handler.enc")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		return nil, err
	}
	r := &encryptionResult{checkpoint: map[string]time.Duration{}, restores: map[string][]time.Duration{},
		phases: map[string][]map[string]float64{}, imageBytes: map[string]int64{}, decryptDir: decryptDir}
	kinds := []string{"clear", "encrypted"}
	options := map[string]string{}
	for _, kind := range kinds {
		store := filepath.Join(dir, "store-"+kind)
		body := fmt.Sprintf("store = %q\ncontrol_dir = %q\n", store, testbed.StatefulControlDir)
		if kind == "encrypted" {
			body += fmt.Sprintf("encryption_key = %q\n", keyFile)
			if decryptDir != "" {
				body += fmt.Sprintf("decrypt_dir = %q\n", decryptDir)
			}
		}
		options[kind] = filepath.Join(dir, kind+".toml")
		if err := os.WriteFile(options[kind], []byte(body), 0o600); err != nil {
			return nil, err
		}
		id := "bench-enc-cold-" + kind
		_, err := runToAnswer(bed, id, options[kind], env)
		defer removeNetns(id)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		if out, err := bed.Ctr("tasks", "checkpoint", id); err != nil {
			return nil, fmt.Errorf("checkpoint %s: %v: %s", id, err, out)
		}
		r.checkpoint[kind] = time.Since(start)
		r.imageBytes[kind] = dirBytes(store)
		stopContainer(bed, id)
	}
	for i := range encryptionRuns {
		for _, kind := range kinds {
			id := fmt.Sprintf("bench-enc-%s-%d", kind, i)
			took, err := runToAnswer(bed, id, options[kind], env)
			if err != nil {
				return nil, err
			}
			var status struct {
				Decision string             `json:"decision"`
				Phases   map[string]float64 `json:"phases_seconds"`
			}
			data := statusFile(id)
			json.Unmarshal(data, &status)
			stopContainer(bed, id)
			removeNetns(id)
			if status.Decision != "restored" {
				return nil, fmt.Errorf("%s was not restored: %s", id, data)
			}
			r.restores[kind] = append(r.restores[kind], took)
			r.phases[kind] = append(r.phases[kind], status.Phases)
		}
	}
	return r, nil
}

func (r *encryptionResult) report(stateMB, warmup int) {
	host, _ := os.Hostname()
	fmt.Printf("bench-encryption: %d MiB of state, %d s warm-up, host %s, %d cores, %s, decrypt_dir %s\n",
		stateMB, warmup, host, runtime.NumCPU(), time.Now().UTC().Format(time.RFC3339), or(r.decryptDir, "(the shim's default)"))
	for _, kind := range []string{"clear", "encrypted"} {
		fmt.Printf("%-10s image %.2f GB, checkpoint %s\n", kind, float64(r.imageBytes[kind])/1e9, r.checkpoint[kind].Round(time.Millisecond))
		for i, took := range r.restores[kind] {
			p := r.phases[kind][i]
			fmt.Printf("  restore %d: %s to first answer (decrypt %.3f s, criu_restore %.3f s)\n",
				i, took.Round(time.Millisecond), p["decrypt"], p["criu_restore"])
		}
	}
}

func or(s, def string) string {
	if s != "" {
		return s
	}
	return def
}
