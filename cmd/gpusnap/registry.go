package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/containerd/log"

	"github.com/gpusnap/containerd-shim-snapshot-v2/registry"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

func init() {
	// containerd's registry host code logs its choices at info level;
	// gpusnap's output is its results and errors.
	log.L.Logger.SetLevel(log.WarnLevel)
	commands["push"] = &command{
		summary: "Push a checkpoint of the store to an OCI registry repository (host/repository),\n" +
			"tagged with its name. Chunks the registry already holds are not uploaded again.\n" +
			"Hosts, mirrors and CAs come from containerd's hosts.toml directory, credentials\n" +
			"from a docker-style config.json.",
		args: "NAME REPOSITORY",
		setup: func(fs *flag.FlagSet) runFunc {
			cfg, parallel := registryFlags(fs)
			return func(e *env, args []string) int { return runPush(e, args, *cfg, *parallel) }
		},
	}
	commands["pull"] = &command{
		summary: "Pull a checkpoint (host/repository:NAME) into the store, or into --cache DIR.\n" +
			"Every chunk is checked against its digest and the whole copy against its manifest\n" +
			"before it appears; an interrupted pull resumes where it stopped.",
		args: "REPOSITORY:NAME",
		setup: func(fs *flag.FlagSet) runFunc {
			cfg, parallel := registryFlags(fs)
			var cache string
			fs.StringVar(&cache, "cache", "", "pull into this node-local `DIR` instead of the store")
			return func(e *env, args []string) int { return runPull(e, args, *cfg, *parallel, cache) }
		},
	}
}

// registryFlags adds the flags that say how to reach a registry.
func registryFlags(fs *flag.FlagSet) (*registry.Config, *int) {
	cfg := new(registry.Config)
	fs.StringVar(&cfg.HostsDir, "hosts-dir", registry.DefaultHostsDir, "containerd's registry hosts `DIR` (hosts.toml)")
	fs.StringVar(&cfg.Credentials, "credentials", "", "docker-style credentials `FILE` (config.json)")
	parallel := fs.Int("parallel", registry.DefaultParallel, "blobs moved at once")
	return cfg, parallel
}

// transferProgress reports a push or pull: a bar on a terminal, JSON lines
// with --json, nothing otherwise.
func (e *env) transferProgress(name string) (registry.Progress, func()) {
	if e.json {
		enc := json.NewEncoder(e.stderr)
		last := time.Time{}
		return func(done, total int64) {
			if now := time.Now(); done == total || now.Sub(last) >= 200*time.Millisecond {
				last = now
				enc.Encode(map[string]any{"name": name, "done_bytes": done, "total_bytes": total})
			}
		}, func() {}
	}
	bar := newProgressBar(e.stderr)
	if bar == nil {
		return nil, func() {}
	}
	return func(done, total int64) { bar.update(name, done, total) }, bar.clear
}

func runPush(e *env, args []string, cfg registry.Config, parallel int) int {
	if len(args) != 2 {
		return e.usageErrorf("needs a checkpoint name and a repository, got %q", args)
	}
	store, err := e.openStore()
	if err != nil {
		return e.errorf("%v", err)
	}
	c, err := getCheckpoint(store, args[0])
	if err != nil {
		return e.errorf("%v", err)
	}
	ctx := context.Background()
	remote, err := registry.Open(ctx, args[1], cfg)
	if err != nil {
		return e.errorf("%v", err)
	}
	progress, done := e.transferProgress(c.Name)
	start := time.Now()
	res, err := remote.Push(ctx, c, registry.Options{Parallel: parallel, Progress: progress})
	done()
	if err != nil {
		return e.errorf("%v", err)
	}
	secs := time.Since(start).Seconds()
	if e.json {
		return e.writeJSON(map[string]any{"ref": res.Ref, "digest": res.Digest, "bytes": res.Bytes,
			"uploaded_bytes": res.Uploaded, "blobs": res.Blobs, "seconds": secs})
	}
	fmt.Fprintf(e.stdout, "pushed %s (%s): %s, of which %s uploaded (the registry had the rest), %.1f s\n",
		res.Ref, res.Digest, humanBytes(res.Bytes), humanBytes(res.Uploaded), secs)
	return exitOK
}

func runPull(e *env, args []string, cfg registry.Config, parallel int, cacheDir string) int {
	if len(args) != 1 {
		return e.usageErrorf("needs one REPOSITORY:NAME, got %q", args)
	}
	repo, tag, ok := splitTag(args[0])
	if !ok {
		return e.usageErrorf("%q names no checkpoint: want host/repository:NAME", args[0])
	}
	var store *storage.Store
	var err error
	if cacheDir != "" {
		store, err = storage.Open(cacheDir)
	} else {
		store, err = e.openStore()
	}
	if err != nil {
		return e.errorf("%v", err)
	}
	ctx := context.Background()
	remote, err := registry.Open(ctx, repo, cfg)
	if err != nil {
		return e.errorf("%v", err)
	}
	progress, done := e.transferProgress(tag)
	start := time.Now()
	c, err := remote.Pull(ctx, tag, store, registry.Options{Parallel: parallel, Progress: progress})
	done()
	if err != nil {
		return e.errorf("%v", err)
	}
	secs := time.Since(start).Seconds()
	if e.json {
		return e.writeJSON(map[string]any{"name": c.Name, "dir": c.Dir, "bytes": c.Size(), "seconds": secs})
	}
	fmt.Fprintf(e.stdout, "pulled %s into %s: %s, %.1f s\n", c.Name, c.Dir, humanBytes(c.Size()), secs)
	return exitOK
}

// splitTag cuts host[:port]/repository:tag at the tag's colon (a port's
// colon comes before the first slash).
func splitTag(ref string) (repo, tag string, ok bool) {
	i := strings.LastIndex(ref, ":")
	if i < 0 || i < strings.Index(ref, "/") {
		return "", "", false
	}
	return ref[:i], ref[i+1:], ref[i+1:] != ""
}

// runRegistryLs lists the checkpoints of a repository (gpusnap ls REPOSITORY).
func runRegistryLs(e *env, repo string, cfg registry.Config) int {
	ctx := context.Background()
	remote, err := registry.Open(ctx, repo, cfg)
	if err != nil {
		return e.errorf("%v", err)
	}
	entries, err := remote.List(ctx)
	if err != nil {
		return e.errorf("%v", err)
	}
	if e.json {
		return e.writeJSON(entries)
	}
	w := table(e.stdout)
	fmt.Fprintln(w, "NAME\tCREATED\tSIZE\tSIGNED\tGPUS\tDRIVER")
	for _, en := range entries {
		fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%s\t%s\n", en.Tag, en.Created.Format(time.RFC3339), humanBytes(en.Bytes), en.Signed, en.GPUs, en.Driver)
	}
	if err := w.Flush(); err != nil {
		return e.errorf("%v", err)
	}
	return exitOK
}
