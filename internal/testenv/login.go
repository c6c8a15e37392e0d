package testenv

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Login is one user of one registry, in every form a client takes
// credentials: an authn.Keychain or Authenticator for go-containerregistry
// and imageops, a DOCKER_CONFIG directory for the CLIs, skopeo and podman.
// An empty Password is anonymous; User still names the user's namespace
// (Repo). Build a literal for wrong credentials:
// testenv.Login{Reg: reg, User: "alice", Password: "wrong"}.
type Login struct {
	Reg      *RegistryServer
	User     string
	Password string
}

// Anonymous reports whether the login carries no credentials.
func (l Login) Anonymous() bool { return l.Password == "" }

// Authenticator is the login's basic credentials (authn.Anonymous when
// anonymous).
func (l Login) Authenticator() authn.Authenticator {
	if l.Anonymous() {
		return authn.Anonymous
	}
	return &authn.Basic{Username: l.User, Password: l.Password}
}

// Keychain answers the login's credentials for the registry's host and the
// hosts of proxies started with Reg.Proxy (at the time of the lookup), and
// anonymous for any other registry. Combine logins of several registries
// with authn.NewMultiKeychain.
func (l Login) Keychain() authn.Keychain { return loginKeychain(l) }

type loginKeychain Login

func (k loginKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if slices.Contains(k.Reg.hosts(), r.RegistryStr()) {
		return Login(k).Authenticator(), nil
	}
	return authn.Anonymous, nil
}

// RemoteOptions are the go-containerregistry options that reach the
// registry as this user: its Transport (trusting the test CA for TLS) and
// the login's Keychain.
func (l Login) RemoteOptions() []remote.Option {
	return []remote.Option{remote.WithTransport(l.Reg.Transport()), remote.WithAuthFromKeychain(l.Keychain())}
}

// Repo is host/user/name: a repository the user owns (on a token-auth
// registry, one it may push to).
func (l Login) Repo(name string) string { return l.Reg.Host + "/" + l.User + "/" + name }

// DockerConfig writes a docker config.json with the login's credentials for
// the registry and its proxies (those started so far, and extraHosts) into
// a new directory and returns it: DOCKER_CONFIG for the CLIs, or
// config.json in it as skopeo's and podman's --authfile. An anonymous
// login gets a config with no credentials.
func (l Login) DockerConfig(t testing.TB, extraHosts ...string) string {
	t.Helper()
	auths := map[string]map[string]string{}
	if !l.Anonymous() {
		auth := base64.StdEncoding.EncodeToString([]byte(l.User + ":" + l.Password))
		for _, h := range append(l.Reg.hosts(), extraHosts...) {
			auths[h] = map[string]string{"auth": auth}
		}
	}
	body, err := json.Marshal(map[string]any{"auths": auths})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), body, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Env is the environment of a subprocess (r8im, worker, enqueue) acting as
// this user: DOCKER_CONFIG, and for a TLS registry the CA's SSL_CERT_FILE
// and SSL_CERT_DIR (CA.Env).
func (l Login) Env(t testing.TB, extraHosts ...string) []string {
	t.Helper()
	env := []string{"DOCKER_CONFIG=" + l.DockerConfig(t, extraHosts...)}
	if l.Reg.CA != nil {
		env = append(env, l.Reg.CA.Env(t)...)
	}
	return env
}
