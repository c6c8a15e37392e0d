package netguard_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/r8im/r8im/internal/netguard"
)

// unboundedClient follows redirects as go-containerregistry's clients do
// since v0.22.1: with a CheckRedirect that never stops a loop. Only the
// transport can.
func unboundedClient(rt http.RoundTripper) *http.Client {
	return &http.Client{Transport: rt, CheckRedirect: func(*http.Request, []*http.Request) error { return nil }}
}

func TestRedirectsAreBoundedUnderAnyClient(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Redirect(w, r, r.URL.Path, http.StatusFound) // to itself, forever
	}))
	defer srv.Close()
	for _, tc := range []struct {
		name string
		max  int
		want int64
	}{
		{"default", 0, netguard.DefaultMaxRedirects + 1},
		{"three", 3, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hits.Store(0)
			o := netguard.Options{MaxRedirects: tc.max}
			_, err := unboundedClient(netguard.Wrap(netguard.NewTransport(o), o)).Get(srv.URL + "/v2/x/manifests/latest")
			if !errors.Is(err, netguard.ErrTooManyRedirects) {
				t.Fatalf("error %v; want ErrTooManyRedirects", err)
			}
			if !strings.Contains(err.Error(), "stopped after") {
				t.Errorf("error %q does not say it stopped", err)
			}
			if got := hits.Load(); got != tc.want {
				t.Errorf("the server saw %d requests, want %d (the first and each redirect allowed)", got, tc.want)
			}
		})
	}
}

func TestRedirectPolicy(t *testing.T) {
	var otherHits atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherHits.Add(1)
		_, _ = io.WriteString(w, "other")
	}))
	defer other.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/to-http":
			http.Redirect(w, r, other.URL+"/x?sig=SECRET", http.StatusFound)
		case "/same":
			http.Redirect(w, r, "/final", http.StatusFound)
		default:
			_, _ = io.WriteString(w, "final")
		}
	}))
	defer tlsSrv.Close()
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/off-host":
			http.Redirect(w, r, other.URL+"/x", http.StatusFound)
		case "/same":
			http.Redirect(w, r, "/final", http.StatusTemporaryRedirect)
		default:
			_, _ = io.WriteString(w, "final")
		}
	}))
	defer plain.Close()
	roots := tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs

	for _, tc := range []struct {
		name     string
		o        netguard.Options
		url      string
		wantErr  error
		wantBody string
	}{
		{"https to http refused", netguard.Options{RootCAs: roots}, tlsSrv.URL + "/to-http", netguard.ErrRedirectRefused, ""},
		{"https same host followed", netguard.Options{RootCAs: roots, SameHost: true}, tlsSrv.URL + "/same", nil, "final"},
		{"same host: off host refused", netguard.Options{SameHost: true}, plain.URL + "/off-host", netguard.ErrRedirectRefused, ""},
		{"any host: off host followed", netguard.Options{}, plain.URL + "/off-host", nil, "other"},
		{"same host followed", netguard.Options{SameHost: true}, plain.URL + "/same", nil, "final"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			otherHits.Store(0)
			for _, client := range []struct {
				name string
				c    *http.Client
			}{
				{"NewClient", netguard.NewClient(tc.o)},
				{"Wrap under an unbounded client", unboundedClient(netguard.Wrap(netguard.NewTransport(tc.o), tc.o))},
			} {
				resp, err := client.c.Get(tc.url)
				if tc.wantErr != nil {
					if !errors.Is(err, tc.wantErr) {
						t.Fatalf("%s: error %v, want %v", client.name, err, tc.wantErr)
					}
					// The client's url.Error quotes the URL (callers redact
					// it); the refusal itself never shows a query.
					var re *netguard.RedirectError
					if !errors.As(err, &re) || strings.Contains(re.Error(), "SECRET") {
						t.Errorf("%s: %v; want a RedirectError without the redirect's query", client.name, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", client.name, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != tc.wantBody {
					t.Errorf("%s: body %q, want %q", client.name, b, tc.wantBody)
				}
			}
			if tc.wantErr != nil && otherHits.Load() != 0 {
				t.Errorf("the refused redirect's target got %d requests", otherHits.Load())
			}
		})
	}

	t.Run("no redirects", func(t *testing.T) {
		resp, err := netguard.NewClient(netguard.Options{NoRedirects: true}).Get(plain.URL + "/off-host")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound || otherHits.Load() != 0 {
			t.Errorf("status %d, %d requests to the target; want the 302 itself", resp.StatusCode, otherHits.Load())
		}
	})
}

// stallServer answers with headers and part of a body, then sends nothing
// until the test ends.
func stallServer(t *testing.T) *httptest.Server {
	t.Helper()
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000000")
		_, _ = w.Write(bytes.Repeat([]byte("x"), 1000))
		w.(http.Flusher).Flush()
		select {
		case <-done:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(done); srv.Close() })
	return srv
}

func TestIdleBodyFailsNamingTheHost(t *testing.T) {
	srv := stallServer(t)
	o := netguard.Options{IdleTimeout: 200 * time.Millisecond}
	resp, err := netguard.NewClient(o).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	var idle *netguard.IdleError
	if !errors.As(err, &idle) || n != 1000 {
		t.Fatalf("read %d bytes, error %v; want the 1000 sent, then an IdleError", n, err)
	}
	host := strings.TrimPrefix(srv.URL, "http://")
	if !strings.Contains(err.Error(), host) || !strings.Contains(err.Error(), "idle timeout") {
		t.Errorf("error %q does not name the host %s and the idle timeout", err, host)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("error %v is not a net.Error timeout: retry logic would not see it as transient", err)
	}
}

// A caller busy between reads is not the server's fault: only time spent
// waiting inside Read counts.
func TestIdleCountsOnlyTimeInRead(t *testing.T) {
	gate := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		<-gate
		_, _ = io.WriteString(w, "second")
	}))
	defer srv.Close()
	o := netguard.Options{IdleTimeout: 300 * time.Millisecond}
	resp, err := netguard.NewClient(o).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	// Busy elsewhere for longer than the idle timeout, no Read pending.
	busy := time.NewTimer(3 * o.IdleTimeout)
	<-busy.C
	close(gate)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second" {
		t.Fatalf("after a pause between reads: %q, %v; want the rest of the body", rest, err)
	}
}

func TestStalledUploadFails(t *testing.T) {
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // never reads the body
		case <-done:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(done)
	o := netguard.Options{IdleTimeout: 200 * time.Millisecond}
	body := io.LimitReader(zeros{}, 1<<30)
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/upload", body)
	req.ContentLength = 1 << 30
	_, err := netguard.NewClient(o).Do(req)
	var idle *netguard.IdleError
	if !errors.As(err, &idle) || idle.Op != "sending to" {
		t.Fatalf("error %v; want an IdleError sending to the server", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestPrivateAddressesRefused(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	for _, tc := range []struct {
		name  string
		url   string
		allow []netip.Prefix
		ok    bool
	}{
		{"a name resolving to loopback", "http://localhost:" + port, nil, false},
		{"a loopback literal", "http://127.0.0.1:" + port, nil, false},
		{"another network allowed", "http://localhost:" + port, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, false},
		{"loopback allowed", "http://localhost:" + port, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hits.Store(0)
			resp, err := netguard.NewClient(netguard.Options{GuardPrivate: true, Allow: tc.allow}).Get(tc.url)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return
			}
			var blocked *netguard.BlockedError
			if !errors.As(err, &blocked) || !errors.Is(err, netguard.ErrBlockedAddress) || blocked.Kind != "loopback" {
				t.Fatalf("error %v; want a BlockedError for a loopback address", err)
			}
			if hits.Load() != 0 {
				t.Errorf("the server got %d requests", hits.Load())
			}
		})
	}
}

func TestClassify(t *testing.T) {
	for addr, want := range map[string]string{
		"8.8.8.8": "", "2606:4700:4700::1111": "",
		"127.0.0.1": "loopback", "::1": "loopback", "::ffff:127.0.0.1": "loopback",
		"10.1.2.3": "private", "172.16.0.1": "private", "192.168.1.1": "private", "fd00::1": "private",
		"169.254.169.254": "link-local", "fe80::1": "link-local",
		"0.0.0.0": "unspecified", "::": "unspecified", "0.1.2.3": "this-network",
		"100.100.100.200": "shared (carrier-grade NAT)", "224.0.0.1": "link-local", "239.1.2.3": "multicast",
		"64:ff9b::a9fe:a9fe": "link-local", "255.255.255.255": "reserved",
	} {
		if got := netguard.Classify(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Classify(%s) = %q, want %q", addr, got, want)
		}
	}
}

func TestContextStillCancels(t *testing.T) {
	srv := stallServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	resp, err := netguard.NewClient(netguard.Options{}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	cancel()
	if _, err := io.Copy(io.Discard, resp.Body); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v after cancelling; want context.Canceled", err)
	}
}
