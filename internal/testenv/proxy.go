package testenv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"strings"
	"sync"
	"testing"
	"time"
)

// Proxy sits in front of a registry, counts blob bytes as they cross it, and
// can inject faults. Tests use its figures as the registry-side evidence that
// no base layer was moved, independent of what r8im reports about itself.
//
// It also behaves, on request, like the CDN fronts of production
// registries (ProxyOption, or the setters of the same names):
// a request-body cap (413), a bandwidth cap per client connection, a front
// that takes each blob in one request (RefuseChunks: 416), and a
// connection dropped in the middle of a PATCH. Start one with
// RegistryServer.Proxy to put it in front of a TLS or token-auth registry:
// it then serves TLS with the test CA too and carries the token realm, so a
// client given p.Host sends every request through it.
type Proxy struct {
	Host string // host:port to use in image references instead of the registry's

	mu         sync.Mutex
	cogTokens  map[string]string // token → user name for /cog/v1/verify-token
	downloaded map[string]int64  // blob digest → bytes of GET responses
	uploaded   int64             // bytes of PATCH/PUT bodies to blob uploads
	sessions   map[string]int64  // upload session → bytes not yet committed
	committed  map[string]int64  // blob digest → upload bytes its PUT committed
	srv        *http.Server
	faults     []Fault
	faultFunc  func(*http.Request) (Fault, bool)
	injected   int64 // faults applied so far
	throttle   int64 // upload bytes per second; 0 = unlimited

	front    frontConfig
	patches  map[string]int // upload session → PATCH requests seen (RefuseChunks)
	stats    ProxyStats
	upstream string // host:port of the registry
	scheme   string // of the proxy and the registry: http or https

	now   func() time.Time                           // the bandwidth cap's clock
	sleep func(ctx context.Context, d time.Duration) // and its wait (tests replace both)
}

// frontConfig is what ProxyOptions set.
type frontConfig struct {
	bodyCap      int64 // 0: none
	connRate     int64 // upload bytes per second per connection; 0: none
	refuseChunks bool
	dropAfter    int64 // armed when ≥ 0
	cutAfter     int64 // armed when ≥ 0
	now          func() time.Time
	sleep        func(ctx context.Context, d time.Duration)
	ca           *CA // TLS to the registry and to clients
}

// ProxyOption configures a Proxy's behaviour; see the setters of the same
// names on Proxy to change it while a test runs.
type ProxyOption func(*frontConfig)

// ProxyBodyCap refuses requests whose body is over n bytes with 413
// Request Entity Too Large, as Cloudflare does (100 MB to 500 MB by plan).
func ProxyBodyCap(n int64) ProxyOption { return func(c *frontConfig) { c.bodyCap = n } }

// ProxyConnBandwidth caps each client connection's upload at bytesPerSec
// (a token bucket with a 64 KiB burst): one TCP stream gets a fraction of
// a link, several connections get more.
func ProxyConnBandwidth(bytesPerSec int64) ProxyOption {
	return func(c *frontConfig) { c.connRate = bytesPerSec }
}

// ProxyRefuseChunks makes the proxy a front that takes each blob in one
// request: see Proxy.RefuseChunks.
func ProxyRefuseChunks() ProxyOption { return func(c *frontConfig) { c.refuseChunks = true } }

// ProxyDropPatchAfter drops the connection of the first blob-upload PATCH
// whose body goes past n bytes, forwarding none of it: see
// Proxy.DropPatchAfter.
func ProxyDropPatchAfter(n int64) ProxyOption { return func(c *frontConfig) { c.dropAfter = n } }

// ProxyCutPatchAfter passes the first n bytes of the first blob-upload
// PATCH past n to the registry as a whole request, then drops the client's
// connection: see Proxy.CutPatchAfter.
func ProxyCutPatchAfter(n int64) ProxyOption { return func(c *frontConfig) { c.cutAfter = n } }

// upstreamTLS makes the proxy reach the registry over TLS trusting ca, and
// serve TLS to clients with ca's loopback certificate.
func upstreamTLS(ca *CA) ProxyOption { return func(c *frontConfig) { c.ca = ca } }

// ProxyStats are the proxy's figures about request bodies, exact to the
// byte: every byte a client sent in a body is one the proxy read.
type ProxyStats struct {
	Requests int64 // requests that reached the front's checks (injected faults apart)
	// LargestBody is the largest request body a client sent or announced:
	// the greater of its Content-Length and the bytes read, refused
	// requests included. "No request over the cap" is LargestBody ≤ cap.
	LargestBody int64
	// LargestForwarded is the largest body passed to the registry in full.
	LargestForwarded int64
	TooLarge         int // requests answered 413 by the body cap
	RefusedChunks    int // PATCH requests answered 416 by RefuseChunks
	Dropped          int // connections dropped by DropPatchAfter or CutPatchAfter
}

// Throttle slows blob uploads through the proxy to bytesPerSec.
func (p *Proxy) Throttle(bytesPerSec int64) {
	p.mu.Lock()
	p.throttle = bytesPerSec
	p.mu.Unlock()
}

// SetBodyCap sets the body cap (0 removes it): a request with a
// Content-Length over n bytes, or a streamed body that goes past n bytes, is
// answered 413 Request Entity Too Large. The proxy reads the rest of a
// refused body before answering, so the client always sees the 413; those
// bytes count as uploaded but never reach the registry (a streamed body's
// first n bytes did, and the registry sees that request fail).
func (p *Proxy) SetBodyCap(n int64) {
	p.mu.Lock()
	p.front.bodyCap = n
	p.mu.Unlock()
}

// SetConnBandwidth caps each client connection's request bodies at
// bytesPerSec (0 removes the cap), with a 64 KiB burst.
func (p *Proxy) SetConnBandwidth(bytesPerSec int64) {
	p.mu.Lock()
	p.front.connRate = bytesPerSec
	p.mu.Unlock()
}

// RefuseChunks(true) makes the proxy a front that takes each blob in one
// request, as Google Artifact Registry does: a blob-upload PATCH that
// carries a Content-Range header, or that follows another PATCH of the same
// upload session, is answered 416 Requested Range Not Satisfiable with a
// BLOB_UPLOAD_INVALID error, after reading its body, and never reaches the
// registry. One streamed PATCH without Content-Range (what
// go-containerregistry sends) followed by the PUT, or a monolithic PUT,
// pass.
func (p *Proxy) RefuseChunks(on bool) {
	p.mu.Lock()
	p.front.refuseChunks = on
	p.mu.Unlock()
}

// DropPatchAfter arms a drop, once: the first blob-upload PATCH whose
// Content-Length is over n (or is unknown) has exactly n bytes of its body
// read, then its connection is closed with no response. None of it reaches
// the registry (a front that buffers bodies): the session stays at its last
// acknowledged offset, and the client resends the chunk. A negative n
// disarms.
func (p *Proxy) DropPatchAfter(n int64) {
	p.mu.Lock()
	p.front.dropAfter = n
	p.mu.Unlock()
}

// CutPatchAfter arms a cut, once: the first blob-upload PATCH whose
// Content-Length is over n (or is unknown) reaches the registry as a
// complete request of exactly its first n bytes (sent chunked, without
// Content-Length); the proxy waits for the registry's answer and then
// closes the client's connection instead of passing it on. The session
// has moved past the client's last acknowledged offset: a client must ask
// the registry (GET the upload location; distribution 2.8 then refuses the
// stale _state with 404 BLOB_UPLOAD_INVALID, v3 answers the new offset). A
// negative n disarms.
func (p *Proxy) CutPatchAfter(n int64) {
	p.mu.Lock()
	p.front.cutAfter = n
	p.mu.Unlock()
}

// Stats returns the body figures so far.
func (p *Proxy) Stats() ProxyStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Fault makes the next Count requests matching Method and a path containing
// PathContains fail: with Status, or by dropping the connection after
// reading the request when Status is 0.
//
// Delay, Truncate and Hold change that: the request waits Delay (a slow
// server) or until Hold is closed, then gets Status if set; otherwise it is
// passed upstream, and with Truncate the response's body is cut after half
// its length (at most 64 KiB in) by dropping the connection. A Fault with
// only Delay or Hold set is a slow but successful request.
type Fault struct {
	Method       string
	PathContains string
	Status       int
	Count        int
	RetryAfter   string // Retry-After header sent with Status, if any

	Delay    time.Duration
	Hold     <-chan struct{}
	Truncate bool
}

// passes reports whether the request goes upstream after the fault's wait.
func (f Fault) passes() bool {
	return f.Status == 0 && (f.Truncate || f.Delay > 0 || f.Hold != nil)
}

type truncateKey struct{}

// CountingProxy starts a proxy to the registry at upstream (host:port),
// closed when the test ends. For a TLS or token-auth registry use
// RegistryServer.Proxy, which passes what the proxy needs to know.
func CountingProxy(t testing.TB, upstream string, opts ...ProxyOption) *Proxy {
	t.Helper()
	p, err := NewProxy(upstream, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// NewProxy is CountingProxy outside a test (make bench); Close stops it.
func NewProxy(upstream string, opts ...ProxyOption) (*Proxy, error) {
	p := &Proxy{downloaded: map[string]int64{}, sessions: map[string]int64{}, committed: map[string]int64{},
		patches: map[string]int{}, upstream: upstream, scheme: "http",
		front: frontConfig{dropAfter: -1, cutAfter: -1, now: time.Now, sleep: sleepCtx}}
	for _, o := range opts {
		o(&p.front)
	}
	p.now, p.sleep = p.front.now, p.front.sleep
	var upstreamTransport http.RoundTripper = http.DefaultTransport
	if p.front.ca != nil {
		p.scheme = "https"
		upstreamTransport = p.front.ca.Transport()
	}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: p.scheme, Host: upstream})
	rp.Transport = upstreamTransport
	rp.ErrorLog = log.New(io.Discard, "", 0) // injected faults make noise by design
	rp.ErrorHandler = p.upstreamError
	rp.ModifyResponse = func(resp *http.Response) error {
		req := resp.Request
		if req.Context().Value(truncateKey{}) != nil {
			left := min(resp.ContentLength/2, 64<<10)
			if resp.ContentLength < 0 {
				left = 64 << 10
			}
			resp.Body = &truncatedBody{ReadCloser: resp.Body, left: left}
		}
		if st, _ := req.Context().Value(reqKey{}).(*reqState); st != nil && st.cut {
			st.outcome = outcomeDropped
			return errCut
		}
		p.commit(req)
		if req.Method == http.MethodGet && resp.StatusCode == http.StatusOK && strings.Contains(req.URL.Path, "/blobs/sha256:") {
			resp.Body = &countBody{ReadCloser: resp.Body, add: func(n int64) { p.add(&p.downloaded, path.Base(req.URL.Path), n) }}
		}
		p.rewriteHeaders(resp.Header)
		return nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.Host = l.Addr().String()
	p.srv = &http.Server{
		// HTTP/1.1 only: a connection is one upload stream (the bandwidth
		// cap is per connection), and dropping one needs a hijack.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, &bucket{})
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/cog/v1/verify-token" {
				p.verifyToken(w, r)
				return
			}
			p.serve(w, r, rp)
		}),
	}
	if p.front.ca != nil {
		cert, err := p.front.ca.ServerCertificate()
		if err != nil {
			return nil, err
		}
		p.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
		go func() { _ = p.srv.ServeTLS(l, "", "") }()
	} else {
		go func() { _ = p.srv.Serve(l) }()
	}
	return p, nil
}

// serve applies faults and the front's behaviours to one request, then
// passes it to rp.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request, rp *httputil.ReverseProxy) {
	f, ok := p.takeFault(r)
	if ok && (f.Delay > 0 || f.Hold != nil) {
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
			return
		}
		if f.Hold != nil {
			select {
			case <-f.Hold:
			case <-r.Context().Done():
				return
			}
		}
	}
	if ok && f.Truncate && f.Status == 0 {
		r = r.WithContext(context.WithValue(r.Context(), truncateKey{}, true))
	}
	if ok && !f.passes() {
		if f.Status != 0 {
			_, _ = io.Copy(io.Discard, r.Body)
			if f.RetryAfter != "" {
				w.Header().Set("Retry-After", f.RetryAfter)
			}
			http.Error(w, "injected fault", f.Status)
			return
		}
		// Read part of the body, then drop the connection mid-request.
		_, _ = io.CopyN(io.Discard, r.Body, 64<<10)
		hangUp(w)
		return
	}
	st := p.begin(r)
	r = r.WithContext(context.WithValue(r.Context(), reqKey{}, st))
	if r.Body != nil && r.Body != http.NoBody {
		st.body = r.Body
		r.Body = &frontBody{st: st}
	}
	if st.dropAt >= 0 {
		st.discard(st.dropAt)
		hangUp(w)
		return
	}
	if st.cutAt >= 0 {
		r.ContentLength = -1 // the registry gets a whole, shorter request
		r.Header.Del("Content-Length")
	}
	if st.refuse != 0 {
		st.drain()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(st.refuse)
		code, msg := "SIZE_INVALID", "request body over the front's cap"
		if st.refuse == http.StatusRequestedRangeNotSatisfiable {
			code, msg = "BLOB_UPLOAD_INVALID", "this front takes each blob in one request: chunked upload refused"
		}
		_, _ = fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`+"\n", code, msg)
		return
	}
	rp.ServeHTTP(w, r)
}

// commit attributes a session's bytes to the digest its PUT names, once the
// registry has answered the PUT (and before the client sees the answer).
func (p *Proxy) commit(r *http.Request) {
	st, _ := r.Context().Value(reqKey{}).(*reqState)
	if st == nil || !st.upload || r.Method != http.MethodPut || st.outcome != 0 {
		return
	}
	p.mu.Lock()
	p.committed[r.URL.Query().Get("digest")] += p.sessions[st.session]
	delete(p.sessions, st.session)
	delete(p.patches, st.session)
	p.mu.Unlock()
}

// hangUp closes the client's connection without a response.
func hangUp(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			_ = c.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// upstreamError answers a request whose trip to the registry failed: 413
// when the body cap cut it, a dropped connection after CutPatchAfter,
// else 502 as a reverse proxy does.
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	st, _ := r.Context().Value(reqKey{}).(*reqState)
	switch {
	case st != nil && st.outcome == http.StatusRequestEntityTooLarge:
		st.drain()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		_, _ = io.WriteString(w, `{"errors":[{"code":"SIZE_INVALID","message":"request body over the front's cap"}]}`+"\n")
	case st != nil && st.outcome == outcomeDropped:
		hangUp(w)
	default:
		p.commit(r)
		w.WriteHeader(http.StatusBadGateway)
	}
}

// rewriteHeaders points Location and the token realm of challenges (on
// the registry's host) at the proxy, so that clients come back through it.
func (p *Proxy) rewriteHeaders(h http.Header) {
	self, them := p.scheme+"://"+p.Host, p.scheme+"://"+p.upstream
	if loc := h.Get("Location"); strings.HasPrefix(loc, them+"/") {
		h.Set("Location", self+strings.TrimPrefix(loc, them))
	}
	for i, v := range h.Values("WWW-Authenticate") {
		h["Www-Authenticate"][i] = strings.ReplaceAll(v, `realm="`+them+`/`, `realm="`+self+`/`)
	}
}

// Close stops the proxy.
func (p *Proxy) Close() { _ = p.srv.Close() }

func (p *Proxy) add(m *map[string]int64, key string, n int64) {
	p.mu.Lock()
	(*m)[key] += n
	p.mu.Unlock()
}

// AcceptCogToken makes the proxy answer Replicate's token exchange
// (POST /cog/v1/verify-token, form field token) with user for token, as
// r8.im does on the registry's own host.
func (p *Proxy) AcceptCogToken(token, user string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cogTokens == nil {
		p.cogTokens = map[string]string{}
	}
	p.cogTokens[token] = user
}

func (p *Proxy) verifyToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.ParseForm() != nil {
		http.Error(w, "POST a form with a token", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	user, ok := p.cogTokens[r.PostForm.Get("token")]
	p.mu.Unlock()
	if !ok {
		http.Error(w, `{"detail": "invalid token"}`, http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"username": "`+user+`"}`)
}

// SetFaultFunc makes decide choose the fault of every request (after the
// queued faults of Inject, which come first); ok false lets the request
// through. Count and the matching fields of its Fault are ignored. nil
// removes it. decide runs concurrently and must be safe for that.
func (p *Proxy) SetFaultFunc(decide func(r *http.Request) (f Fault, ok bool)) {
	p.mu.Lock()
	p.faultFunc = decide
	p.mu.Unlock()
}

// Injected counts the faults applied so far (queued and decided).
func (p *Proxy) Injected() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.injected
}

// Inject queues a fault.
func (p *Proxy) Inject(f Fault) {
	p.mu.Lock()
	p.faults = append(p.faults, f)
	p.mu.Unlock()
}

func (p *Proxy) takeFault(r *http.Request) (Fault, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.faults {
		f := &p.faults[i]
		if f.Count > 0 && r.Method == f.Method && strings.Contains(r.URL.Path, f.PathContains) {
			f.Count--
			p.injected++
			return *f, true
		}
	}
	decide := p.faultFunc
	if decide == nil {
		return Fault{}, false
	}
	p.mu.Unlock() // decide may take its time, or lock its own state
	f, ok := decide(r)
	p.mu.Lock()
	if ok {
		p.injected++
	}
	return f, ok
}

// truncatedBody ends a response body early with an error, which makes the
// reverse proxy abort the connection: the client sees a short body.
type truncatedBody struct {
	io.ReadCloser
	left int64
}

func (b *truncatedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errors.New("injected truncation")
	}
	n, err := b.ReadCloser.Read(p[:min(int64(len(p)), b.left)])
	b.left -= int64(n)
	return n, err
}

// Downloaded returns the bytes of blob digest served through the proxy.
func (p *Proxy) Downloaded(digest string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.downloaded[digest]
}

// Uploaded returns the blob bytes sent through the proxy.
func (p *Proxy) Uploaded() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.uploaded
}

// Blobs returns, per blob digest, the bytes that crossed the proxy: served
// by GET, or uploaded in a session its PUT committed. Bytes of sessions not
// committed (yet) are under "uncommitted".
func (p *Proxy) Blobs() map[string]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := maps.Clone(p.downloaded)
	for d, n := range p.committed {
		out[d] += n
	}
	for _, n := range p.sessions {
		out["uncommitted"] += n
	}
	return out
}

// Reset zeroes the counters.
func (p *Proxy) Reset() {
	p.mu.Lock()
	p.downloaded, p.uploaded = map[string]int64{}, 0
	p.sessions, p.committed = map[string]int64{}, map[string]int64{}
	p.mu.Unlock()
}

type countBody struct {
	io.ReadCloser
	add func(int64)
}

func (c *countBody) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	c.add(int64(n))
	return n, err
}
