package testenv

import (
	"io"
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
	faults     []Fault
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
type Fault struct {
	Method       string
	PathContains string
	Status       int
	Count        int
	RetryAfter   string // Retry-After header sent with Status, if any
}

// CountingProxy starts a proxy to the registry at upstream (host:port),
// closed when the test ends.
func CountingProxy(t testing.TB, upstream string) *Proxy {
	t.Helper()
	p := &Proxy{downloaded: map[string]int64{}}
	target := &url.URL{Scheme: "http", Host: upstream}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		req := resp.Request
		if req.Method == http.MethodGet && resp.StatusCode == http.StatusOK && strings.Contains(req.URL.Path, "/blobs/sha256:") {
			resp.Body = &countBody{ReadCloser: resp.Body, add: func(n int64) { p.add(&p.downloaded, path.Base(req.URL.Path), n) }}
		}
		return nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/cog/v1/verify-token" {
			p.verifyToken(w, r)
			return
		}
		if f, ok := p.takeFault(r); ok {
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
		if (r.Method == http.MethodPatch || r.Method == http.MethodPut) && strings.Contains(r.URL.Path, "/blobs/uploads/") && r.Body != nil {
			r.Body = &countBody{ReadCloser: r.Body, add: func(n int64) {
				p.mu.Lock()
				p.uploaded += n
				rate := p.throttle
				p.mu.Unlock()
				if rate > 0 {
					time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
				}
			}}
		}
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	p.Host = l.Addr().String()
	return p
}

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
			return *f, true
		}
	}
	return Fault{}, false
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

// Reset zeroes the counters.
func (p *Proxy) Reset() {
	p.mu.Lock()
	p.downloaded, p.uploaded = map[string]int64{}, 0
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
