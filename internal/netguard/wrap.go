package netguard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

// IdleError is a request that failed because the connection carried no
// byte for Idle while r8im waited on the server. It is a timeout (and
// temporary) in the sense of net.Error: retrying may help.
type IdleError struct {
	Op   string // "receiving from", "sending to"
	Host string
	Idle time.Duration
}

func (e *IdleError) Error() string {
	return fmt.Sprintf("%s %s: no data for %s, the connection stalled (idle timeout)", e.Op, e.Host, e.Idle)
}

// Timeout reports true: this is a timeout.
func (e *IdleError) Timeout() bool { return true }

// Temporary reports true: a retry may succeed.
func (e *IdleError) Temporary() bool { return true }

// Wrap returns rt with o's redirect policy checked on every redirected
// request (however the client above follows redirects) and an idle
// deadline on response bodies: a Read that gets no byte for IdleTimeout
// ends the request with an *IdleError naming the host. The time between
// reads, when the caller is busy, does not count.
func Wrap(rt http.RoundTripper, o Options) http.RoundTripper {
	return &guard{rt: rt, o: o, idle: o.idle()}
}

type guard struct {
	rt   http.RoundTripper
	o    Options
	idle time.Duration
}

func (g *guard) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := g.o.checkRedirected(req); err != nil {
		if req.Body != nil {
			_ = req.Body.Close() // a RoundTripper closes the body, even on errors
		}
		return nil, err
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	resp, err := g.rt.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel(nil)
		return nil, err
	}
	if resp.Body == nil || resp.Body == http.NoBody {
		cancel(nil)
		return resp, nil
	}
	b := &idleBody{rc: resp.Body, cancel: cancel, err: &IdleError{Op: "receiving from", Host: req.URL.Host, Idle: g.idle}, idle: g.idle}
	b.timer = time.AfterFunc(time.Hour, b.fire)
	b.timer.Stop()
	resp.Body = b
	return resp, nil
}

// idleBody fails a Read that waits longer than idle for a byte, by
// cancelling the request's context (which closes the connection).
type idleBody struct {
	rc     io.ReadCloser
	cancel context.CancelCauseFunc
	err    *IdleError
	idle   time.Duration
	timer  *time.Timer
	fired  atomic.Bool
}

func (b *idleBody) fire() {
	b.fired.Store(true)
	b.cancel(b.err)
}

func (b *idleBody) Read(p []byte) (int, error) {
	if b.fired.Load() {
		return 0, b.err
	}
	b.timer.Reset(b.idle)
	n, err := b.rc.Read(p)
	b.timer.Stop()
	if b.fired.Load() && (err == nil || !errors.Is(err, io.EOF)) {
		return n, b.err
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	err := b.rc.Close()
	b.cancel(nil)
	return err
}
