package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

func init() {
	commands["verify"] = &command{
		summary: "Check every file of the named checkpoints (or --all) against the sizes and sha256\n" +
			"digests in their manifests, and their signatures against the trusted keys, as a restore\n" +
			"would; then, for a checkpoint stored in the clear, that the CRIU images' pages files hold\n" +
			"the pages their pagemaps list. Exits 1 if any checkpoint fails, naming each bad file or\n" +
			"the refused signature.",
		args: "NAME... | --all",
		setup: func(fs *flag.FlagSet) runFunc {
			all := fs.Bool("all", false, "verify every checkpoint in the store")
			keys := trustedKeyFlag(fs)
			return func(e *env, args []string) int { return runVerify(e, args, *all, *keys) }
		},
	}
}

// verifyResult is one checkpoint's outcome; Problems lists each bad file.
type verifyResult struct {
	Name      string           `json:"name"`
	OK        bool             `json:"ok"`
	Size      int64            `json:"size"`
	Seconds   float64          `json:"seconds"`
	Signature *signatureReport `json:"signature,omitempty"`
	Error     string           `json:"error,omitempty"`
	Problems  []string         `json:"problems,omitempty"`
}

func runVerify(e *env, names []string, all bool, trustedKeys pathList) int {
	switch {
	case all && len(names) > 0:
		return e.usageErrorf("pass checkpoint names or --all, not both")
	case !all && len(names) == 0:
		return e.usageErrorf("needs checkpoint names or --all")
	}
	policy, err := e.signaturePolicy(trustedKeys)
	if err != nil {
		return e.errorf("%v", err)
	}
	s, err := e.openStore()
	if err != nil {
		return e.errorf("%v", err)
	}
	// A name that can't be loaded still gets a result, so one typo doesn't
	// hide the outcome of the others.
	var targets []*storage.Checkpoint
	if all {
		if targets, err = s.List(); err != nil {
			return e.errorf("%v", err)
		}
	} else {
		for _, name := range names {
			c, err := getCheckpoint(s, name)
			if err != nil {
				c = &storage.Checkpoint{Name: name, Err: err}
			}
			targets = append(targets, c)
		}
	}

	bar := newProgressBar(e.stderr)
	results := make([]verifyResult, 0, len(targets))
	failed := 0
	for _, c := range targets {
		r := verifyOne(c, policy, bar)
		if !r.OK {
			failed++
		}
		results = append(results, r)
		if !e.json {
			printVerifyResult(e.stdout, r)
		}
	}
	if e.json {
		e.writeJSON(results)
	} else if len(results) == 0 {
		fmt.Fprintf(e.stdout, "no checkpoints in store %s\n", s.Root)
	}
	if failed > 0 {
		return e.errorf("%d of %d checkpoints failed verification", failed, len(results))
	}
	return exitOK
}

// verifyOne checks the signature first, as a restore does: a checkpoint
// whose signature is refused is not worth hashing.
func verifyOne(c *storage.Checkpoint, policy storage.SignaturePolicy, bar *progressBar) verifyResult {
	r := verifyResult{Name: c.Name, Size: c.Size()}
	if c.Manifest == nil { // not found, or its manifest is unreadable
		r.Error = fmt.Sprint(c.Err)
		return r
	}
	sig := checkSignature(c, policy)
	r.Signature = &sig
	if sig.Refused {
		r.Error = sig.Error
		return r
	}
	start := time.Now()
	var progress func(done, total int64)
	if bar != nil {
		progress = func(done, total int64) { bar.update(c.Name, done, total) }
	}
	err := c.Verify(context.Background(), progress)
	if bar != nil {
		bar.clear()
	}
	if err == nil {
		r.Problems = imageProblems(c)
	}
	r.Seconds = time.Since(start).Seconds()
	switch {
	case err == nil && len(r.Problems) == 0:
		r.OK = true
		return r
	case err == nil:
		r.Error = imagesError(c.Name, r.Problems)
		return r
	}
	r.Error = err.Error()
	r.Problems = problems(err)
	return r
}

// problems digs the per-file problems out of Verify's error, which wraps
// ErrCorrupt and an errors.Join of one error per file.
func problems(err error) []string {
	multi, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return nil
	}
	for _, sub := range multi.Unwrap() {
		if joined, ok := sub.(interface{ Unwrap() []error }); ok && sub != storage.ErrCorrupt {
			var out []string
			for _, p := range joined.Unwrap() {
				out = append(out, p.Error())
			}
			return out
		}
	}
	return nil
}

func printVerifyResult(w io.Writer, r verifyResult) {
	switch {
	case r.OK:
		fmt.Fprintf(w, "OK    %s (%s in %.1fs; %s)\n", r.Name, humanBytes(r.Size), r.Seconds, r.Signature)
	case len(r.Problems) > 0:
		fmt.Fprintf(w, "FAIL  %s: %d problem(s):\n", r.Name, len(r.Problems))
		for _, p := range r.Problems {
			fmt.Fprintf(w, "        %s\n", p)
		}
	default:
		fmt.Fprintf(w, "FAIL  %s: %s\n", r.Name, strings.ReplaceAll(r.Error, "\n", "\n        "))
	}
}

// progressBar redraws one status line on a terminal. It is nil when the
// stream is not a terminal, so logs and pipes get only the results.
type progressBar struct {
	w        io.Writer
	last     time.Time
	lastLine int
}

func newProgressBar(w io.Writer) *progressBar {
	if !isTerminal(w) {
		return nil
	}
	return &progressBar{w: w}
}

// isTerminal reports whether w is a character device, without a terminal
// library: enough to tell a TTY from a file or a pipe.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// update redraws at most ten times a second, and always at 100%.
func (b *progressBar) update(name string, done, total int64) {
	now := time.Now()
	if done < total && now.Sub(b.last) < 100*time.Millisecond {
		return
	}
	b.last = now
	line := progressLine(name, done, total)
	pad := max(0, b.lastLine-len(line))
	fmt.Fprintf(b.w, "\r%s%s", line, strings.Repeat(" ", pad))
	b.lastLine = len(line)
}

// clear erases the line so the result prints on a clean one.
func (b *progressBar) clear() {
	if b.lastLine > 0 {
		fmt.Fprintf(b.w, "\r%s\r", strings.Repeat(" ", b.lastLine))
		b.lastLine = 0
	}
}

// progressLine renders "[#####     ]  45% 1.2/2.6 GiB name".
func progressLine(name string, done, total int64) string {
	const width = 20
	frac := 1.0
	if total > 0 {
		frac = min(1, float64(done)/float64(total))
	}
	filled := int(frac * width)
	d, unit := scaleBytes(done, total)
	t, _ := scaleBytes(total, total)
	return fmt.Sprintf("[%s%s] %3d%% %.1f/%.1f %s %s",
		strings.Repeat("#", filled), strings.Repeat(" ", width-filled), int(frac*100), d, t, unit, name)
}
