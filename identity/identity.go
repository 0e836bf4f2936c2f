// Package identity computes the key under which a container's checkpoints
// are stored and matched: a digest of the parts of its OCI spec that the
// frozen process image depends on, so that the same workload in another pod
// finds the checkpoint and a different one never does.
package identity

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Identity field names, in the fixed order in which they are hashed and
// compared. A checkpoint is restored into a container only when every field
// is equal, so each field is something the frozen process image depends on,
// and nothing that differs between two pods running the same workload.
const (
	// FieldImage is the image reference the container was created from: the
	// CRI annotation io.kubernetes.cri.image-name, else the containerd image
	// annotation io.containerd.image.name when a client put it in the spec.
	// ctr sets neither, so ctr containers have an empty image; their args,
	// env and mounts still have to match. It is the reference as written
	// (a tag, usually), not a digest: the spec does not carry the digest.
	FieldImage = "image"
	// FieldArgs is the process argv, as a JSON list: the restored process
	// must be the one the new container asked to run.
	FieldArgs = "args"
	// FieldEnv is the process environment as a sorted JSON list of NAME=value,
	// minus HOSTNAME and NVIDIA_VISIBLE_DEVICES (see builtinIgnoreEnv) and
	// minus Options.IgnoreEnv. A restored process keeps the
	// environment it was checkpointed with, so it must be the one asked for.
	FieldEnv = "env"
	// FieldCwd is the process working directory.
	FieldCwd = "cwd"
	// FieldUser is uid:gid, then :g1,g2 with the sorted additional gids when
	// there are any. The restored process keeps its credentials.
	FieldUser = "user"
	// FieldMounts is the sorted JSON list of mount destinations. Sources are
	// left out because they are per-pod host paths (volumes, the sandbox's
	// hostname and resolv.conf files). The mounts every container gets
	// (see defaultMounts), the service account token directory and
	// Options.IgnoreMounts are left out too: they say nothing about
	// the workload.
	FieldMounts = "mounts"
	// FieldGPUs is "<count> x <product>" of the GPUs the container was given,
	// empty without GPUs: CUDA state restores only onto as many GPUs of the
	// same product.
	FieldGPUs = "gpus"
)

// identityFields is the order in which fields are hashed and compared.
var identityFields = []string{FieldImage, FieldArgs, FieldEnv, FieldCwd, FieldUser, FieldMounts, FieldGPUs}

// identityVersion is hashed in front of the fields, so that a change to the
// selection or its encoding never matches checkpoints made under the old one.
const identityVersion = "containerd-shim-snapshot-v2 identity v1"

const (
	annotationCRIImage       = "io.kubernetes.cri.image-name"
	annotationContainerImage = "io.containerd.image.name"
)

// builtinIgnoreEnv is dropped from every identity: CRI sets HOSTNAME to the
// pod's hostname, and a restore targets a new pod by definition;
// NVIDIA_VISIBLE_DEVICES names the GPUs the device plugin assigned to this
// pod (indices or UUIDs), which differ from pod to pod, while the gpus field
// already compares what matters (count and product).
var builtinIgnoreEnv = []string{"HOSTNAME", "NVIDIA_VISIBLE_DEVICES"}

// defaultMounts are destinations that containerd's default spec, ctr and CRI
// add to every container; they are the same for any two containers and
// their sources are per-container.
var defaultMounts = map[string]bool{
	"/proc":                true,
	"/dev":                 true,
	"/dev/pts":             true,
	"/dev/shm":             true,
	"/dev/mqueue":          true,
	"/sys":                 true,
	"/sys/fs/cgroup":       true,
	"/run":                 true, // containerd's default spec (ctr)
	"/etc/hostname":        true,
	"/etc/hosts":           true,
	"/etc/resolv.conf":     true,
	"/dev/termination-log": true,
}

// defaultMountTrees are destinations left out together with everything
// below them: the projected service account token differs per pod.
var defaultMountTrees = []string{"/var/run/secrets/kubernetes.io"}

// GPU is the GPU part of an identity. The caller fills it from NVML
// for the GPUs assigned to the container, since the spec alone does not say
// which product they are.
type GPU struct {
	Product string
	Count   int
}

// Options are the inputs to Of beyond the spec; they come from
// the runtime handler's configuration and the node.
type Options struct {
	// IgnoreEnv names environment variables left out of the identity, for
	// values that differ per pod without changing the workload. A name
	// ending in "*" matches every name with that prefix.
	IgnoreEnv []string
	// IgnoreMounts are mount destinations left out together with every
	// destination below them, such as the shim's control directory.
	IgnoreMounts []string
	// GPU is the product and count of the container's GPUs; zero without.
	GPU GPU
}

// Of returns the key under which a container's checkpoints are stored and
// looked up, and the fields it was computed from (for manifests and for
// explaining mismatches). Two containers in different pods, with different
// ids, hostnames and volume sources, have the same key when they run the
// same workload; see the Field constants for what is compared and why.
func Of(spec *specs.Spec, o Options) (key string, fields map[string]string) {
	fields = map[string]string{
		FieldImage:  identityImage(spec),
		FieldArgs:   "",
		FieldEnv:    "",
		FieldCwd:    "",
		FieldUser:   "",
		FieldMounts: identityMounts(spec, o.IgnoreMounts),
		FieldGPUs:   identityGPUs(o.GPU),
	}
	if p := spec.Process; p != nil {
		fields[FieldArgs] = jsonList(p.Args)
		fields[FieldEnv] = identityEnv(p.Env, o.IgnoreEnv)
		fields[FieldCwd] = p.Cwd
		fields[FieldUser] = identityUser(p.User)
	}
	return Key(fields), fields
}

// Key is the key of a set of identity fields, so that a key stored in a
// manifest can be checked against the fields stored beside it. It is the
// hex SHA-256 of a version line followed by one JSON [name, value] line per
// field: the known fields in their fixed order (missing ones as empty), then
// any unknown fields sorted by name.
func Key(fields map[string]string) string {
	h := sha256.New()
	fmt.Fprintln(h, identityVersion)
	for _, name := range fieldOrder(fields, nil) {
		line, _ := json.Marshal([2]string{name, fields[name]})
		h.Write(line)
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Diff names the first field, in the fixed order, whose value differs
// between two identities, so that "no checkpoint matched" can say why. A field
// missing on one side counts as empty.
func Diff(a, b map[string]string) (field, aValue, bValue string, differs bool) {
	for _, name := range fieldOrder(a, b) {
		if a[name] != b[name] {
			return name, a[name], b[name], true
		}
	}
	return "", "", "", false
}

// fieldOrder is the known fields, then any other names in a or b, sorted.
func fieldOrder(a, b map[string]string) []string {
	var extra []string
	for _, m := range []map[string]string{a, b} {
		for name := range m {
			if !slices.Contains(identityFields, name) && !slices.Contains(extra, name) {
				extra = append(extra, name)
			}
		}
	}
	slices.Sort(extra)
	return append(slices.Clone(identityFields), extra...)
}

func identityImage(spec *specs.Spec) string {
	if img := spec.Annotations[annotationCRIImage]; img != "" {
		return img
	}
	return spec.Annotations[annotationContainerImage]
}

func identityEnv(env, ignore []string) string {
	var kept []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if envIgnored(name, builtinIgnoreEnv) || envIgnored(name, ignore) {
			continue
		}
		kept = append(kept, kv)
	}
	slices.Sort(kept)
	return jsonList(kept)
}

func envIgnored(name string, patterns []string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(name, prefix) {
				return true
			}
		} else if name == p {
			return true
		}
	}
	return false
}

func identityUser(u specs.User) string {
	s := strconv.FormatUint(uint64(u.UID), 10) + ":" + strconv.FormatUint(uint64(u.GID), 10)
	if len(u.AdditionalGids) == 0 {
		return s
	}
	gids := slices.Clone(u.AdditionalGids)
	slices.Sort(gids)
	gids = slices.Compact(gids)
	parts := make([]string, len(gids))
	for i, g := range gids {
		parts[i] = strconv.FormatUint(uint64(g), 10)
	}
	return s + ":" + strings.Join(parts, ",")
}

func identityMounts(spec *specs.Spec, ignore []string) string {
	var dests []string
	for _, m := range spec.Mounts {
		d := path.Clean("/" + m.Destination)
		if defaultMounts[d] || underAny(d, defaultMountTrees) || underAny(d, ignore) {
			continue
		}
		dests = append(dests, d)
	}
	slices.Sort(dests)
	return jsonList(dests)
}

// underAny reports whether p is one of dirs or below one of them.
func underAny(p string, dirs []string) bool {
	for _, d := range dirs {
		d = path.Clean("/" + d)
		if p == d || strings.HasPrefix(p, strings.TrimSuffix(d, "/")+"/") {
			return true
		}
	}
	return false
}

func identityGPUs(g GPU) string {
	if g.Count <= 0 {
		return ""
	}
	return fmt.Sprintf("%d x %s", g.Count, g.Product)
}

// jsonList encodes a list of strings; nil and empty encode alike.
func jsonList(l []string) string {
	if len(l) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(l)
	return string(b)
}
