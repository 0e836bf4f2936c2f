package registry

import (
	"context"
	"fmt"
	"slices"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/gpusnap/containerd-shim-snapshot-v2/storage"
)

// Entry is one checkpoint in a repository, as its annotations describe it.
type Entry struct {
	Tag     string
	Digest  string
	Key     string
	Created time.Time
	Bytes   int64 // the sum of its layers
	GPUs    string
	Driver  string
	Signed  bool
}

// Newest is the tag of the newest checkpoint of identity key in the
// repository: the highest generation among tags with the key's prefix
// whose annotations name the full key. None wraps storage.ErrNotFound.
func (r *Remote) Newest(ctx context.Context, key string) (string, error) {
	tags, err := r.Tags(ctx)
	if err != nil {
		return "", fmt.Errorf("registry %s: list tags: %w", r.Name, err)
	}
	for _, tag := range candidateTags(tags, key) {
		im, _, err := r.fetchManifest(ctx, tag)
		if err != nil {
			return "", fmt.Errorf("registry %s: %w", r.refTo(tag), err)
		}
		if im.Annotations[AnnotationKey] == key {
			return tag, nil
		}
	}
	return "", fmt.Errorf("registry %s: no checkpoint of key %s: %w", r.Name, key, storage.ErrNotFound)
}

// List describes every checkpoint tag of the repository, newest first;
// tags that are not checkpoints are left out.
func (r *Remote) List(ctx context.Context) ([]Entry, error) {
	tags, err := r.Tags(ctx)
	if err != nil {
		return nil, fmt.Errorf("registry %s: list tags: %w", r.Name, err)
	}
	var out []Entry
	for _, tag := range tags {
		im, desc, err := r.fetchManifest(ctx, tag)
		if err != nil {
			return nil, fmt.Errorf("registry %s: %w", r.refTo(tag), err)
		}
		if im.ArtifactType == ArtifactType {
			out = append(out, entryOf(tag, desc, im))
		}
	}
	slices.SortFunc(out, func(a, b Entry) int { return b.Created.Compare(a.Created) })
	return out, nil
}

func entryOf(tag string, desc ocispec.Descriptor, im *ocispec.Manifest) Entry {
	a := im.Annotations
	e := Entry{Tag: tag, Digest: desc.Digest.String(), Key: a[AnnotationKey], GPUs: a[AnnotationGPUs],
		Driver: a[AnnotationDriver], Signed: a[AnnotationSigned] == "true"}
	e.Created, _ = time.Parse(time.RFC3339, a[ocispec.AnnotationCreated])
	for _, l := range im.Layers {
		e.Bytes += l.Size
	}
	return e
}
