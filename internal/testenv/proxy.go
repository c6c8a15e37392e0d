package testenv

import (
	"context"
	"errors"
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
}

// Throttle slows blob uploads through the proxy to bytesPerSec.
func (p *Proxy) Throttle(bytesPerSec int64) {
	p.mu.Lock()
	p.throttle = bytesPerSec
	p.mu.Unlock()
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
// closed when the test ends.
func CountingProxy(t testing.TB, upstream string) *Proxy {
	t.Helper()
	p, err := NewProxy(upstream)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// NewProxy is CountingProxy outside a test (make bench); Close stops it.
func NewProxy(upstream string) (*Proxy, error) {
	p := &Proxy{downloaded: map[string]int64{}, sessions: map[string]int64{}, committed: map[string]int64{}}
	target := &url.URL{Scheme: "http", Host: upstream}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0) // injected faults make noise by design
	rp.ModifyResponse = func(resp *http.Response) error {
		req := resp.Request
		if req.Context().Value(truncateKey{}) != nil {
			left := min(resp.ContentLength/2, 64<<10)
			if resp.ContentLength < 0 {
				left = 64 << 10
			}
			resp.Body = &truncatedBody{ReadCloser: resp.Body, left: left}
		}
		if req.Method == http.MethodGet && resp.StatusCode == http.StatusOK && strings.Contains(req.URL.Path, "/blobs/sha256:") {
			resp.Body = &countBody{ReadCloser: resp.Body, add: func(n int64) { p.add(&p.downloaded, path.Base(req.URL.Path), n) }}
		}
		return nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/cog/v1/verify-token" {
			p.verifyToken(w, r)
			return
		}
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
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					_ = c.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		}
		upload := (r.Method == http.MethodPatch || r.Method == http.MethodPut) && strings.Contains(r.URL.Path, "/blobs/uploads/")
		session := path.Base(r.URL.Path)
		if upload && r.Body != nil {
			r.Body = &countBody{ReadCloser: r.Body, add: func(n int64) {
				p.mu.Lock()
				p.uploaded += n
				p.sessions[session] += n
				rate := p.throttle
				p.mu.Unlock()
				if rate > 0 {
					time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
				}
			}}
		}
		rp.ServeHTTP(w, r)
		if upload && r.Method == http.MethodPut {
			// The PUT commits the session's bytes under their digest.
			p.mu.Lock()
			p.committed[r.URL.Query().Get("digest")] += p.sessions[session]
			delete(p.sessions, session)
			p.mu.Unlock()
		}
	})}
	go func() { _ = p.srv.Serve(l) }()
	p.Host = l.Addr().String()
	return p, nil
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
