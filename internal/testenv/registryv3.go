package testenv

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"testing"
	"time"
)

// RegistryV3Version is the distribution v3 release `make deps` installs as
// BinDir/registry (a test keeps the Makefile's pin equal to it).
const RegistryV3Version = "v3.1.2"

// RegistryOption configures RegistryV3.
type RegistryOption func(*registryOptions)

type registryOptions struct {
	tls      bool
	users    []User
	token    bool
	tokenTTL time.Duration
}

// WithTLS serves the registry over HTTPS with a certificate from TestCA
// for 127.0.0.1, ::1 and localhost.
func WithTLS() RegistryOption { return func(o *registryOptions) { o.tls = true } }

// WithTokenAuth protects the registry with Docker token auth: a token
// issuer started in the test process holds users (plus AdminUser with a
// random password) and grants each user push and pull on user/... and pull
// on base/...; anonymous requests get tokens that grant nothing. The realm
// is HTTPS when the registry is (WithTLS).
func WithTokenAuth(users ...User) RegistryOption {
	return func(o *registryOptions) { o.token, o.users = true, append(o.users, users...) }
}

// WithTokenTTL sets the lifetime of issued tokens (default one hour), for
// tests of expiry mid-upload.
func WithTokenTTL(d time.Duration) RegistryOption {
	return func(o *registryOptions) { o.tokenTTL = d }
}

// RegistryV3 starts distribution v3 (BinDir/registry, installed by make
// deps) with filesystem storage and deletes enabled, configured by opts:
//
//	reg := testenv.RegistryV3(t, testenv.WithTLS(), testenv.WithTokenAuth(testenv.User{Name: "alice", Password: "pw"}))
//	alice := reg.Login(t, "alice")
//	base := reg.PushBase(t, "base/cog", testenv.OCI) // as the admin
//	remote.Image(base, alice.RemoteOptions()...)
func RegistryV3(t testing.TB, opts ...RegistryOption) *RegistryServer {
	t.Helper()
	o := registryOptions{tokenTTL: time.Hour}
	for _, opt := range opts {
		opt(&o)
	}
	bin := Binary(t, "registry")
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	r := &RegistryServer{DataDir: data, Kind: Distribution3}
	var tlsCfg, authCfg string
	if o.tls {
		r.CA = TestCA(t)
		cert, key := r.CA.WriteServerFiles(t, dir)
		tlsCfg = fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", cert, key)
	}
	var front net.Listener
	if o.token {
		ca := TestCA(t)
		users := append([]User{{Name: AdminUser, Password: randomHex(t, 12)}}, o.users...)
		r.users = map[string]string{}
		for _, u := range users {
			if u.Name == "" || u.Password == "" {
				t.Fatalf("WithTokenAuth: user %q needs a name and a password", u.Name)
			}
			r.users[u.Name] = u.Password
		}
		var err error
		if front, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		r.token = newTokenServer(t, ca, users, o.tokenTTL)
		r.token.URL = r.scheme() + "://" + front.Addr().String() + TokenPath
		authCfg = fmt.Sprintf(`auth:
  token:
    realm: %s
    service: %s
    issuer: %s
    rootcertbundle: %s
    signingalgorithms: [ES256]
`, r.token.URL, tokenService, tokenIssuer, ca.File(t))
	}
	r.start(t, bin, dir, o.token, func(addr string) string {
		// 2.8's configuration, plus the secret that signs upload state
		// (v3 wants one) and TLS.
		return authCfg + RegistryConfig(data, addr, "") + fmt.Sprintf("  secret: %s\n%s", randomHex(t, 16), tlsCfg)
	})
	if front != nil {
		r.serveFront(t, front)
	}
	return r
}

// serveFront makes l the registry's address: the token issuer answers
// TokenPath there and every other request goes to the registry process, as
// a registry and its auth service share a host in production (r8.im).
func (r *RegistryServer) serveFront(t testing.TB, l net.Listener) {
	t.Helper()
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: r.scheme(), Host: r.Host})
	rp.Transport = r.Transport()
	rp.ErrorLog = log.New(io.Discard, "", 0)
	mux := http.NewServeMux()
	mux.Handle(TokenPath, r.token)
	mux.Handle("/", rp)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	if r.CA != nil {
		srv.TLSConfig = r.CA.ServerTLSConfig(t)
		go func() { _ = srv.ServeTLS(l, "", "") }()
	} else {
		go func() { _ = srv.Serve(l) }()
	}
	t.Cleanup(func() { _ = srv.Close() })
	r.backend, r.Host = r.Host, l.Addr().String()
}
