package main

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/gpusnap/containerd-shim-snapshot-v2/criu"
	"github.com/gpusnap/containerd-shim-snapshot-v2/criuimage"
	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

func init() {
	commands["ls"] = &command{
		summary: "List the checkpoints in the store, broken ones with their error; or, given a\n" +
			"REPOSITORY (host/repository), the checkpoints pushed there.",
		args: "[REPOSITORY]",
		setup: func(fs *flag.FlagSet) runFunc {
			cfg, _ := registryFlags(fs)
			return func(e *env, args []string) int {
				if len(args) == 1 {
					return runRegistryLs(e, args[0], *cfg)
				}
				return runLs(e, args)
			}
		},
	}
	commands["inspect"] = &command{
		summary: "Show a checkpoint's manifest, its size, its signature, whether it can be restored on\nthis node, and the processes its CRIU images hold with their memory.",
		args:    "NAME",
		setup: func(fs *flag.FlagSet) runFunc {
			keys := trustedKeyFlag(fs)
			return func(e *env, args []string) int { return runInspect(e, args, *keys) }
		},
	}
}

// nodeFingerprint describes this node; a variable so tests need no CRIU.
var nodeFingerprint = criu.NodeFingerprint

// lsEntry is one row of ls; a broken checkpoint has only name, dir, error.
type lsEntry struct {
	Name       string               `json:"name"`
	Dir        string               `json:"dir"`
	Generation int                  `json:"generation"`
	Key        string               `json:"key,omitempty"`
	Created    *time.Time           `json:"created,omitempty"`
	Size       int64                `json:"size"`
	Source     *storage.Source      `json:"source,omitempty"`
	Node       *storage.Fingerprint `json:"node,omitempty"`
	Error      string               `json:"error,omitempty"`
}

func runLs(e *env, args []string) int {
	if len(args) > 0 {
		return e.usageErrorf("takes no arguments, got %q", args)
	}
	s, err := e.openStore()
	if err != nil {
		return e.errorf("%v", err)
	}
	list, err := s.List()
	if err != nil {
		return e.errorf("%v", err)
	}
	entries := make([]lsEntry, 0, len(list))
	for _, c := range list {
		entry := lsEntry{Name: c.Name, Dir: c.Dir, Generation: c.Generation}
		if m := c.Manifest; m != nil {
			entry.Key, entry.Created, entry.Size = m.Key, &m.Created, c.Size()
			entry.Source, entry.Node = &m.Source, &m.Node
		} else {
			entry.Error = fmt.Sprint(c.Err)
		}
		entries = append(entries, entry)
	}
	if e.json {
		return e.writeJSON(entries)
	}
	if len(entries) == 0 {
		fmt.Fprintf(e.stdout, "no checkpoints in store %s\n", s.Root)
		return exitOK
	}
	w := table(e.stdout)
	fmt.Fprintln(w, "NAME\tKEY\tCREATED\tSIZE\tSOURCE\tNODE (ARCH/KERNEL/CRIU)")
	for _, c := range entries {
		if c.Error != "" {
			fmt.Fprintf(w, "%s\t-\t-\t-\t-\tBROKEN: %s\n", c.Name, oneLine(c.Error))
			continue
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, c.Key[:16], formatTime(*c.Created),
			humanBytes(c.Size), sourceString(*c.Source), nodeString(*c.Node))
	}
	return flush(e, w)
}

func flush(e *env, w interface{ Flush() error }) int {
	if err := w.Flush(); err != nil {
		return e.errorf("write output: %v", err)
	}
	return exitOK
}

func formatTime(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05") }

func sourceString(s storage.Source) string {
	id := or(s.ContainerID, "?")
	if s.Namespace != "" {
		id = s.Namespace + "/" + id
	}
	return id
}

func nodeString(f storage.Fingerprint) string {
	return or(f.Arch, "?") + "/" + or(f.Kernel, "?") + "/" + or(f.CRIUVersion, "?")
}

func or(s, fallback string) string {
	if s == "" {
		return fallback
	}
	return s
}

// oneLine keeps a multi-line error in one table cell.
func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "; ") }

// compatibility is how a checkpoint fits this node. Unknown is set when
// this node could not be described (no CRIU, say), so nothing was compared.
type compatibility struct {
	Compatible bool                 `json:"compatible"`
	Node       *storage.Fingerprint `json:"node,omitempty"`
	Mismatch   *mismatch            `json:"mismatch,omitempty"`
	Unknown    string               `json:"unknown,omitempty"`
	Message    string               `json:"message"`
}

// mismatch is storage.MismatchError with JSON names.
type mismatch struct {
	Field      string `json:"field"`
	Checkpoint string `json:"checkpoint"`
	Node       string `json:"node"`
	Rule       string `json:"rule,omitempty"`
}

func checkCompatibility(m *storage.Manifest, criuPath string) compatibility {
	bin, err := criu.Find(criuPath)
	var node storage.Fingerprint
	if err == nil {
		node, err = nodeFingerprint(bin)
	}
	if err != nil {
		msg := fmt.Sprintf("cannot describe this node: %v", err)
		return compatibility{Unknown: msg, Message: "unknown: " + msg}
	}
	c := compatibility{Node: &node}
	err = m.Node.Compatible(node)
	if err == nil {
		c.Compatible, c.Message = true, "compatible"
		return c
	}
	if me, ok := errors.AsType[*storage.MismatchError](err); ok {
		c.Mismatch = &mismatch{me.Field, me.Checkpoint, me.Node, me.Rule}
	}
	c.Message = "incompatible: " + err.Error()
	return c
}

// inspectOutput is inspect's JSON: the manifest as stored plus what the
// CLI derives from it.
type inspectOutput struct {
	Name          string            `json:"name"`
	Dir           string            `json:"dir"`
	Generation    int               `json:"generation"`
	Size          int64             `json:"size"`
	Manifest      *storage.Manifest `json:"manifest"`
	Compatibility compatibility     `json:"compatibility"`
	Signature     signatureReport   `json:"signature"`
	// Encryption says whether the checkpoint is encrypted, with which key,
	// and whether the handler's encryption_key (--handler-config) is it.
	Encryption string `json:"encryption"`
	// Images is what the CRIU images hold: the processes, their memory and
	// the pages in the image. ImagesNote says why they were not read
	// (encrypted, undecodable) or how their pages files disagree with
	// their pagemaps.
	Images     *criuimage.Summary `json:"images,omitempty"`
	ImagesNote string             `json:"images_note,omitempty"`
}

func runInspect(e *env, args []string, trustedKeys pathList) int {
	if len(args) != 1 {
		return e.usageErrorf("needs exactly one checkpoint name, got %d", len(args))
	}
	policy, err := e.signaturePolicy(trustedKeys)
	if err != nil {
		return e.errorf("%v", err)
	}
	s, err := e.openStore()
	if err != nil {
		return e.errorf("%v", err)
	}
	c, err := getCheckpoint(s, args[0])
	if err != nil {
		return e.errorf("%v", err)
	}
	out := inspectOutput{
		Name: c.Name, Dir: c.Dir, Generation: c.Generation, Size: c.Size(),
		Manifest: c.Manifest, Compatibility: checkCompatibility(c.Manifest, e.criuPath()),
		Signature: checkSignature(c, policy), Encryption: e.encryptionReport(c),
	}
	out.Images, out.ImagesNote = readImages(c)
	if e.json {
		return e.writeJSON(out)
	}
	m := c.Manifest
	w := table(e.stdout)
	row := func(k, v string) { fmt.Fprintf(w, "%s:\t%s\n", k, v) }
	row("Name", c.Name)
	row("Directory", c.Dir)
	row("Key", m.Key)
	row("Generation", fmt.Sprint(c.Generation))
	row("Created", formatTime(m.Created)+" ("+m.Created.UTC().Format(time.RFC3339)+")")
	row("Size", fmt.Sprintf("%s (%d bytes in %d files)", humanBytes(out.Size), out.Size, len(m.Files)))
	row("Source", fmt.Sprintf("container %s, namespace %s, host %s",
		or(m.Source.ContainerID, "?"), or(m.Source.Namespace, "?"), or(m.Source.Hostname, "?")))
	row("Node", fmt.Sprintf("arch %s, kernel %s, criu %s, cgroup v%d",
		or(m.Node.Arch, "?"), or(m.Node.Kernel, "?"), or(m.Node.CRIUVersion, "?"), m.Node.CgroupVersion))
	if m.DriverVersion != "" {
		row("Driver", m.DriverVersion)
	}
	for i, g := range m.GPUs {
		row(fmt.Sprintf("GPU %d", i), fmt.Sprintf("%s %s (%s)", g.UUID, g.Product, humanBytes(int64(g.MemoryBytes))))
	}
	row("This node", out.Compatibility.Message)
	row("Signature", out.Signature.String())
	row("Encryption", out.Encryption)
	if err := w.Flush(); err != nil {
		return e.errorf("write output: %v", err)
	}
	section(e, "Identity", m.Identity, func(v string) string { return v })
	section(e, "Labels", m.Labels, func(v string) string { return v })
	section(e, "Phases", m.Phases, func(v float64) string { return fmt.Sprintf("%.3fs", v) })
	if err := printProcesses(e.stdout, out.Images, out.ImagesNote); err != nil {
		return e.errorf("write output: %v", err)
	}

	fmt.Fprintln(e.stdout, "Files:")
	w = table(e.stdout)
	for _, f := range m.Files {
		fmt.Fprintf(w, "  %s\t%s\t%s\n", humanBytes(f.Size), digestColumn(f), f.Path)
	}
	return flush(e, w)
}

// digestColumn abbreviates a file's digests: its SHA-256, or how many
// blocks the manifest hashes it in.
func digestColumn(f storage.File) string {
	if f.Blocks != nil {
		return fmt.Sprintf("%d blocks", len(f.Blocks))
	}
	return f.SHA256[:12]
}

// section prints a sorted map under a heading, or nothing when empty.
func section[V any](e *env, heading string, m map[string]V, format func(V) string) {
	if len(m) == 0 {
		return
	}
	fmt.Fprintf(e.stdout, "%s:\n", heading)
	w := table(e.stdout)
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(w, "  %s\t%s\n", k, format(m[k]))
	}
	w.Flush()
}

// encryptionReport is inspect's encryption line: the algorithm and key id,
// and, with --handler-config, whether that handler's encryption_key opens
// the checkpoint, in the shim's words when it does not.
func (e *env) encryptionReport(c *storage.Checkpoint) string {
	enc := c.Manifest.Encryption
	if enc == nil {
		return "none (stored in the clear)"
	}
	report := fmt.Sprintf("%s, key %s", enc.Algorithm, enc.KeyID)
	o, err := e.handlerOptions()
	switch {
	case err != nil || o == nil:
		return report
	case o.EncryptionKey == "":
		return report + "; the handler has no encryption_key"
	}
	k, err := storage.LoadEncryptionKey(o.EncryptionKey)
	switch {
	case err != nil:
		return fmt.Sprintf("%s; %v", report, err)
	case k.ID != enc.KeyID:
		return fmt.Sprintf("%s; the handler's encryption_key is %s, another key", report, k.ID)
	}
	return report + "; the handler's encryption_key opens it"
}
