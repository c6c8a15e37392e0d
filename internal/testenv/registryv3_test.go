package testenv_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/r8im/r8im/internal/testenv"
)

// tokenRegistry is distribution v3 over TLS with token auth for alice, and
// base/cog seeded by the admin.
func tokenRegistry(t *testing.T) (*testenv.RegistryServer, testenv.Login, name.Digest) {
	t.Helper()
	reg := testenv.RegistryV3(t, testenv.WithTLS(), testenv.WithTokenAuth(testenv.User{Name: "alice", Password: "alice-pw"}))
	return reg, reg.Login(t, "alice"), reg.PushBase(t, "base/cog", testenv.OCI)
}

// wantStatus fails unless err is a registry error with the status.
func wantStatus(t *testing.T, what string, err error, status int) {
	t.Helper()
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != status {
		t.Fatalf("%s: %v; want a %d from the registry", what, err, status)
	}
}

// The issuer's policy, seen through go-containerregistry: alice pushes to
// her own repositories and pulls base/, cannot push to base/; anonymous
// gets nothing; a wrong password is refused at the realm.
func TestTokenAuthScopes(t *testing.T) {
	reg, alice, base := tokenRegistry(t)
	img := testenv.BaseImage(t, testenv.Docker, testenv.Amd64)
	write := func(l testenv.Login, repo string) error {
		ref, err := name.ParseReference(reg.Host + "/" + repo)
		if err != nil {
			t.Fatal(err)
		}
		return remote.Write(ref, img, l.RemoteOptions()...)
	}
	if err := write(alice, "alice/model:v1"); err != nil {
		t.Fatalf("alice pushing to alice/model: %v", err)
	}
	if _, err := remote.Image(base, alice.RemoteOptions()...); err != nil {
		t.Fatalf("alice pulling %s: %v", base, err)
	}
	wantStatus(t, "alice pushing to base/evil", write(alice, "base/evil:v1"), http.StatusUnauthorized)
	anon := testenv.Login{Reg: reg}
	_, err := remote.Image(base, anon.RemoteOptions()...)
	wantStatus(t, "anonymous pull of base/cog", err, http.StatusUnauthorized)
	wrong := testenv.Login{Reg: reg, User: "alice", Password: "wrong"}
	_, err = remote.Image(base, wrong.RemoteOptions()...)
	wantStatus(t, "pull with a wrong password", err, http.StatusUnauthorized)
	var refused int
	for _, r := range reg.TokenRequests() {
		if r.Status == http.StatusUnauthorized {
			refused++
			if r.User != "alice" || r.Granted != nil {
				t.Errorf("refused token request %+v: want alice's, granting nothing", r)
			}
		}
	}
	if refused == 0 {
		t.Errorf("the wrong password never reached the issuer: %+v", reg.TokenRequests())
	}
}

// A scope not granted is left out of the token, and the registry answers
// 401 with error="insufficient_scope" naming what it wanted; the granted
// part (pull) works with the same token.
func TestTokenOmitsUngrantedScope(t *testing.T) {
	reg, alice, base := tokenRegistry(t)
	client := &http.Client{Transport: reg.Transport()}
	q := url.Values{"service": {"ignored"}, "scope": {"repository:base/cog:pull,push"}}
	req, _ := http.NewRequest(http.MethodGet, reg.TokenRealm()+"?"+q.Encode(), nil)
	req.SetBasicAuth(alice.User, alice.Password)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("token: %s, %v", resp.Status, err)
	}
	resp.Body.Close()
	if got := reg.TokenRequests(); got[len(got)-1].Granted[0] != "repository:base/cog:pull" || len(got[len(got)-1].Granted) != 1 {
		t.Fatalf("granted %v; want only repository:base/cog:pull", got[len(got)-1].Granted)
	}
	do := func(method, path string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, reg.URL()+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := do(http.MethodGet, "/v2/base/cog/manifests/"+base.DigestStr()); resp.StatusCode != http.StatusOK {
		t.Fatalf("pull with the token: %s", resp.Status)
	}
	resp = do(http.MethodPost, "/v2/base/cog/blobs/uploads/")
	challenge := resp.Header.Get("WWW-Authenticate")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(challenge, `error="insufficient_scope"`) ||
		!strings.Contains(challenge, `scope="repository:base/cog:`) || !strings.Contains(challenge, "push") {
		t.Fatalf("push with a pull-only token: %s, WWW-Authenticate %q; want 401 insufficient_scope for base/cog push", resp.Status, challenge)
	}
}

// A TLS registry is reached with the test CA and refused without it, or
// with another CA: in process (Transport) and in a subprocess (CA.Env).
func TestTLSVerifiedWithTheTestCA(t *testing.T) {
	reg := testenv.RegistryV3(t, testenv.WithTLS())
	get := func(rt http.RoundTripper) error {
		return testenv.HTTPGet(context.Background(), &http.Client{Transport: rt}, reg.URL()+"/v2/")
	}
	if err := get(reg.Transport()); err != nil {
		t.Fatalf("with the test CA: %v", err)
	}
	other, err := testenv.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	for name, rt := range map[string]http.RoundTripper{"system roots": http.DefaultTransport, "another CA": other.Transport()} {
		var unknown x509.UnknownAuthorityError
		if err := get(rt); !errors.As(err, &unknown) {
			t.Errorf("with %s: %v; want an unknown-authority error", name, err)
		}
	}
	for _, tc := range []struct {
		env     []string
		wantErr bool
	}{{reg.CA.Env(t), false}, {nil, true}} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperGET$")
		cmd.Env = append(append(os.Environ(), "R8IM_HELPER_GET="+reg.URL()+"/v2/"), tc.env...)
		out, err := cmd.CombinedOutput()
		if (err != nil) != tc.wantErr {
			t.Errorf("subprocess GET with env %v: %v; want error %v\n%s", tc.env, err, tc.wantErr, out)
		}
	}
}

// TestHelperGET is the subprocess of TestTLSVerifiedWithTheTestCA: it GETs
// R8IM_HELPER_GET with Go's default client (the system roots, which
// SSL_CERT_FILE replaces) and does nothing without it.
func TestHelperGET(t *testing.T) {
	u := os.Getenv("R8IM_HELPER_GET")
	if u == "" {
		return
	}
	if err := testenv.HTTPGet(context.Background(), http.DefaultClient, u); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
}

// Through a proxy, a token-auth TLS registry behaves as without one: the
// challenge's realm names the proxy, and a push from alice that builds on
// base/cog mounts its layers (0 bytes of them cross the proxy).
func TestProxyFrontsTokenRegistry(t *testing.T) {
	reg, alice, base := tokenRegistry(t)
	p := reg.Proxy(t)
	resp, err := (&http.Client{Transport: reg.Transport()}).Get("https://" + p.Host + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := `realm="https://` + p.Host + testenv.TokenPath + `"`; !strings.Contains(resp.Header.Get("WWW-Authenticate"), want) {
		t.Fatalf("challenge through the proxy: %q; want %s", resp.Header.Get("WWW-Authenticate"), want)
	}
	viaProxy, err := name.NewDigest(p.Host + "/base/cog@" + base.DigestStr())
	if err != nil {
		t.Fatal(err)
	}
	baseImg, err := remote.Image(viaProxy, alice.RemoteOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(baseImg, testenv.LayerOf(t, testenv.OCI, testenv.File("src/weights/w.bin", strings.Repeat("w", 1000))))
	if err != nil {
		t.Fatal(err)
	}
	before := len(reg.TokenRequests())
	dst, err := name.ParseReference(p.Host + "/alice/model:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(dst, img, alice.RemoteOptions()...); err != nil {
		t.Fatalf("pushing through the proxy: %v", err)
	}
	if len(reg.TokenRequests()) == before {
		t.Fatal("no token request reached the issuer during the push")
	}
	layers, _ := baseImg.Layers()
	blobs := p.Blobs()
	for _, l := range layers {
		d, _ := l.Digest()
		if blobs[d.String()] != 0 {
			t.Errorf("base layer %s: %d bytes crossed the proxy; want a mount", d, blobs[d.String()])
		}
	}
	// The registry has the image: read it back directly, as alice.
	direct, _ := name.ParseReference(reg.Host + "/alice/model:v1")
	if _, err := remote.Image(direct, alice.RemoteOptions()...); err != nil {
		t.Fatal(err)
	}
}
