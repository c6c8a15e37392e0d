package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// User is an account of a token-auth registry. A user may push and pull
// repositories under its own name (alice/...), and only pull those under
// base/, as on Docker Hub or r8.im.
type User struct {
	Name     string
	Password string
}

// AdminUser is the account, present on every token-auth registry, that is
// granted everything: tests seed base/ repositories with it.
const AdminUser = "admin"

// BaseNamespace holds the repositories every user may pull and only the
// admin may push.
const BaseNamespace = "base"

// The registry's view of the issuer, written into its configuration.
const (
	tokenService = "r8im-testenv-registry"
	tokenIssuer  = "r8im-testenv-issuer"
	// TokenPath is the path of the token endpoint (the realm) on the
	// issuer, and on a Proxy in front of a token-auth registry.
	TokenPath = "/testenv/token"
)

// tokenServer is a Docker token issuer
// (distribution.github.io/distribution/spec/auth/token/), served on the
// registry's own host and port as r8.im does (go-containerregistry refuses
// a realm on another loopback or private address): GET TokenPath with
// basic auth and scope=... parameters answers a JWT (ES256, signed by a key
// whose certificate the CA issued; the registry trusts the CA as its
// rootcertbundle). Unknown users and wrong passwords get 401; no
// credentials get a token with no access; a scope not granted is left out
// of the token, so the registry then answers 401 insufficient_scope.
type tokenServer struct {
	URL   string // the realm: scheme://host:port/testenv/token
	users map[string]string
	ttl   time.Duration

	key   *ecdsa.PrivateKey
	x5c   string // base64 DER of the signing certificate
	mu    sync.Mutex
	calls []TokenRequest
}

// TokenRequest is one request to the token issuer, with what it asked and
// what it was given (tests use it to see which scopes a client asked for).
type TokenRequest struct {
	User    string   // "" for anonymous; the name given when refused
	Scopes  []string // as asked: repository:alice/model:pull,push
	Granted []string // in the same form, only those granted (may be fewer actions)
	Status  int      // 200, or 401 for bad credentials
}

// newTokenServer makes an issuer whose signing certificate ca issued.
func newTokenServer(t testing.TB, ca *CA, users []User, ttl time.Duration) *tokenServer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := ca.issue(&x509.Certificate{
		Subject:  pkix.Name{CommonName: tokenIssuer},
		KeyUsage: x509.KeyUsageDigitalSignature,
	}, &key.PublicKey)
	if err != nil {
		t.Fatalf("signing the token issuer's certificate: %v", err)
	}
	ts := &tokenServer{users: map[string]string{}, ttl: ttl, key: key, x5c: base64.StdEncoding.EncodeToString(der)}
	for _, u := range users {
		ts.users[u.Name] = u.Password
	}
	return ts
}

func (ts *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		// Clients use the OAuth2 POST form only with an identity token,
		// which this issuer never hands out.
		http.Error(w, "only GET with basic auth is supported", http.StatusMethodNotAllowed)
		return
	}
	var scopes []string
	for _, s := range r.URL.Query()["scope"] {
		scopes = append(scopes, strings.Fields(s)...)
	}
	user, password, hasAuth := r.BasicAuth()
	call := TokenRequest{User: user, Scopes: scopes}
	if hasAuth {
		want, known := ts.users[user]
		if !known || subtle.ConstantTimeCompare([]byte(want), []byte(password)) != 1 {
			call.Status = http.StatusUnauthorized
			ts.record(call)
			w.Header().Set("WWW-Authenticate", `Basic realm="r8im-testenv"`)
			writeJSON(w, http.StatusUnauthorized, map[string]any{"errors": []map[string]string{{
				"code": "UNAUTHORIZED", "message": "incorrect username or password"}}})
			return
		}
	} else {
		user = ""
	}
	var access []map[string]any
	for _, s := range scopes {
		typ, name, actions, ok := parseScope(s)
		if !ok {
			continue
		}
		granted := grant(user, typ, name, actions)
		if len(granted) == 0 {
			continue
		}
		access = append(access, map[string]any{"type": typ, "name": name, "actions": granted})
		call.Granted = append(call.Granted, typ+":"+name+":"+strings.Join(granted, ","))
	}
	now := time.Now()
	token, err := ts.sign(map[string]any{
		"iss": tokenIssuer, "sub": user, "aud": tokenService,
		"exp": now.Add(ts.ttl).Unix(), "nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(),
		"jti": serial().String(), "access": orEmpty(access),
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	call.Status = http.StatusOK
	ts.record(call)
	writeJSON(w, http.StatusOK, map[string]any{
		"token": token, "access_token": token,
		"expires_in": int(ts.ttl.Seconds()), "issued_at": now.UTC().Format(time.RFC3339),
	})
}

func orEmpty(a []map[string]any) []map[string]any {
	if a == nil {
		return []map[string]any{}
	}
	return a
}

func (ts *tokenServer) record(c TokenRequest) {
	ts.mu.Lock()
	ts.calls = append(ts.calls, c)
	ts.mu.Unlock()
}

func (ts *tokenServer) requests() []TokenRequest {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.calls)
}

// parseScope splits type:name:actions; the name may hold a port-less
// registry path but never a colon, except in the type (repository(plugin)).
func parseScope(s string) (typ, name string, actions []string, ok bool) {
	i, j := strings.Index(s, ":"), strings.LastIndex(s, ":")
	if i < 0 || i == j {
		return "", "", nil, false
	}
	return s[:i], s[i+1 : j], strings.Split(s[j+1:], ","), true
}

// grant is the issuer's policy: the admin gets what it asks; a user gets
// pull, push and delete on its own repositories and pull on base/;
// anonymous gets nothing.
func grant(user, typ, name string, actions []string) []string {
	if user == "" {
		return nil
	}
	if user == AdminUser {
		return actions
	}
	if typ != "repository" {
		return nil // no catalog for users, as on Docker Hub
	}
	var allowed []string
	switch {
	case strings.HasPrefix(name, user+"/"):
		allowed = []string{"pull", "push", "delete"}
	case strings.HasPrefix(name, BaseNamespace+"/"):
		allowed = []string{"pull"}
	}
	var out []string
	for _, a := range actions {
		if a == "*" {
			return allowed
		}
		if slices.Contains(allowed, a) && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// sign makes a compact JWS (ES256) of claims with the signing certificate
// in the x5c header, which the registry verifies against its root bundle.
func (ts *tokenServer) sign(claims map[string]any) (string, error) {
	header, err := json.Marshal(map[string]any{"typ": "JWT", "alg": "ES256", "x5c": []string{ts.x5c}})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(header) + "." + enc.EncodeToString(payload)
	sum := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, ts.key, sum[:])
	if err != nil {
		return "", fmt.Errorf("signing a token: %w", err)
	}
	sig := make([]byte, 64) // JWS ES256: R and S, 32 bytes each, big-endian
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + enc.EncodeToString(sig), nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
