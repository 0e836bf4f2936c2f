package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

func init() {
	commands["prefetch"] = &command{
		summary: "Copy checkpoints of the store into a node-local cache directory (the handler's\n" +
			"cache_dir, or --cache), so that restores on this node read local disk or tmpfs\n" +
			"instead of a shared store. Each copy is hashed against its manifest before it\n" +
			"appears, and remembered as verified (under the handler's signature policy) so\n" +
			"that the first restore need not hash it again; a checkpoint already cached is\n" +
			"left as it is. --latest takes the newest\n" +
			"generation of every identity key.",
		args: "NAME... | --latest",
		setup: func(fs *flag.FlagSet) runFunc {
			var cache string
			var latest bool
			fs.StringVar(&cache, "cache", "", "node-local cache `DIR` (default: the handler's cache_dir)")
			fs.BoolVar(&latest, "latest", false, "copy the newest checkpoint of every identity key")
			return func(e *env, args []string) int { return runPrefetch(e, args, cache, latest) }
		},
	}
}

// prefetched is one checkpoint prefetch acted on.
type prefetched struct {
	Name    string  `json:"name"`
	Dir     string  `json:"dir,omitempty"`
	Bytes   int64   `json:"bytes,omitempty"`
	Seconds float64 `json:"seconds,omitempty"`
	Error   string  `json:"error,omitempty"`
}

func runPrefetch(e *env, names []string, cacheDir string, latest bool) int {
	if latest == (len(names) > 0) {
		return e.usageErrorf("needs checkpoint names or --latest, not both")
	}
	if cacheDir == "" {
		opts, err := e.handlerOptions()
		if err != nil {
			return e.errorf("%v", err)
		}
		if opts == nil || opts.CacheDir == "" {
			return e.usageErrorf("needs --cache DIR or a --handler-config with cache_dir")
		}
		cacheDir = opts.CacheDir
	}
	store, err := e.openStore()
	if err != nil {
		return e.errorf("%v", err)
	}
	cache, err := storage.Open(cacheDir)
	if err != nil {
		return e.errorf("cache: %v", err)
	}
	sources, err := prefetchSources(store, names, latest)
	if err != nil {
		return e.errorf("%v", err)
	}
	policy, err := e.signaturePolicy(nil)
	if err != nil {
		return e.errorf("%v", err)
	}
	bar := newProgressBar(e.stderr)
	var results []prefetched
	failed := 0
	for _, src := range sources {
		r := prefetchOne(cache, src, policy, bar)
		if r.Error != "" {
			failed++
		}
		results = append(results, r)
	}
	if e.json {
		e.writeJSON(results)
	} else {
		for _, r := range results {
			if r.Error != "" {
				fmt.Fprintf(e.stdout, "%s: FAILED: %s\n", r.Name, r.Error)
				continue
			}
			fmt.Fprintf(e.stdout, "%s: %s in %s (%.1f s)\n", r.Name, humanBytes(r.Bytes), r.Dir, r.Seconds)
		}
	}
	if failed > 0 {
		return exitFail
	}
	return exitOK
}

// prefetchSources are the named checkpoints, or the newest of each key.
func prefetchSources(s *storage.Store, names []string, latest bool) ([]*storage.Checkpoint, error) {
	if !latest {
		var out []*storage.Checkpoint
		for _, name := range names {
			c, err := getCheckpoint(s, name)
			if err != nil {
				return nil, err
			}
			out = append(out, c)
		}
		return out, nil
	}
	all, err := s.List()
	if err != nil {
		return nil, err
	}
	newest := map[string]*storage.Checkpoint{}
	var keys []string
	for _, c := range all {
		if c.Manifest == nil {
			continue
		}
		if _, seen := newest[c.Manifest.Key]; !seen {
			keys = append(keys, c.Manifest.Key)
		}
		newest[c.Manifest.Key] = c // List is sorted by generation
	}
	out := make([]*storage.Checkpoint, 0, len(keys))
	for _, k := range keys {
		out = append(out, newest[k])
	}
	return out, nil
}

// verifiedDir is where prefetch remembers its copies as verified, as the
// shim's restores do; a variable so that tests keep theirs to themselves.
var verifiedDir = storage.DefaultVerifiedDir

// prefetchOne copies one checkpoint into the cache. A copy it made was
// hashed against the manifest on the way, so it is remembered as verified
// under the handler's signature policy: the first restore from it need not
// hash it again. A copy that was already there is left as it is.
func prefetchOne(cache *storage.Store, src *storage.Checkpoint, policy storage.SignaturePolicy, bar *progressBar) prefetched {
	start := time.Now()
	_, err := cache.Get(src.Name)
	fresh := err != nil
	var progress func(done, total int64)
	if bar != nil {
		progress = func(done, total int64) { bar.update(src.Name, done, total) }
	}
	c, err := cache.Import(context.Background(), src, progress)
	if bar != nil {
		bar.clear()
	}
	if err != nil {
		return prefetched{Name: src.Name, Error: err.Error()}
	}
	r := prefetched{Name: c.Name, Dir: c.Dir, Bytes: c.Size(), Seconds: time.Since(start).Seconds()}
	if fresh {
		if err := c.RememberVerified(verifiedDir, policy); err != nil {
			r.Error = "copied, but not remembered as verified: " + err.Error()
		}
	}
	return r
}
