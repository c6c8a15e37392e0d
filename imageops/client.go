package imageops

import (
	"context"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// registryClient is an HTTP client for repo's registry with the credentials
// for scope (transport.PullScope, PushScope), below which m, when set,
// counts the blob traffic. Reads (idempotent) are retried on transient
// errors by go-containerregistry's retry transport and follow redirects (a
// blob GET is often sent to a CDN; the transport bounds them). Uploads
// retry themselves, since a request body cannot be replayed blindly, and
// follow no redirect: upload locations are followed by hand, on the
// registry's host only.
func (o *options) registryClient(ctx context.Context, repo name.Repository, m *meter, scope string, idempotent bool) (*http.Client, error) {
	auth, err := authn.Resolve(ctx, o.keys(), repo)
	if err != nil {
		return nil, fmt.Errorf("finding credentials for %s: %w", repo, err)
	}
	base := o.transport
	if m != nil {
		base = m.wrap(base)
	}
	if idempotent {
		base = transport.NewRetry(base)
	}
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, transport.NewUserAgent(base, o.userAgent), []string{repo.Scope(scope)})
	if err != nil {
		return nil, registryErr(err, "authenticating to "+repo.RegistryStr())
	}
	c := &http.Client{Transport: rt}
	if !idempotent {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return c, nil
}
