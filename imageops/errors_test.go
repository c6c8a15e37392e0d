package imageops_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/r8im/r8im/imageops"
)

// TestRegistryErrorsUnwrap: a registry's error reaches callers as
// go-containerregistry's *transport.Error (errors.As) under imageops'
// sentinel, with the text the registry wrote filtered.
func TestRegistryErrorsUnwrap(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no such \u001b[31mmanifest\u0007"}]}`))
	}))
	defer srv.Close()
	_, err := imageops.Layers(context.Background(), strings.TrimPrefix(srv.URL, "http://")+"/acme/base:v1")
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusNotFound || !errors.Is(err, imageops.ErrNotFound) {
		t.Fatalf("error %v; want ErrNotFound wrapping a *transport.Error with status 404", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "no such manifest") || strings.ContainsAny(msg, "\x1b\x07") {
		t.Errorf("error %q; want the registry's message without its escapes", msg)
	}
}
