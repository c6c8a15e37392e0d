package imageops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/r8im/r8im/internal/untrusted"
)

// cogKeychain authenticates to one registry with a Replicate cog token: the
// token is exchanged for a user name at /cog/v1/verify-token, then sent as
// basic auth (user name, token). Other registries use the fallback.
//
// The exchange goes over https (unverified with WithInsecure, as the
// transport says); plain http is tried only after https failed to connect,
// and only to a loopback registry: the token never crosses a network in
// clear text. A successful exchange is kept; a failure is not, so a network
// error is retried by the next resolution. A rejected token is
// ErrUnauthorized: permanent.
type cogKeychain struct {
	registry  string
	token     string
	transport http.RoundTripper
	fallback  authn.Keychain

	mu       sync.Mutex
	username string // "" until an exchange succeeded
}

func newCogKeychain(registry, token string, t http.RoundTripper, fallback authn.Keychain) *cogKeychain {
	return &cogKeychain{registry: registry, token: token, transport: t, fallback: fallback}
}

func (k *cogKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(context.Background(), r)
}

func (k *cogKeychain) ResolveContext(ctx context.Context, r authn.Resource) (authn.Authenticator, error) {
	if r.RegistryStr() != k.registry {
		return authn.Resolve(ctx, k.fallback, r)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.username == "" {
		user, err := k.verify(ctx)
		if err != nil {
			return nil, err
		}
		k.username = user
	}
	return &authn.Basic{Username: k.username, Password: k.token}, nil
}

// isLoopbackHost reports whether a registry host[:port] names the local
// machine: localhost or a loopback IP literal.
func isLoopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && ip.Unmap().IsLoopback()
}

// verify exchanges the token for the user name it belongs to.
func (k *cogKeychain) verify(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := k.post(ctx, "https")
	if err != nil && isLoopbackHost(k.registry) && ctx.Err() == nil {
		// A loopback registry may speak plain HTTP; the token stays on
		// this machine.
		var herr error
		if resp, herr = k.post(ctx, "http"); herr == nil {
			err = nil
		}
	}
	if err != nil {
		return "", fmt.Errorf("verifying the cog token at %s: %w", k.registry, untrusted.Err(err, maxRemoteText))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusNotFound && strings.Contains(string(body), "token"):
		return "", fmt.Errorf("%w: %s rejected the cog token (HTTP %d): get a current one at https://replicate.com/auth/token",
			ErrUnauthorized, k.registry, resp.StatusCode)
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("verifying the cog token at %s: HTTP %d %s", k.registry, resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	var v struct {
		Username string `json:"username"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Username == "" {
		return "", fmt.Errorf("verifying the cog token at %s: the answer has no user name", k.registry)
	}
	return v.Username, nil
}

// post sends the token to the registry's verify-token endpoint over scheme.
func (k *cogKeychain) post(ctx context.Context, scheme string) (*http.Response, error) {
	u := scheme + "://" + k.registry + "/cog/v1/verify-token"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(url.Values{"token": {k.token}}.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	// No redirects: a redirect would carry the token (in the body of a 307
	// or 308) to wherever it points.
	client := &http.Client{Transport: k.transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		resp.Body.Close()
		return nil, errors.New("the verify-token endpoint answered with a redirect, which is not followed with a token")
	}
	return resp, nil
}
