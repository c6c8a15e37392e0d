package imageops

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// cogKeychain authenticates to one registry with a Replicate cog token: the
// token is exchanged once for a user name at /cog/v1/verify-token, then sent
// as basic auth (user name, token). Other registries use the fallback.
type cogKeychain struct {
	registry  string
	token     string
	scheme    string
	transport http.RoundTripper
	fallback  authn.Keychain

	once     sync.Once
	username string
	err      error
}

func newCogKeychain(registry, token string, insecure bool, t http.RoundTripper, fallback authn.Keychain) *cogKeychain {
	reg, err := name.NewRegistry(registry, name.WeakValidation)
	scheme := "https"
	if err == nil {
		if insecure {
			reg, _ = name.NewRegistry(registry, name.Insecure)
		}
		scheme = reg.Scheme()
	}
	return &cogKeychain{registry: registry, token: token, scheme: scheme, transport: t, fallback: fallback}
}

func (k *cogKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(context.Background(), r)
}

func (k *cogKeychain) ResolveContext(ctx context.Context, r authn.Resource) (authn.Authenticator, error) {
	if r.RegistryStr() != k.registry {
		return authn.Resolve(ctx, k.fallback, r)
	}
	k.once.Do(func() { k.username, k.err = k.verify(ctx) })
	if k.err != nil {
		return nil, k.err
	}
	return &authn.Basic{Username: k.username, Password: k.token}, nil
}

// verify exchanges the token for the user name it belongs to.
func (k *cogKeychain) verify(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	u := k.scheme + "://" + k.registry + "/cog/v1/verify-token"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(url.Values{"token": {k.token}}.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := (&http.Client{Transport: k.transport}).Do(req)
	if err != nil {
		return "", fmt.Errorf("verifying the cog token at %s: %w", k.registry, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusNotFound && strings.Contains(string(body), "token"):
		return "", fmt.Errorf("%s rejected the cog token (%s): get a current one at https://replicate.com/auth/token and pass it with --token or COG_TOKEN", k.registry, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("verifying the cog token at %s: %s", u, resp.Status)
	}
	var v struct {
		Username string `json:"username"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Username == "" {
		return "", fmt.Errorf("verifying the cog token at %s: the answer has no user name", k.registry)
	}
	return v.Username, nil
}
