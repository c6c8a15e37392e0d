package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// Hostile is how a HostileRegistry misbehaves once a client asks for a
// manifest.
type Hostile string

// The hostile registries.
const (
	// RedirectLoop redirects every manifest request to itself.
	RedirectLoop Hostile = "redirect-loop"
	// HugeManifest declares a 1 GiB manifest and sends zeros for as long as
	// the client reads.
	HugeManifest Hostile = "huge-manifest"
	// EndlessManifest sends a manifest without a length that never ends.
	EndlessManifest Hostile = "endless-manifest"
	// HugeConfig serves a valid manifest whose config is declared 1 GiB.
	HugeConfig Hostile = "huge-config"
	// StalledManifest sends the headers and a few bytes, then nothing.
	StalledManifest Hostile = "stalled-manifest"
	// EscapeError answers 404 with terminal escape sequences in its
	// error message.
	EscapeError Hostile = "escape-error"
)

// Hostiles lists every hostile registry.
var Hostiles = []Hostile{RedirectLoop, HugeManifest, EndlessManifest, HugeConfig, StalledManifest, EscapeError}

// EscapeText is what EscapeError writes into its error message: an OSC
// title change, a screen clear and a colour.
const EscapeText = "\x1b]0;pwned\x07\x1b[2J\x1b[31mowned"

// HostileRegistry speaks just enough of the registry API (GET /v2/) for a
// client to ask for a manifest, then misbehaves as its Hostile says. It
// counts what it was asked and what it wrote.
type HostileRegistry struct {
	Host string // 127.0.0.1:port
	Mode Hostile

	manifests, configs, other atomic.Int64
	written                   atomic.Int64 // manifest body bytes written
}

// Manifests is how many manifest GETs it got.
func (h *HostileRegistry) Manifests() int64 { return h.manifests.Load() }

// Configs is how many GETs of the (huge) config blob it got.
func (h *HostileRegistry) Configs() int64 { return h.configs.Load() }

// Written is how many manifest body bytes it managed to write (the
// kernel's socket buffers included: an upper bound of what a client read).
func (h *HostileRegistry) Written() int64 { return h.written.Load() }

// hugeConfigDigest is the config HugeConfig's manifest names.
var hugeConfigDigest = "sha256:" + strings.Repeat("c", 64)

// NewHostileRegistry starts a hostile registry on loopback, stopped when
// the test ends (its stalled answers are released then).
func NewHostileRegistry(t testing.TB, mode Hostile) *HostileRegistry {
	t.Helper()
	h := &HostileRegistry{Mode: mode}
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
			_, _ = w.Write([]byte("{}"))
		case strings.Contains(r.URL.Path, "/manifests/"):
			h.manifests.Add(1)
			if r.Method == http.MethodHead {
				w.WriteHeader(http.StatusNotFound)
				return
			}
			h.manifest(w, r, done)
		case strings.HasSuffix(r.URL.Path, "/blobs/"+hugeConfigDigest):
			h.configs.Add(1)
			w.Header().Set("Content-Length", fmt.Sprint(1<<30))
			h.zeros(w, -1)
		default:
			h.other.Add(1)
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(func() { close(done); srv.Close() })
	h.Host = strings.TrimPrefix(srv.URL, "http://")
	return h
}

func (h *HostileRegistry) manifest(w http.ResponseWriter, r *http.Request, done <-chan struct{}) {
	const oci = "application/vnd.oci.image.manifest.v1+json"
	switch h.Mode {
	case RedirectLoop:
		http.Redirect(w, r, r.URL.Path, http.StatusFound)
	case HugeManifest:
		w.Header().Set("Content-Type", oci)
		w.Header().Set("Content-Length", fmt.Sprint(1<<30))
		h.zeros(w, 1<<30)
	case EndlessManifest:
		w.Header().Set("Content-Type", oci)
		h.zeros(w, -1)
	case HugeConfig:
		layer := "sha256:" + strings.Repeat("a", 64)
		m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},`+
			`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":%q,"size":32}]}`, oci, hugeConfigDigest, 1<<30, layer)
		sum := sha256.Sum256([]byte(m))
		w.Header().Set("Content-Type", oci)
		w.Header().Set("Docker-Content-Digest", "sha256:"+hex.EncodeToString(sum[:]))
		w.Header().Set("Content-Length", fmt.Sprint(len(m)))
		n, _ := w.Write([]byte(m))
		h.written.Add(int64(n))
	case StalledManifest:
		w.Header().Set("Content-Type", oci)
		w.Header().Set("Content-Length", "1000")
		n, _ := w.Write([]byte(`{"schemaVersion":2,`))
		h.written.Add(int64(n))
		w.(http.Flusher).Flush()
		select {
		case <-done:
		case <-r.Context().Done():
		}
	case EscapeError:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = fmt.Fprintf(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":%q}]}`, EscapeText)
	}
}

// zeros writes n zero bytes (forever when n < 0) until the client leaves.
func (h *HostileRegistry) zeros(w http.ResponseWriter, n int64) {
	buf := make([]byte, 32<<10)
	for n != 0 {
		chunk := buf
		if n > 0 && n < int64(len(chunk)) {
			chunk = chunk[:n]
		}
		k, err := w.Write(chunk)
		h.written.Add(int64(k))
		if err != nil {
			return
		}
		if n > 0 {
			n -= int64(k)
		}
	}
}

// WeightsHost is an http or https server for weights URLs, counting the
// requests it gets. It serves a file, or redirects every request.
type WeightsHost struct {
	URL    string // scheme://127.0.0.1:port
	CAFile string // https: a PEM file of its certificate, for R8IM_CA_FILE
	hits   atomic.Int64
}

// Hits is how many requests it got.
func (w *WeightsHost) Hits() int64 { return w.hits.Load() }

// ServeWeights serves the file at path (with ranges) at every URL path.
func ServeWeights(t testing.TB, path string, https bool) *WeightsHost {
	t.Helper()
	return newWeightsHost(t, https, func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, path)
	})
}

// RedirectWeights redirects every request to target (302).
func RedirectWeights(t testing.TB, target string, https bool) *WeightsHost {
	t.Helper()
	return newWeightsHost(t, https, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target, http.StatusFound)
	})
}

func newWeightsHost(t testing.TB, https bool, serve http.HandlerFunc) *WeightsHost {
	t.Helper()
	wh := &WeightsHost{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wh.hits.Add(1)
		serve(w, r)
	})
	var srv *httptest.Server
	if https {
		srv = httptest.NewTLSServer(h)
		wh.CAFile = filepath.Join(t.TempDir(), "ca.pem")
		pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
		if err := os.WriteFile(wh.CAFile, pemBytes, 0o600); err != nil {
			t.Fatal(err)
		}
	} else {
		srv = httptest.NewServer(h)
	}
	t.Cleanup(srv.Close)
	wh.URL = srv.URL
	return wh
}
