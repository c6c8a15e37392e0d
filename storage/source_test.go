package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/internal/testenv"
)

// testSources returns Sources for cfg with quick retries and a client whose
// idle connections the leak checks can close.
func testSources(t testing.TB, cfg config.S3) (*Sources, *http.Transport) {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableCompression = true
	t.Cleanup(tr.CloseIdleConnections)
	s, err := NewSources(context.Background(), cfg, WithHTTPClient(&http.Client{Transport: tr}))
	if err != nil {
		t.Fatal(err)
	}
	s.backoff = 5 * time.Millisecond
	return s, tr
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	_, _ = r.Read(b)
	return b
}

// readAll reads rc to its end and returns the SHA-256 and count of what it
// delivered.
func readAll(rc io.Reader) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, rc)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, n, err
}

func fileSHA256(t testing.TB, path string) ([32]byte, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sum, n, err := readAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return sum, n
}

// mustRead opens url and checks that it delivers want.
func mustRead(t *testing.T, s *Sources, url string, want []byte) io.ReadCloser {
	t.Helper()
	rc, size, err := s.Open(context.Background(), url)
	if err != nil {
		t.Fatalf("Open(%s): %v", url, err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	if size != int64(len(want)) {
		t.Errorf("size = %d, want %d", size, len(want))
	}
	sum, n, err := readAll(rc)
	if err != nil {
		t.Fatalf("reading %s: %v", url, err)
	}
	if n != int64(len(want)) || sum != sha256.Sum256(want) {
		t.Fatalf("read %d bytes (sha256 %x), want %d (sha256 %x)", n, sum, len(want), sha256.Sum256(want))
	}
	return rc
}

// innerReader unwraps the verifier Open returns.
func innerReader(t testing.TB, rc io.ReadCloser) io.ReadCloser {
	t.Helper()
	v, ok := rc.(*verifier)
	if !ok {
		t.Fatalf("Open returned %T, want *verifier", rc)
	}
	return v.r
}

// leakCheck records the goroutines at the start of a test; the returned
// function waits (briefly) until every goroutine started since has ended,
// after closing the idle connections of the transports given, and fails the test otherwise.
// Goroutines running storage code (not tests) must be gone altogether.
func leakCheck(t *testing.T, idle ...interface{ CloseIdleConnections() }) func() {
	t.Helper()
	before := runtime.NumGoroutine()
	return func() {
		t.Helper()
		testenv.Eventually(t, 5*time.Second, "the goroutines started by the test to end", func() (bool, string) {
			for _, c := range idle {
				c.CloseIdleConnections()
			}
			n, ours := runtime.NumGoroutine(), storageGoroutines()
			return n <= before && len(ours) == 0, fmt.Sprintf("%d goroutines now, %d before the test; %d of package storage outlived the reader:\n%s",
				n, before, len(ours), strings.Join(ours, "\n\n"))
		})
	}
}

// storageGoroutines returns the stacks of goroutines running code of this
// package's non-test files.
func storageGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var ours []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, line := range strings.Split(g, "\n") {
			line = strings.TrimSpace(line)
			if strings.Contains(line, "/storage/source") && !strings.Contains(line, "_test.go") {
				ours = append(ours, g)
				break
			}
		}
	}
	return ours
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://bucket.s3.amazonaws.com/w.tar?X-Amz-Signature=abc&X-Amz-Credential=AKIA": "https://bucket.s3.amazonaws.com/w.tar?REDACTED",
		"https://user:pw@host/a/b#frag":    "https://REDACTED@host/a/b?REDACTED",
		"http://host":                      "http://host",
		"http://host/":                     "http://host/",
		"https://host/p?":                  "https://host/p?REDACTED",
		"https://h/x?sig=1@evil.com/p?q=2": "https://h/x?REDACTED",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFileSource(t *testing.T) {
	s, _ := testSources(t, config.S3{ChunkSize: 1 << 20, Concurrency: 2})
	dir := t.TempDir()
	data := randomBytes(3<<20+17, 1)
	path := filepath.Join(dir, "weights v1.tar")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("file URL", func(t *testing.T) { mustRead(t, s, "file://"+strings.ReplaceAll(path, " ", "%20"), data) })
	t.Run("file URL with localhost", func(t *testing.T) { mustRead(t, s, "file://localhost"+path, data) })
	t.Run("absolute path", func(t *testing.T) { mustRead(t, s, path, data) })
	t.Run("relative path", func(t *testing.T) {
		t.Chdir(dir)
		mustRead(t, s, "weights v1.tar", data)
		mustRead(t, s, "./weights v1.tar", data)
	})
	t.Run("empty file", func(t *testing.T) {
		p := filepath.Join(dir, "empty")
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		mustRead(t, s, p, nil)
	})
	t.Run("file shrinks while read", func(t *testing.T) {
		p := filepath.Join(dir, "shrinks")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		rc, _, err := s.Open(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if err := os.Truncate(p, 1000); err != nil {
			t.Fatal(err)
		}
		if _, _, err := readAll(rc); !errors.Is(err, ErrShort) {
			t.Fatalf("reading a file truncated under the reader: %v, want ErrShort", err)
		}
	})
	for _, tc := range []struct {
		name, url string
		want      error
		mention   string
	}{
		{"directory", dir, ErrInvalidURL, "directory"},
		{"directory URL", "file://" + dir, ErrInvalidURL, "directory"},
		{"missing", filepath.Join(dir, "nope.tar"), ErrNotFound, "nope.tar"},
		{"missing relative", "nope.tar", ErrNotFound, "nope.tar"},
		{"two slashes", "file://weights.tar", ErrInvalidURL, "three slashes"},
		{"query", "file://" + path + "?x=1", ErrInvalidURL, "query"},
		{"device", "/dev/null", ErrInvalidURL, "not a regular file"},
		{"empty URL", "", ErrInvalidURL, "empty"},
		{"unknown scheme", "gs://bucket/weights.tar", ErrInvalidURL, `"gs"`},
		{"path with ://", "runs/a://b.tar", ErrNotFound, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, _, err := s.Open(context.Background(), tc.url)
			if err == nil {
				rc.Close()
				t.Fatalf("Open(%q) succeeded", tc.url)
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("Open(%q) = %v; want %v mentioning %q", tc.url, err, tc.want, tc.mention)
			}
		})
	}
	t.Run("unreadable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Log("running as root: permissions are not enforced, checking the error mapping only")
			return
		}
		p := filepath.Join(dir, "secret.tar")
		if err := os.WriteFile(p, data[:10], 0); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Open(context.Background(), p); !errors.Is(err, ErrDenied) {
			t.Fatalf("Open(unreadable) = %v, want ErrDenied", err)
		}
	})
}

// fileServer serves data with http.ServeContent (ranges, ETag and If-Match)
// and lets a test swap the content, fail requests or count them.
type fileServer struct {
	mu       sync.Mutex
	data     []byte
	etag     string
	ranges   bool // false: ignore Range and send everything
	length   bool // with ranges off: send Content-Length
	fail     func(r *http.Request) int
	served   func(r *http.Request)
	requests atomic.Int64
	ranged   atomic.Int64
	secret   string // a query parameter that must be present, like a presigned URL's signature
}

func (f *fileServer) set(data []byte, etag string) {
	f.mu.Lock()
	f.data, f.etag = data, etag
	f.mu.Unlock()
}

func (f *fileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	if r.Header.Get("Range") != "" {
		f.ranged.Add(1)
	}
	if f.secret != "" && r.URL.Query().Get("X-Amz-Signature") != f.secret {
		http.Error(w, "signature mismatch", http.StatusForbidden)
		return
	}
	if f.fail != nil {
		if code := f.fail(r); code != 0 {
			http.Error(w, "injected", code)
			return
		}
	}
	if r.URL.Path != "/weights.tar" {
		http.NotFound(w, r)
		return
	}
	f.mu.Lock()
	data, etag := f.data, f.etag
	f.mu.Unlock()
	if f.served != nil {
		defer f.served(r)
	}
	if !f.ranges {
		if f.length {
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(data)
		return
	}
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	http.ServeContent(w, r, "weights.tar", time.Unix(1700000000, 0), bytes.NewReader(data))
}

func TestHTTPSource(t *testing.T) {
	const chunk = 256 << 10
	data := randomBytes(5*chunk+123, 2)
	small := data[:chunk-1]
	s, tr := testSources(t, config.S3{ChunkSize: chunk, Concurrency: 3})

	t.Run("ranges", func(t *testing.T) {
		fs := &fileServer{ranges: true, etag: `"v1"`, data: data}
		srv := httptest.NewServer(fs)
		defer srv.Close()
		done := leakCheck(t, tr)
		rc := mustRead(t, s, srv.URL+"/weights.tar", data)
		c, ok := innerReader(t, rc).(*chunkReader)
		if !ok {
			t.Fatalf("reader is %T, want parallel ranged GETs", innerReader(t, rc))
		}
		if got := c.requests.Load(); got != 6 {
			t.Errorf("%d chunk GETs, want 6", got)
		}
		if got := c.maxInFlight.Load(); got > 3 {
			t.Errorf("%d GETs in flight at once, want at most 3", got)
		}
		rc.Close()
		done()
	})
	t.Run("ranges small file", func(t *testing.T) {
		fs := &fileServer{ranges: true, etag: `"v1"`, data: small}
		srv := httptest.NewServer(fs)
		defer srv.Close()
		rc := mustRead(t, s, srv.URL+"/weights.tar", small)
		if _, ok := innerReader(t, rc).(*streamReader); !ok {
			t.Errorf("reader is %T, want one GET", innerReader(t, rc))
		}
		if got := fs.requests.Load(); got != 2 {
			t.Errorf("%d requests, want 2 (probe and GET)", got)
		}
	})
	t.Run("weak ETag uses Last-Modified", func(t *testing.T) {
		fs := &fileServer{ranges: true, etag: `W/"weak"`, data: data}
		srv := httptest.NewServer(fs)
		defer srv.Close()
		mustRead(t, s, srv.URL+"/weights.tar", data)
	})
	t.Run("no ranges", func(t *testing.T) {
		fs := &fileServer{length: true, data: data}
		srv := httptest.NewServer(fs)
		defer srv.Close()
		mustRead(t, s, srv.URL+"/weights.tar", data)
		if got := fs.requests.Load(); got != 1 {
			t.Errorf("%d requests, want 1: the probe's 200 response is the download", got)
		}
	})
	t.Run("no ranges no length", func(t *testing.T) {
		srv := httptest.NewServer(&fileServer{data: data})
		defer srv.Close()
		rc, size, err := s.Open(context.Background(), srv.URL+"/weights.tar")
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if size != -1 {
			t.Errorf("size = %d, want -1 (unknown)", size)
		}
		if sum, n, err := readAll(rc); err != nil || n != int64(len(data)) || sum != sha256.Sum256(data) {
			t.Fatalf("read %d bytes, err %v", n, err)
		}
	})
	t.Run("empty file", func(t *testing.T) {
		srv := httptest.NewServer(&fileServer{ranges: true, etag: `"e"`, data: []byte{}})
		defer srv.Close()
		mustRead(t, s, srv.URL+"/weights.tar", nil)
	})
	t.Run("transient failures are retried", func(t *testing.T) {
		var n atomic.Int64
		fs := &fileServer{ranges: true, etag: `"v1"`, data: data, fail: func(r *http.Request) int {
			switch n.Add(1) {
			case 1: // the probe
				return http.StatusServiceUnavailable
			case 3, 5:
				return http.StatusTooManyRequests
			}
			return 0
		}}
		srv := httptest.NewServer(fs)
		defer srv.Close()
		rc := mustRead(t, s, srv.URL+"/weights.tar", data)
		if got := innerReader(t, rc).(*chunkReader).retries.Load(); got != 2 {
			t.Errorf("%d chunk retries, want 2", got)
		}
	})
	t.Run("changed during download", func(t *testing.T) {
		fs := &fileServer{ranges: true, etag: `"v1"`, data: data}
		var once sync.Once
		fs.served = func(r *http.Request) {
			if r.Header.Get("Range") != "bytes=0-0" {
				once.Do(func() { fs.set(randomBytes(len(data), 3), `"v2"`) })
			}
		}
		srv := httptest.NewServer(fs)
		defer srv.Close()
		s2, _ := testSources(t, config.S3{ChunkSize: chunk, Concurrency: 1})
		rc, _, err := s2.Open(context.Background(), srv.URL+"/weights.tar")
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if _, _, err := readAll(rc); !errors.Is(err, ErrChanged) {
			t.Fatalf("reading a file replaced mid-download: %v, want ErrChanged", err)
		}
	})

	t.Run("presigned query never in errors", func(t *testing.T) {
		const sig = "c2VjcmV0LXNpZ25hdHVyZQ"
		fs := &fileServer{ranges: true, etag: `"v1"`, data: data, secret: sig}
		srv := httptest.NewServer(fs)
		query := "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20250101&X-Amz-Signature="
		mustRead(t, s, srv.URL+"/weights.tar"+query+sig, data)
		for _, tc := range []struct {
			name, url string
			want      error
		}{
			{"expired", srv.URL + "/weights.tar" + query + "wrong" + sig, ErrDenied},
			{"missing", srv.URL + "/other.tar" + query + sig, ErrNotFound},
			{"user info", "https://user:" + sig + "@" + strings.TrimPrefix(srv.URL, "http://") + "/weights.tar", nil},
			{"bad host", "https://host name/weights.tar" + query + sig, ErrInvalidURL},
			{"no host", "https:///weights.tar" + query + sig, ErrInvalidURL},
		} {
			t.Run(tc.name, func(t *testing.T) {
				rc, _, err := s.Open(context.Background(), tc.url)
				if err == nil {
					rc.Close()
					t.Fatalf("Open succeeded")
				}
				if tc.want != nil && !errors.Is(err, tc.want) {
					t.Errorf("Open = %v, want %v", err, tc.want)
				}
				if strings.Contains(err.Error(), sig) || strings.Contains(err.Error(), "AKIAEXAMPLE") {
					t.Errorf("error leaks the presigned query: %v", err)
				}
				if !strings.Contains(err.Error(), "?REDACTED") && tc.name != "user info" {
					t.Errorf("error does not name the (redacted) URL: %v", err)
				}
			})
		}
		// A server gone mid-way: connection errors carry the URL too.
		srv.Close()
		_, _, err := s.Open(context.Background(), srv.URL+"/weights.tar"+query+sig)
		if err == nil || strings.Contains(err.Error(), sig) || !strings.Contains(err.Error(), "/weights.tar?REDACTED") {
			t.Errorf("Open on a closed server = %v; want an error naming the redacted URL", err)
		}
	})

	t.Run("close while a single GET stalls", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			_, _ = w.Write(data[:chunk])
			w.(http.Flusher).Flush()
			<-r.Context().Done() // the rest never comes
		}))
		defer srv.Close()
		done := leakCheck(t, tr)
		rc, _, err := s.Open(context.Background(), srv.URL+"/weights.tar")
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, rc)
			errc <- err
		}()
		time.Sleep(50 * time.Millisecond)
		if err := rc.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			if err == nil {
				t.Error("reading a closed stream succeeded")
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Read still blocked 2s after Close")
		}
		done()
	})

	t.Run("cancel mid-download", func(t *testing.T) {
		release := make(chan struct{})
		fs := &fileServer{ranges: true, etag: `"v1"`, data: data, fail: func(r *http.Request) int {
			if rg := r.Header.Get("Range"); rg != "bytes=0-0" && !strings.HasPrefix(rg, "bytes=0-") {
				select { // hold every chunk but the first
				case <-release:
				case <-r.Context().Done():
				}
			}
			return 0
		}}
		srv := httptest.NewServer(fs)
		defer srv.Close()
		defer close(release)
		done := leakCheck(t, tr)
		ctx, cancel := context.WithCancel(context.Background())
		rc, _, err := s.Open(ctx, srv.URL+"/weights.tar")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(rc, make([]byte, chunk)); err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := rc.Read(make([]byte, 10))
			errc <- err
		}()
		time.Sleep(50 * time.Millisecond)
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Read after cancel = %v, want context.Canceled", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Read still blocked 2s after the context was cancelled")
		}
		rc.Close()
		done()
	})
}
