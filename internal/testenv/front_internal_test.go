package testenv

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptrace"
	"sync"
	"testing"
	"time"
)

// fakeClock moves only when the proxy waits, so the waits add up to
// exactly what the token bucket charges.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	slept time.Duration
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) sleep(_ context.Context, d time.Duration) {
	c.mu.Lock()
	c.t, c.slept = c.t.Add(d), c.slept+d
	c.mu.Unlock()
}

func (c *fakeClock) total() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.slept
}

// The bandwidth cap is a token bucket per connection: a body of rate+burst
// bytes on a fresh connection waits one second; the same again on that
// connection, whose bucket is empty, waits for every byte; a new
// connection starts with a full bucket.
func TestProxyConnBandwidthPerConnection(t *testing.T) {
	const rate = 1 << 20
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	reg := Registry(t)
	p := CountingProxy(t, reg.Host, ProxyConnBandwidth(rate), withClock(clock.now, clock.sleep))
	body := bytes.Repeat([]byte{1}, rate+bandwidthBurst)
	keep := &http.Client{Transport: &http.Transport{}}
	send := func(c *http.Client) (reused bool) {
		t.Helper()
		resp, err := c.Post("http://"+p.Host+"/v2/front/bw/blobs/uploads/", "", nil)
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("starting an upload: %v %v", resp, err)
		}
		resp.Body.Close()
		loc, err := resp.Location()
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPatch, loc.String(), bytes.NewReader(body))
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
		}))
		if resp, err = c.Do(req); err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("PATCH: %v %v", resp, err)
		}
		_, _ = bytes.NewBuffer(nil).ReadFrom(resp.Body)
		resp.Body.Close()
		return reused
	}
	exact := func(what string, got, want time.Duration) {
		t.Helper()
		if d := got - want; d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("%s: waited %v, want %v", what, got, want)
		}
	}
	send(keep)
	exact("fresh connection", clock.total(), time.Second)
	if !send(keep) {
		t.Fatal("the second request did not reuse the connection")
	}
	exact("same connection again", clock.total()-time.Second, time.Second+time.Second*bandwidthBurst/rate)
	before := clock.total()
	send(&http.Client{Transport: &http.Transport{}})
	exact("new connection", clock.total()-before, time.Second)
	if got, want := p.Uploaded(), int64(3*len(body)); got != want {
		t.Errorf("uploaded %d, want %d", got, want)
	}
}
