package testenv

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"
)

// The request-body side of Proxy: counting, the body cap, the per-connection
// bandwidth cap, chunk refusal and the mid-PATCH drop.

type (
	connKey struct{}
	reqKey  struct{}
)

const (
	bandwidthBurst = 64 << 10 // bytes a connection may send at once
	outcomeDropped = 1        // reqState.outcome of a dropped connection
)

var (
	errTooLarge = errors.New("testenv proxy: request body over the cap")
	errCut      = errors.New("testenv proxy: response dropped after a cut PATCH")
	errAborted  = errors.New("testenv proxy: request aborted")
)

// reqState is one request's body as the proxy sees it.
type reqState struct {
	p       *Proxy
	ctx     context.Context
	bucket  *bucket
	body    io.ReadCloser // the client's body; nil without one
	upload  bool          // a PATCH or PUT to /blobs/uploads/
	session string

	// Set by begin, under p.mu.
	cap    int64 // body cap in force for this request; 0 none
	dropAt int64 // read exactly this many bytes, forward nothing, drop; -1 none
	cutAt  int64 // forward exactly this many bytes as a whole request, then drop; -1 none
	refuse int   // 413 or 416 decided from the headers: nothing is forwarded

	read    int64 // bytes read from the client
	cut     bool  // the body was ended at cutAt
	outcome int   // 0, 413 (cut by the cap) or outcomeDropped
}

func (p *Proxy) begin(r *http.Request) *reqState {
	bk, _ := r.Context().Value(connKey{}).(*bucket)
	st := &reqState{p: p, ctx: r.Context(), bucket: bk, dropAt: -1, cutAt: -1,
		upload:  (r.Method == http.MethodPatch || r.Method == http.MethodPut) && strings.Contains(r.URL.Path, "/blobs/uploads/"),
		session: path.Base(r.URL.Path)}
	patch := st.upload && r.Method == http.MethodPatch
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.Requests++
	p.stats.LargestBody = max(p.stats.LargestBody, r.ContentLength)
	st.cap = p.front.bodyCap
	switch {
	case st.cap > 0 && r.ContentLength > st.cap:
		st.refuse = http.StatusRequestEntityTooLarge
		p.stats.TooLarge++
	case p.front.refuseChunks && patch && (r.Header.Get("Content-Range") != "" || p.patches[st.session] > 0):
		st.refuse = http.StatusRequestedRangeNotSatisfiable
		p.stats.RefusedChunks++
	case patch && p.front.dropAfter >= 0 && (r.ContentLength > p.front.dropAfter || r.ContentLength < 0):
		st.dropAt, p.front.dropAfter = p.front.dropAfter, -1
		p.stats.Dropped++
	case patch && p.front.cutAfter >= 0 && (r.ContentLength > p.front.cutAfter || r.ContentLength < 0):
		st.cutAt, p.front.cutAfter = p.front.cutAfter, -1
		p.stats.Dropped++
	}
	if patch {
		p.patches[st.session]++
	}
	return st
}

// readRaw reads from the client's body, counting and pacing what it gets.
func (st *reqState) readRaw(b []byte) (int, error) {
	n, err := st.body.Read(b)
	if n > 0 {
		st.count(n)
	}
	return n, err
}

// drain reads the rest of a refused body, so that the client, done
// sending, reads the answer.
func (st *reqState) drain() { st.discard(-1) }

// discard reads and drops n bytes of the body (all of it if n < 0).
func (st *reqState) discard(n int64) {
	if st.body == nil {
		return
	}
	buf := make([]byte, 32<<10)
	for n != 0 {
		want := int64(len(buf))
		if n > 0 {
			want = min(want, n)
		}
		got, err := st.readRaw(buf[:want])
		if n > 0 {
			n -= int64(got)
		}
		if err != nil {
			return
		}
	}
}

func (st *reqState) count(n int) {
	p := st.p
	p.mu.Lock()
	st.read += int64(n)
	p.stats.LargestBody = max(p.stats.LargestBody, st.read)
	rate := p.throttle
	if st.upload {
		p.uploaded += int64(n)
		p.sessions[st.session] += int64(n)
	} else {
		rate = 0
	}
	p.mu.Unlock()
	if rate > 0 {
		time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
	}
	p.pace(st.ctx, st.bucket, n)
}

// frontBody is the body the reverse proxy forwards: the client's, cut by
// the cap or the drop.
type frontBody struct{ st *reqState }

func (f *frontBody) Read(b []byte) (int, error) {
	st := f.st
	if st.outcome != 0 {
		return 0, errAborted
	}
	limit := int64(len(b))
	if st.cap > 0 {
		limit = min(limit, st.cap+1-st.read) // one byte past the cap tells
	}
	if st.cutAt >= 0 {
		if st.read >= st.cutAt {
			st.cut = true
			st.forwarded()
			return 0, io.EOF
		}
		limit = min(limit, st.cutAt-st.read)
	}
	n, err := st.readRaw(b[:min(limit, bandwidthBurst)])
	if st.cap > 0 && st.read > st.cap {
		st.outcome = http.StatusRequestEntityTooLarge
		st.p.mu.Lock()
		st.p.stats.TooLarge++
		st.p.mu.Unlock()
		return n - int(st.read-st.cap), errTooLarge
	}
	if err == io.EOF {
		st.forwarded()
	}
	return n, err
}

// forwarded records a body passed on whole. The registry reads a body to
// its end before answering, so this happens before the client sees an
// answer.
func (st *reqState) forwarded() {
	st.p.mu.Lock()
	st.p.stats.LargestForwarded = max(st.p.stats.LargestForwarded, st.read)
	st.p.mu.Unlock()
}

// Close leaves the client's body to the server, which may still drain it.
func (f *frontBody) Close() error { return nil }

// bucket is one connection's token bucket for ProxyConnBandwidth.
type bucket struct {
	mu      sync.Mutex
	started bool
	tokens  float64
	last    time.Time
}

// pace takes n bytes from the connection's bucket, waiting for them when
// the bucket is empty.
func (p *Proxy) pace(ctx context.Context, b *bucket, n int) {
	p.mu.Lock()
	rate := float64(p.front.connRate)
	p.mu.Unlock()
	if rate <= 0 || b == nil {
		return
	}
	b.mu.Lock()
	now := p.now()
	if !b.started {
		b.started, b.tokens, b.last = true, bandwidthBurst, now
	}
	b.tokens = min(bandwidthBurst, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	b.tokens -= float64(n)
	var wait time.Duration
	if b.tokens < 0 {
		wait = time.Duration(math.Ceil(-b.tokens / rate * float64(time.Second)))
	}
	b.mu.Unlock()
	if wait > 0 {
		p.sleep(ctx, wait)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// withClock replaces the bandwidth cap's clock and wait (for tests).
func withClock(now func() time.Time, sleep func(context.Context, time.Duration)) ProxyOption {
	return func(c *frontConfig) { c.now, c.sleep = now, sleep }
}
