package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
)

// DefaultHostsDir is containerd's registry host configuration directory
// (hosts.toml per registry host, with mirrors and CAs).
const DefaultHostsDir = "/etc/containerd/certs.d"

// Config is how a node reaches registries, read the way containerd reads
// it for images, so a mirror or a peer-to-peer cache configured for images
// serves checkpoints too.
type Config struct {
	// HostsDir holds containerd's hosts.toml files (DefaultHostsDir if
	// empty): mirrors (tried in order for pulls), server, CA, client
	// certificates, skip_verify, headers.
	HostsDir string
	// Credentials is a docker-style config.json with "auths" (and
	// credential helpers) for the registries; empty means none.
	Credentials string
}

// Remote is one repository as the node reaches it: its mirrors first, then
// the registry itself, each a repository client of oras-go.
type Remote struct {
	// Name is host/repository as the operator wrote it.
	Name string
	// pull and push are the hosts able to serve each, in order.
	pull, push []*remote.Repository
}

// Open resolves repo ("host[:port]/path", no tag) against cfg.
func Open(ctx context.Context, repo string, cfg Config) (*Remote, error) {
	ref, err := registry.ParseReference(repo)
	if err != nil {
		return nil, fmt.Errorf("registry %q: %w", repo, err)
	}
	if ref.Reference != "" {
		return nil, fmt.Errorf("registry %q: name a repository without a tag or digest", repo)
	}
	cred, err := credentialFunc(cfg.Credentials)
	if err != nil {
		return nil, err
	}
	hostsDir := cfg.HostsDir
	if hostsDir == "" {
		hostsDir = DefaultHostsDir
	}
	hosts, err := config.ConfigureHosts(ctx, config.HostOptions{HostDir: config.HostDirFromRoot(hostsDir)})(ref.Registry)
	if err != nil {
		return nil, fmt.Errorf("registry %s: hosts configuration in %s: %w", ref.Registry, hostsDir, err)
	}
	r := &Remote{Name: repo}
	for _, h := range hosts {
		client, err := repositoryClient(ref, h, cred)
		if err != nil {
			return nil, fmt.Errorf("registry %s: %w", ref.Registry, err)
		}
		if h.Capabilities.Has(docker.HostCapabilityPull) {
			r.pull = append(r.pull, client)
		}
		if h.Capabilities.Has(docker.HostCapabilityPush) {
			r.push = append(r.push, client)
		}
	}
	if len(r.pull) == 0 {
		return nil, fmt.Errorf("registry %s: hosts configuration in %s names no host that can pull", ref.Registry, hostsDir)
	}
	return r, nil
}

// repositoryClient is an oras-go repository reached through host h with
// h's TLS settings and headers.
func repositoryClient(ref registry.Reference, h docker.RegistryHost, cred auth.CredentialFunc) (*remote.Repository, error) {
	if h.Path != "" && h.Path != "/v2" {
		return nil, fmt.Errorf("host %s: path %q (override_path): only the standard /v2 API path is supported", h.Host, h.Path)
	}
	ref.Registry = h.Host
	httpClient := h.Client
	if httpClient == nil || h.Scheme == "http" {
		// containerd tries HTTPS first on an http host (a registry on
		// localhost without hosts.toml) and falls back; oras-go refuses
		// the redirects that produces, so such a host is plain HTTP.
		httpClient = http.DefaultClient
	}
	return &remote.Repository{
		Reference: ref,
		PlainHTTP: h.Scheme == "http",
		Client: &auth.Client{
			Client:     httpClient,
			Header:     h.Header,
			Cache:      auth.NewCache(),
			Credential: cred,
		},
	}, nil
}

// credentialFunc reads docker-style credentials from file; none without one.
func credentialFunc(file string) (auth.CredentialFunc, error) {
	if file == "" {
		return auth.StaticCredential("", auth.EmptyCredential), nil
	}
	store, err := credentials.NewStore(file, credentials.StoreOptions{})
	if err != nil {
		return nil, fmt.Errorf("registry credentials %s: %w", file, err)
	}
	return credentials.Credential(store), nil
}

// firstPull runs op against each pull host in order until one succeeds,
// so a mirror that lacks a checkpoint (or is down) falls through to the
// next and finally to the registry. The error names every host's failure.
func firstPull[T any](r *Remote, op func(*remote.Repository) (T, error)) (T, error) {
	var errs []error
	for _, repo := range r.pull {
		v, err := op(repo)
		if err == nil {
			return v, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", repo.Reference.Registry, err))
	}
	var zero T
	return zero, errors.Join(errs...)
}

// pushHost is the host checkpoints are pushed to.
func (r *Remote) pushHost() (*remote.Repository, error) {
	if len(r.push) == 0 {
		return nil, fmt.Errorf("registry %s: no configured host accepts pushes", r.Name)
	}
	return r.push[len(r.push)-1], nil
}

// Tags lists the repository's tags.
func (r *Remote) Tags(ctx context.Context) ([]string, error) {
	return firstPull(r, func(repo *remote.Repository) ([]string, error) {
		var all []string
		err := repo.Tags(ctx, "", func(tags []string) error {
			all = append(all, tags...)
			return nil
		})
		return all, err
	})
}

// repoPath is host/repository:tag for messages.
func (r *Remote) refTo(tag string) string {
	return strings.TrimSuffix(r.Name, "/") + ":" + tag
}
