package testenv

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"
)

// Kinds of registry a RegistryServer can be.
const (
	Distribution28 = "distribution-2.8" // Debian's docker-registry
	Distribution3  = "distribution-3"   // distribution v3 (RegistryV3Version)
	External       = "external"         // R8IM_TEST_REGISTRY
)

// RegistryServer is a running distribution registry on loopback: plain
// HTTP (go-containerregistry uses HTTP for 127.0.0.1 on its own) unless CA
// is set, and open to anyone unless it has users (htpasswd or token auth).
type RegistryServer struct {
	Host    string // host:port, the registry part of image references
	DataDir string // filesystem storage root ("" for an external registry)
	Kind    string // Distribution28, Distribution3 or External
	// CA signed the registry's certificate; nil for plain HTTP. Clients
	// must be told to trust it (Transport, Login.Env).
	CA *CA

	users   map[string]string // name → password, for htpasswd or token auth
	token   *tokenServer      // nil without token auth
	backend string            // the registry process's own host:port behind the token front

	mu      sync.Mutex
	proxies []string // hosts of proxies started with Proxy, for DockerConfig
	*server
}

// Registry starts Debian's docker-registry (distribution 2.8) with filesystem
// storage and deletes enabled, or returns the one at R8IM_TEST_REGISTRY.
func Registry(t testing.TB) *RegistryServer {
	t.Helper()
	if h := os.Getenv("R8IM_TEST_REGISTRY"); h != "" {
		return &RegistryServer{Host: h, Kind: External}
	}
	return startRegistry(t, "")
}

// AuthRegistry starts a registry that requires basic auth (htpasswd) for
// user with password. It is always a local server: tests of authentication
// need to control the credentials.
func AuthRegistry(t testing.TB, user, password string) *RegistryServer {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startRegistry(t, htpasswd)
	r.users = map[string]string{user: password}
	return r
}

func startRegistry(t testing.TB, htpasswd string) *RegistryServer {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	r := &RegistryServer{DataDir: data, Kind: Distribution28}
	r.start(t, Binary(t, "docker-registry"), dir, htpasswd != "", func(addr string) string {
		return RegistryConfig(data, addr, htpasswd)
	})
	return r
}

// start runs bin with the configuration config(addr) and waits until the
// registry answers /v2/ (200, or 401 when it asks for credentials).
func (r *RegistryServer) start(t testing.TB, bin, dir string, auth bool, config func(addr string) string) {
	t.Helper()
	client := &http.Client{Transport: r.Transport(), Timeout: 10 * time.Second}
	s, port := startServer(t, bin, nil, func(port int) []string {
		cfg := filepath.Join(dir, fmt.Sprintf("config-%d.yml", port))
		if err := os.WriteFile(cfg, []byte(config(addr(port))), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{"serve", cfg}
	}, func(ctx context.Context, port int) error {
		err := HTTPGet(ctx, client, r.scheme()+"://"+addr(port)+"/v2/")
		if auth && err != nil && strings.Contains(err.Error(), "401") {
			return nil // up, and asking for credentials
		}
		return err
	})
	r.Host, r.server = addr(port), s
}

// RegistryConfig is the distribution configuration the tests (and make
// bench) run: filesystem storage under dataDir, listening on addr, with
// htpasswd basic auth when htpasswd names a file.
func RegistryConfig(dataDir, addr, htpasswd string) string {
	auth := ""
	if htpasswd != "" {
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: r8im-test\n    path: %s\n", htpasswd)
	}
	return auth + fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
`, dataDir, addr)
}

// HTTPOK GETs url and wants a 200.
func HTTPOK(ctx context.Context, url string) error {
	return HTTPGet(ctx, http.DefaultClient, url)
}

// HTTPGet GETs url with c and wants a 200 (a TLS server: c with
// RegistryServer.Transport).
func HTTPGet(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func (r *RegistryServer) scheme() string {
	if r.CA != nil {
		return "https"
	}
	return "http"
}

// URL is the registry's base URL, http://host:port or https://host:port.
func (r *RegistryServer) URL() string { return r.scheme() + "://" + r.Host }

// Transport is what a client needs to reach the registry: for TLS, a
// transport that trusts the test CA (and no other); else
// http.DefaultTransport.
func (r *RegistryServer) Transport() http.RoundTripper {
	if r.CA == nil {
		return http.DefaultTransport
	}
	return r.CA.Transport()
}

// TLSConfig is the client TLS configuration that trusts the registry (nil
// for plain HTTP).
func (r *RegistryServer) TLSConfig() *tls.Config {
	if r.CA == nil {
		return nil
	}
	return r.CA.ClientTLSConfig()
}

// TokenRealm is the token issuer's URL ("" without token auth).
func (r *RegistryServer) TokenRealm() string {
	if r.token == nil {
		return ""
	}
	return r.token.URL
}

// TokenRequests lists the requests the token issuer has answered so far, in
// order (nil without token auth).
func (r *RegistryServer) TokenRequests() []TokenRequest {
	if r.token == nil {
		return nil
	}
	return r.token.requests()
}

// Login is the named user of the registry, with the password it was
// created with (an anonymous Login, with the name, on an open registry).
// An unknown name on a registry with users fails the test: build a Login
// literal for wrong credentials.
func (r *RegistryServer) Login(t testing.TB, user string) Login {
	t.Helper()
	if r.users == nil {
		return Login{Reg: r, User: user}
	}
	pw, ok := r.users[user]
	if !ok {
		t.Fatalf("registry %s has no user %q", r.Host, user)
	}
	return Login{Reg: r, User: user, Password: pw}
}

// Admin is the login allowed everything (AdminUser on a token-auth
// registry, the first user otherwise), for seeding base images.
func (r *RegistryServer) Admin(t testing.TB) Login {
	t.Helper()
	if r.token != nil {
		return r.Login(t, AdminUser)
	}
	for u := range r.users { // htpasswd registries have one user
		return r.Login(t, u)
	}
	return Login{Reg: r, User: AdminUser}
}

// PushBase pushes BaseImage (one platform) or BaseIndex (several) to
// repo:latest on this registry as the admin and returns its digest
// reference. repo is a path without the host, usually under base/.
func (r *RegistryServer) PushBase(t testing.TB, repo string, f Format, platforms ...v1.Platform) name.Digest {
	t.Helper()
	return PushWith(t, r.Host+"/"+repo+":latest", baseArtifact(t, f, platforms), r.Admin(t).RemoteOptions()...)
}

// Push writes an image or index to repo (host-less, with a tag) as the
// admin and returns its digest reference.
func (r *RegistryServer) Push(t testing.TB, repoTag string, artifact remote.Taggable) name.Digest {
	t.Helper()
	return PushWith(t, r.Host+"/"+repoTag, artifact, r.Admin(t).RemoteOptions()...)
}

// Proxy starts a Proxy in front of this registry (closed when the test
// ends): TLS with the test CA if the registry has TLS. The token realm is
// on the registry's host, so the proxy's rewriting of challenges sends
// token requests through it too: every request of a client given p.Host
// crosses it.
func (r *RegistryServer) Proxy(t testing.TB, opts ...ProxyOption) *Proxy {
	t.Helper()
	if r.CA != nil {
		opts = append([]ProxyOption{upstreamTLS(r.CA)}, opts...)
	}
	p := CountingProxy(t, r.Host, opts...)
	r.mu.Lock()
	r.proxies = append(r.proxies, p.Host)
	r.mu.Unlock()
	return p
}

func (r *RegistryServer) hosts() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string{r.Host}, r.proxies...)
}
