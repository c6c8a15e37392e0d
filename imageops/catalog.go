package imageops

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// ListTags returns the tags of repository repo (host/repo), as the registry
// lists them.
func ListTags(ctx context.Context, repo string, opts ...Option) ([]string, error) {
	o := makeOptions(opts)
	r, err := name.NewRepository(repo, o.nameOptions()...)
	if err != nil {
		return nil, invalidf("%q is not a repository (%v); use host/repo", repo, err)
	}
	if err := o.checkRegistry(repo, "repository"); err != nil {
		return nil, err
	}
	tags, err := remote.List(r, o.remoteOptions(ctx, nil)...)
	if err != nil {
		return nil, registryErr(err, "listing the tags of "+r.String())
	}
	return tags, nil
}

// Catalog returns every repository of the registry at host (host/repo
// names), following the catalog's pages.
func Catalog(ctx context.Context, host string, opts ...Option) ([]string, error) {
	o := makeOptions(opts)
	var nopts []name.Option
	if o.insecure {
		nopts = append(nopts, name.Insecure)
	}
	reg, err := name.NewRegistry(host, nopts...)
	if err != nil {
		return nil, invalidf("%q is not a registry host (%v); use host[:port]", host, err)
	}
	repos, err := remote.Catalog(ctx, reg, o.remoteOptions(ctx, nil)...)
	if err != nil {
		return nil, registryErr(err, fmt.Sprintf("listing the repositories of %s (its /v2/_catalog)", host))
	}
	for i, r := range repos {
		repos[i] = reg.RegistryStr() + "/" + r
	}
	return repos, nil
}
