package testenv_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/r8im/r8im/internal/testenv"
)

// uploads speaks the blob-upload protocol by hand, so that tests control
// every header and body.
type uploads struct {
	t      *testing.T
	client *http.Client
	base   string // scheme://host of the proxy
	repo   string
}

// start opens an upload session and returns its location.
func (u uploads) start() string {
	u.t.Helper()
	resp := u.do(http.MethodPost, u.base+"/v2/"+u.repo+"/blobs/uploads/", nil, 0, nil)
	if resp.StatusCode != http.StatusAccepted {
		u.t.Fatalf("starting an upload: %s", resp.Status)
	}
	return u.location(resp)
}

func (u uploads) location(resp *http.Response) string {
	u.t.Helper()
	loc, err := resp.Location()
	if err != nil {
		u.t.Fatalf("upload response %s without a location: %v", resp.Status, err)
	}
	return loc.String()
}

// do sends a request; length -1 streams body with chunked encoding.
func (u uploads) do(method, target string, body []byte, length int64, header http.Header) *http.Response {
	u.t.Helper()
	resp, err := u.try(method, target, body, length, header)
	if err != nil {
		u.t.Fatalf("%s %s: %v", method, target, err)
	}
	return resp
}

func (u uploads) try(method, target string, body []byte, length int64, header http.Header) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = io.MultiReader(bytes.NewReader(body)) // hides the length from net/http
	}
	req, err := http.NewRequest(method, target, rd)
	if err != nil {
		u.t.Fatal(err)
	}
	req.ContentLength = length
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}

// commit PUTs the session with the digest of data.
func (u uploads) commit(loc string, data []byte, header http.Header) {
	u.t.Helper()
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	resp := u.do(http.MethodPut, loc+sep+"digest="+digestOf(data), nil, 0, header)
	if resp.StatusCode != http.StatusCreated {
		body, _ := io.ReadAll(resp.Body)
		u.t.Fatalf("committing %s: %s %s", digestOf(data), resp.Status, body)
	}
}

func digestOf(b []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(b)) }

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func newUploads(t *testing.T, p *testenv.Proxy, repo string) uploads {
	return uploads{t: t, client: &http.Client{}, base: "http://" + p.Host, repo: repo}
}

// The body cap answers 413 to a body over it, declared or streamed, and
// lets one at the cap through; the figures are exact to the byte.
func TestProxyBodyCap(t *testing.T) {
	const limit = 256 << 10
	reg := testenv.Registry(t)
	p := testenv.CountingProxy(t, reg.Host, testenv.ProxyBodyCap(limit))
	u := newUploads(t, p, "front/cap")
	data := randomBytes(t, limit+1000)
	loc := u.start()
	steps := []struct {
		name   string
		body   []byte
		length int64
		want   int
	}{
		{"declared one byte over", data[:limit+1], limit + 1, http.StatusRequestEntityTooLarge},
		{"declared at the cap", data[:limit], limit, http.StatusAccepted},
		{"streamed over", data, -1, http.StatusRequestEntityTooLarge},
	}
	var sent int64
	for _, s := range steps {
		if s.length < 0 {
			loc = u.start() // a cut stream leaves its session in an unknown state
		}
		resp := u.do(http.MethodPatch, loc, s.body, s.length, nil)
		if resp.StatusCode != s.want {
			t.Fatalf("%s: %s; want %d", s.name, resp.Status, s.want)
		}
		if resp.StatusCode == http.StatusAccepted {
			loc = u.location(resp)
		}
		sent += int64(len(s.body))
	}
	got := p.Stats()
	want := testenv.ProxyStats{Requests: got.Requests, LargestBody: limit + 1000, LargestForwarded: limit, TooLarge: 2}
	if got != want {
		t.Errorf("stats %+v; want %+v", got, want)
	}
	if p.Uploaded() != sent {
		t.Errorf("uploaded %d bytes; the client sent %d", p.Uploaded(), sent)
	}
}

// RefuseChunks: a PATCH with Content-Range, or a second PATCH of a
// session, gets 416 and never reaches the registry; one streamed PATCH and
// the PUT pass, and so does go-containerregistry's push.
func TestProxyRefuseChunks(t *testing.T) {
	reg := testenv.Registry(t)
	p := testenv.CountingProxy(t, reg.Host, testenv.ProxyRefuseChunks())
	u := newUploads(t, p, "front/chunks")
	data := randomBytes(t, 200)
	resp := u.do(http.MethodPatch, u.start(), data[:100], 100, http.Header{"Content-Range": {"0-99"}})
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || !strings.Contains(string(body), "BLOB_UPLOAD_INVALID") {
		t.Fatalf("PATCH with Content-Range: %s %s; want 416 BLOB_UPLOAD_INVALID", resp.Status, body)
	}
	loc := u.start()
	resp = u.do(http.MethodPatch, loc, data, 200, nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("one PATCH: %s", resp.Status)
	}
	loc = u.location(resp)
	if resp := u.do(http.MethodPatch, loc, data[:1], 1, nil); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("second PATCH: %s; want 416", resp.Status)
	}
	u.commit(loc, data, nil) // the refused byte never reached the registry
	if got := p.Stats().RefusedChunks; got != 2 {
		t.Errorf("RefusedChunks = %d, want 2", got)
	}
	testenv.Push(t, p.Host+"/front/img:v1", testenv.BaseImage(t, testenv.OCI, testenv.Amd64))
}

// DropPatchAfter reads exactly n bytes of the first PATCH past n, forwards
// none, and closes the connection, once: the session stays where the
// client left it and the chunk is sent again.
func TestProxyDropPatchAfter(t *testing.T) {
	const n = 100_000
	reg := testenv.Registry(t)
	p := testenv.CountingProxy(t, reg.Host, testenv.ProxyDropPatchAfter(n))
	u := newUploads(t, p, "front/drop")
	data := randomBytes(t, 300_000)
	loc := u.start()
	resp := u.do(http.MethodPatch, loc, data[:n], n, nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("a PATCH of exactly n bytes is not past n: %s", resp.Status)
	}
	loc = u.location(resp)
	chunk := func() (*http.Response, error) {
		return u.try(http.MethodPatch, loc, data[n:], int64(len(data)-n), http.Header{"Content-Range": {fmt.Sprintf("%d-%d", n, len(data)-1)}})
	}
	if resp, err := chunk(); err == nil {
		t.Fatalf("PATCH past n bytes: %s; want the connection dropped", resp.Status)
	}
	if got := p.Stats().Dropped; got != 1 || p.Uploaded() != 2*n {
		t.Fatalf("dropped %d, uploaded %d; want 1 and exactly %d", got, p.Uploaded(), 2*n)
	}
	resp, err := chunk() // the same chunk again, from the same offset
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("resending the chunk: %v %v", resp, err)
	}
	u.commit(u.location(resp), data, nil)
	if got, want := p.Blobs()[digestOf(data)], int64(n+len(data)); got != want || p.Stats().Dropped != 1 {
		t.Errorf("the blob's session carried %d bytes through the proxy, %d drops; want %d, 1", got, p.Stats().Dropped, want)
	}
}

// CutPatchAfter hands the registry exactly n bytes of the first PATCH past
// n as a whole request and drops the client's connection: the session has
// moved on without the client knowing. distribution v3 answers the new
// offset to a GET of the (stale) location, and the upload resumes there.
func TestProxyCutPatchAfter(t *testing.T) {
	const n = 100_000
	reg := testenv.RegistryV3(t)
	p := testenv.CountingProxy(t, reg.Host, testenv.ProxyCutPatchAfter(n))
	u := newUploads(t, p, "front/cut")
	data := randomBytes(t, 300_000)
	loc := u.start()
	if resp, err := u.try(http.MethodPatch, loc, data, int64(len(data)), http.Header{"Content-Range": {fmt.Sprintf("0-%d", len(data)-1)}}); err == nil {
		t.Fatalf("PATCH past n bytes: %s; want the connection dropped", resp.Status)
	}
	if got := p.Stats(); got.Dropped != 1 || got.LargestForwarded != n || p.Uploaded() != n {
		t.Fatalf("stats %+v, uploaded %d; want 1 drop and exactly %d bytes forwarded", got, p.Uploaded(), n)
	}
	status := u.do(http.MethodGet, loc, nil, 0, nil)
	if status.StatusCode != http.StatusNoContent || status.Header.Get("Range") != fmt.Sprintf("0-%d", n-1) {
		t.Fatalf("upload status: %s, Range %q; want 204 0-%d", status.Status, status.Header.Get("Range"), n-1)
	}
	resp := u.do(http.MethodPatch, u.location(status), data[n:], int64(len(data)-n), http.Header{"Content-Range": {fmt.Sprintf("%d-%d", n, len(data)-1)}})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("resuming at %d: %s", n, resp.Status)
	}
	u.commit(u.location(resp), data, nil)
	if got := p.Blobs()[digestOf(data)]; got != int64(len(data)) {
		t.Errorf("the blob's session carried %d bytes through the proxy; want %d (no byte twice)", got, len(data))
	}
}

// Each proxy setting works in front of the TLS token registry too.
func TestProxyCapInFrontOfTokenRegistry(t *testing.T) {
	const limit = 64 << 10
	reg, alice, _ := tokenRegistry(t)
	p := reg.Proxy(t, testenv.ProxyBodyCap(limit))
	u := uploads{t: t, client: &http.Client{Transport: reg.Transport()}, base: "https://" + p.Host, repo: "alice/cap"}
	// A token for alice, through the proxy.
	q := url.Values{"scope": {"repository:alice/cap:pull,push"}}
	req, _ := http.NewRequest(http.MethodGet, u.base+testenv.TokenPath+"?"+q.Encode(), nil)
	req.SetBasicAuth(alice.User, alice.Password)
	resp, err := u.client.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("token through the proxy: %v %v", resp, err)
	}
	var tok struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
		t.Fatal(err)
	}
	auth := http.Header{"Authorization": {"Bearer " + tok.Token}}
	resp = u.do(http.MethodPost, u.base+"/v2/alice/cap/blobs/uploads/", nil, 0, auth)
	if resp.StatusCode != http.StatusAccepted || !strings.HasPrefix(resp.Header.Get("Location"), u.base) {
		t.Fatalf("start: %s, Location %q; want 202 with a location on the proxy", resp.Status, resp.Header.Get("Location"))
	}
	loc := u.location(resp)
	data := randomBytes(t, limit+1)
	if resp := u.do(http.MethodPatch, loc, data, int64(len(data)), auth); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("over the cap: %s", resp.Status)
	}
	resp = u.do(http.MethodPatch, loc, data[:limit], limit, auth)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("at the cap: %s", resp.Status)
	}
	u.commit(u.location(resp), data[:limit], auth)
	if got := p.Stats(); got.LargestBody != limit+1 || got.LargestForwarded != limit || got.TooLarge != 1 {
		t.Errorf("stats %+v", got)
	}
}
