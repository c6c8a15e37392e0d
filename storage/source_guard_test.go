package storage

import (
	"bufio"
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

	"github.com/r8im/r8im/config"
)

// loopbackNetwork allows the test servers, all on loopback.
func loopbackNetwork(idle time.Duration) *config.Network {
	return &config.Network{IdleTimeout: idle, AllowPrivateNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
}

// guardedSources are Sources with their default (guarded) http client.
func guardedSources(t *testing.T, n *config.Network) *Sources {
	t.Helper()
	opts := []SourceOption{}
	if n != nil {
		opts = append(opts, WithNetwork(n))
	}
	s, err := NewSources(context.Background(), config.S3{ChunkSize: 256 << 10, Concurrency: 2}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	s.backoff = 5 * time.Millisecond
	return s
}

// TestHTTPSourceGuards: the default client of https:// and http:// sources
// refuses what an event-provided URL must not do, permanently, and keeps
// what the server wrote out of the error.
func TestHTTPSourceGuards(t *testing.T) {
	data := randomBytes(300<<10, 9)
	var targetHits atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		targetHits.Add(1)
		_, _ = w.Write(data)
	}))
	defer target.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/w.tar", http.StatusFound)
	}))
	defer redirector.Close()
	sameHost := httptest.NewServer(&fileServer{ranges: true, etag: `"v"`, data: data})
	defer sameHost.Close()
	moved := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/old.tar" {
			http.Redirect(w, r, "/weights.tar", http.StatusMovedPermanently)
			return
		}
		(&fileServer{ranges: true, etag: `"v"`, data: data}).ServeHTTP(w, r)
	}))
	defer moved.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(sameHost.URL, "http://"))

	t.Run("redirect to another host", func(t *testing.T) {
		_, _, err := guardedSources(t, loopbackNetwork(0)).Open(context.Background(), redirector.URL+"/w.tar")
		if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "same scheme and host") {
			t.Fatalf("error %v; want ErrDenied for a redirect off the host", err)
		}
		if targetHits.Load() != 0 {
			t.Errorf("the redirect's target got %d requests", targetHits.Load())
		}
	})
	t.Run("redirect on the same host", func(t *testing.T) {
		rc, _, err := guardedSources(t, loopbackNetwork(0)).Open(context.Background(), moved.URL+"/old.tar")
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if got, err := io.ReadAll(rc); err != nil || len(got) != len(data) {
			t.Fatalf("read %d bytes, %v", len(got), err)
		}
	})
	t.Run("a name resolving to loopback, not allowed", func(t *testing.T) {
		_, _, err := guardedSources(t, nil).Open(context.Background(), "http://localhost:"+port+"/weights.tar")
		if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "loopback") || !strings.Contains(err.Error(), "R8IM_ALLOW_PRIVATE_NETWORKS") {
			t.Fatalf("error %v; want ErrDenied naming the loopback address and the setting", err)
		}
	})
	t.Run("a stalled body", func(t *testing.T) {
		done := make(chan struct{})
		stall := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000000")
			_, _ = w.Write(make([]byte, 1000))
			w.(http.Flusher).Flush()
			select {
			case <-done:
			case <-r.Context().Done():
			}
		}))
		defer stall.Close()
		defer close(done)
		rc, _, err := guardedSources(t, loopbackNetwork(200*time.Millisecond)).Open(context.Background(), stall.URL+"/w.tar")
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		_, err = io.Copy(io.Discard, rc)
		if err == nil || !strings.Contains(err.Error(), "idle timeout") || !strings.Contains(err.Error(), strings.TrimPrefix(stall.URL, "http://")) {
			t.Fatalf("error %v; want the idle timeout, naming the host", err)
		}
	})
	t.Run("a server that answers garbage", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
						return
					}
					_, _ = io.WriteString(c, "\x1b]0;pwned\x07SSH-2.0-"+strings.Repeat("A", 100<<10)+"\r\n\r\n")
				}()
			}
		}()
		_, _, err = guardedSources(t, loopbackNetwork(0)).Open(context.Background(), "http://"+l.Addr().String()+"/w.tar")
		if err == nil {
			t.Fatal("opened")
		}
		if msg := err.Error(); strings.ContainsAny(msg, "\x1b\x07") || len(msg) > 2048 {
			t.Fatalf("error of %d bytes holds what the server wrote unfiltered: %.300q", len(msg), msg)
		}
	})
}
