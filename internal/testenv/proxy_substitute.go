package testenv

import (
	"bytes"
	"compress/gzip"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// SubstitutingProxy sits in front of a registry and answers the GETs of
// chosen blobs with other bytes, as a compromised registry, mirror or CDN
// would: the body no longer matches the digest it is fetched by. Every
// other request goes to the registry unchanged.
type SubstitutingProxy struct {
	Host string // host:port to use in image references instead of the registry's

	mu     sync.Mutex
	bodies map[string][]byte // blob digest → the body served instead
	served map[string]int    // blob digest → substituted answers given
}

// SubstituteBlobs starts a SubstitutingProxy to the registry at upstream
// (host:port), closed when the test ends.
func SubstituteBlobs(t testing.TB, upstream string) *SubstitutingProxy {
	t.Helper()
	p := &SubstitutingProxy{bodies: map[string][]byte{}, served: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: upstream})
	rp.ErrorLog = log.New(io.Discard, "", 0)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		digest := path.Base(r.URL.Path)
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			p.mu.Lock()
			body, ok := p.bodies[digest]
			if ok {
				p.served[digest]++
			}
			p.mu.Unlock()
			if ok {
				w.Header().Set("Content-Type", "application/octet-stream")
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				w.Header().Set("Docker-Content-Digest", digest) // the lie
				_, _ = w.Write(body)
				return
			}
		}
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	p.Host = l.Addr().String()
	return p
}

// Substitute makes GETs of the blob digest ("sha256:…") answer body.
func (p *SubstitutingProxy) Substitute(digest string, body []byte) {
	p.mu.Lock()
	p.bodies[digest] = body
	p.mu.Unlock()
}

// Served counts the substituted answers given for digest.
func (p *SubstitutingProxy) Served(digest string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.served[digest]
}

// BlobSize is the size the manifest of ref (a linux/amd64 image) gives the
// layer digest.
func BlobSize(t testing.TB, ref, digest string) int {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatalf("reading %s: %v", ref, err)
	}
	mf, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range mf.Layers {
		if l.Digest.String() == digest {
			return int(l.Size)
		}
	}
	t.Fatalf("%s has no layer %s", ref, digest)
	return 0
}

// GzipOfSize gzips tarball, stored (not compressed), with zeros after its
// end-of-archive marker to make exactly size bytes: a substitute for a
// blob that passes a size check and fails only the digest check, after
// its entries were read.
func GzipOfSize(t testing.TB, tarball []byte, size int) []byte {
	t.Helper()
	pad := 0
	for range 10 {
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, gzip.NoCompression)
		_, _ = zw.Write(tarball)
		_, _ = zw.Write(make([]byte, pad))
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		if b.Len() == size {
			return b.Bytes()
		}
		if pad += size - b.Len(); pad < 0 {
			t.Fatalf("the substitute (%d bytes) is larger than the blob (%d)", b.Len(), size)
		}
	}
	t.Fatalf("found no stored gzip of %d bytes", size)
	return nil
}
