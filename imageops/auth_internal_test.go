package imageops

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// TestCogTokenFailureNotKept: a failed exchange (the registry was down) is
// not remembered: the next resolution asks again and succeeds, and a
// success is kept.
func TestCogTokenFailureNotKept(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(`{"username":"alice"}`))
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	k := newCogKeychain(host, "r8_token", http.DefaultTransport, authn.DefaultKeychain)
	reg, err := name.NewRegistry(host)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.ResolveContext(context.Background(), reg); err == nil || IsPermanent(err) {
		t.Fatalf("first resolution = %v; want a transient failure", err)
	}
	for i := 0; i < 2; i++ {
		a, err := k.ResolveContext(context.Background(), reg)
		if err != nil {
			t.Fatalf("resolution %d after the registry came back: %v", i+2, err)
		}
		if cfg, _ := a.Authorization(); cfg.Username != "alice" {
			t.Fatalf("user %q, want alice", cfg.Username)
		}
	}
	// (The https attempts on this plain-HTTP loopback server never reach
	// the handler.)
	if n := calls.Load(); n != 2 {
		t.Errorf("the verify endpoint answered %d times; want 2 (the failure, then one success kept)", n)
	}
}
