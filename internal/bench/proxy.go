package bench

import (
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"strings"
	"sync"
)

// countingProxy sits in front of the registry and counts, per blob digest,
// the bytes that cross it (blob downloads and upload bodies): the
// registry-side evidence of what an operation moved, independent of what
// r8im reports about itself.
type countingProxy struct {
	host string
	srv  *http.Server

	mu       sync.Mutex
	blobs    map[string]int64 // digest → bytes downloaded or uploaded
	sessions map[string]int64 // upload session → bytes not yet committed
}

func startProxy(upstream string) (*countingProxy, error) {
	p := &countingProxy{blobs: map[string]int64{}, sessions: map[string]int64{}}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: upstream})
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet && strings.Contains(resp.Request.URL.Path, "/blobs/sha256:") {
			digest := path.Base(resp.Request.URL.Path)
			resp.Body = &countingBody{ReadCloser: resp.Body, add: func(n int64) { p.add(false, digest, n) }}
		}
		return nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.host = l.Addr().String()
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upload := (r.Method == http.MethodPatch || r.Method == http.MethodPut) && strings.Contains(r.URL.Path, "/blobs/uploads/") && r.Body != nil
		if !upload {
			rp.ServeHTTP(w, r)
			return
		}
		session := path.Base(r.URL.Path)
		r.Body = &countingBody{ReadCloser: r.Body, add: func(n int64) { p.add(true, session, n) }}
		rp.ServeHTTP(w, r)
		if r.Method == http.MethodPut {
			// The PUT commits the session's bytes under their digest.
			p.mu.Lock()
			p.blobs[r.URL.Query().Get("digest")] += p.sessions[session]
			delete(p.sessions, session)
			p.mu.Unlock()
		}
	})}
	go func() { _ = p.srv.Serve(l) }()
	return p, nil
}

// add counts n bytes for a blob digest, or for an upload session.
func (p *countingProxy) add(session bool, key string, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if session {
		p.sessions[key] += n
	} else {
		p.blobs[key] += n
	}
}

func (p *countingProxy) reset() {
	p.mu.Lock()
	p.blobs, p.sessions = map[string]int64{}, map[string]int64{}
	p.mu.Unlock()
}

// moved returns the bytes of every blob that crossed the proxy, and of
// those whose digest is not in except (configs, to count layers only).
func (p *countingProxy) moved(except map[string]bool) (all, rest int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for d, n := range p.blobs {
		all += n
		if !except[d] {
			rest += n
		}
	}
	for _, n := range p.sessions {
		all += n
		rest += n
	}
	return all, rest
}

func (p *countingProxy) close() { _ = p.srv.Close() }

type countingBody struct {
	io.ReadCloser
	add func(int64)
}

func (c *countingBody) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	if n > 0 {
		c.add(int64(n))
	}
	return n, err
}
