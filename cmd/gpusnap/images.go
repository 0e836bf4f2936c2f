package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/gpusnap/containerd-shim-snapshot-v2/criuimage"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// readImages is what inspect shows of a checkpoint's CRIU images: the
// summary, and a note when they were not read or their pages files
// disagree with their pagemaps. An encrypted checkpoint's images are
// ciphertext until a restore decrypts them, so they are not read.
func readImages(c *storage.Checkpoint) (*criuimage.Summary, string) {
	if enc := c.Manifest.Encryption; enc != nil {
		return nil, fmt.Sprintf("not read: the CRIU images are encrypted (%s)", enc.Algorithm)
	}
	s, err := criuimage.Summarize(c.ImagesDir())
	if err != nil {
		return nil, "cannot read the CRIU images: " + oneLine(err.Error())
	}
	if err := s.Check(); err != nil {
		return s, oneLine(err.Error())
	}
	return s, ""
}

// printProcesses is inspect's Processes section.
func printProcesses(w io.Writer, s *criuimage.Summary, note string) error {
	if s == nil {
		_, err := fmt.Fprintf(w, "Processes:   %s\n", note)
		return err
	}
	fmt.Fprintln(w, "Processes:")
	t := table(w)
	fmt.Fprintln(t, "  PID\tPPID\tCOMMAND\tPAGES\tMAPPINGS\tFILES")
	for _, p := range s.Processes {
		fmt.Fprintf(t, "  %d\t%d\t%s\t%s\t%d\t%d\n", p.PID, p.PPID, p.Command, humanBytes(p.PageBytes), p.Mappings, p.Files)
	}
	if err := t.Flush(); err != nil {
		return err
	}
	total := fmt.Sprintf("  Image pages: %s (%d bytes, shared memory included)", humanBytes(s.PageBytes), s.PageBytes)
	if s.ParentPageBytes > 0 {
		total += fmt.Sprintf("; %s more in the parent image", humanBytes(s.ParentPageBytes))
	}
	fmt.Fprintln(w, total)
	if note != "" {
		fmt.Fprintf(w, "  PROBLEM: %s\n", note)
	}
	return nil
}

// imageProblems checks that the pages files of a checkpoint stored in the
// clear hold what its pagemaps say, naming each bad file relative to the
// checkpoint as Verify names its problems. An encrypted checkpoint's images
// are not read: their digests are all verify can check before a restore
// decrypts them.
func imageProblems(c *storage.Checkpoint) []string {
	if c.Manifest.Encryption != nil {
		return nil
	}
	var problems []string
	for _, err := range leafErrors(criuimage.Check(c.ImagesDir())) {
		if fe, ok := errors.AsType[*criuimage.FileError](err); ok {
			if rel, relErr := filepath.Rel(c.Dir, filepath.Join(fe.Dir, fe.Name)); relErr == nil {
				err = fmt.Errorf("%s: %w", filepath.ToSlash(rel), fe.Err)
			}
		}
		problems = append(problems, err.Error())
	}
	return problems
}

// leafErrors splits an errors.Join into its errors; nil has none.
func leafErrors(err error) []error {
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		return joined.Unwrap()
	}
	if err != nil {
		return []error{err}
	}
	return nil
}

// imagesError is verify's error line for problems in the CRIU images.
func imagesError(name string, problems []string) string {
	return fmt.Sprintf("CRIU images of %s: %s", name, strings.Join(problems, "; "))
}
