package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/internal/testenv"
)

const testChunk = 4 << 20

// s3Config reads srv through endpoint (srv's own, or a proxy's).
func s3Config(srv *testenv.S3Server, endpoint string, chunk int64, concurrency int) config.S3 {
	if endpoint == "" {
		endpoint = srv.Endpoint
	}
	return config.S3{
		Endpoint: endpoint, Region: srv.Region, PathStyle: true,
		ChunkSize: chunk, Concurrency: concurrency,
		AccessKeyID: config.Secret(srv.AccessKey), SecretAccessKey: config.Secret(srv.SecretKey),
	}
}

// putBytes uploads data under key, with a whole-object checksum of algo
// (none when "") that S3 keeps, and returns the object's s3:// URL.
func putBytes(t testing.TB, srv *testenv.S3Server, key string, data []byte, algo types.ChecksumAlgorithm) string {
	t.Helper()
	in := &s3.PutObjectInput{Bucket: aws.String(srv.Bucket), Key: aws.String(key), Body: bytes.NewReader(data), ChecksumAlgorithm: algo}
	calc := aws.RequestChecksumCalculationWhenSupported
	if algo == "" {
		calc = aws.RequestChecksumCalculationWhenRequired // no default CRC32 either
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A client of its own, whose connections close here, so that the
	// leak checks see no goroutine of it.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	client := s3.New(srv.Client().Options(), func(o *s3.Options) {
		o.HTTPClient = &http.Client{Transport: tr}
		o.RequestChecksumCalculation = calc
	})
	if _, err := client.PutObject(ctx, in); err != nil {
		t.Fatalf("putting s3://%s/%s: %v", srv.Bucket, key, err)
	}
	return "s3://" + srv.Bucket + "/" + key
}

// fault is what the proxy does to one request.
type fault struct {
	status   int           // answer with this S3 error status
	reset    bool          // drop the connection (RST) before answering
	truncate bool          // send the headers and half the body, then drop the connection
	corrupt  bool          // flip a bit of the body's first byte
	wait     chan struct{} // hold the request until closed
	rate     int64         // send the body at this many bytes per second
}

type faultKey struct{}

// s3Proxy is a reverse proxy in front of MinIO that injects faults chosen
// per request by decide and counts GETs.
type s3Proxy struct {
	URL    string
	tr     *http.Transport // to MinIO
	decide atomic.Pointer[func(r *http.Request) fault]
	gets   atomic.Int64
	mu     sync.Mutex
	ranges []string // Range of each GET, in arrival order
}

func newS3Proxy(t testing.TB, upstream string) *s3Proxy {
	t.Helper()
	target, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &s3Proxy{}
	rp := httputil.NewSingleHostReverseProxy(target)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	rp.Transport = tr
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.ModifyResponse = func(resp *http.Response) error {
		f, _ := resp.Request.Context().Value(faultKey{}).(fault)
		switch {
		case f.truncate:
			resp.Body = &truncatedBody{ReadCloser: resp.Body, left: resp.ContentLength / 2}
		case f.corrupt:
			resp.Body = &corruptBody{ReadCloser: resp.Body}
		case f.rate > 0:
			resp.Body = &slowBody{ReadCloser: resp.Body, rate: f.rate, start: time.Now()}
		}
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var f fault
		if r.Method == http.MethodGet {
			p.gets.Add(1)
			p.mu.Lock()
			p.ranges = append(p.ranges, r.Header.Get("Range"))
			p.mu.Unlock()
			if d := p.decide.Load(); d != nil {
				f = (*d)(r)
			}
		}
		if f.wait != nil {
			select {
			case <-f.wait:
			case <-r.Context().Done():
				return
			}
		}
		switch {
		case f.status != 0:
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(f.status)
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>injected %d</Message></Error>`, f.status)
		case f.reset:
			c, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				panic(http.ErrAbortHandler)
			}
			_ = c.(*net.TCPConn).SetLinger(0)
			_ = c.Close()
		default:
			rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), faultKey{}, f)))
		}
	}))
	t.Cleanup(func() {
		srv.Close()
		tr.CloseIdleConnections()
	})
	p.URL, p.tr = srv.URL, tr
	return p
}

// onGET makes decide see each GET with its ordinal (1-based) and Range.
func (p *s3Proxy) onGET(decide func(n int64, rng string) fault) {
	var n atomic.Int64
	f := func(r *http.Request) fault { return decide(n.Add(1), r.Header.Get("Range")) }
	p.decide.Store(&f)
}

type truncatedBody struct {
	io.ReadCloser
	left int64
}

func (b *truncatedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errors.New("injected truncation")
	}
	n, err := b.ReadCloser.Read(p[:min(int64(len(p)), b.left)])
	b.left -= int64(n)
	return n, err
}

// slowBody holds a body to rate bytes per second, like the per-connection
// throughput cap of a real object store.
type slowBody struct {
	io.ReadCloser
	rate  int64
	start time.Time
	sent  int64
}

func (b *slowBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p[:min(len(p), 64<<10)])
	b.sent += int64(n)
	time.Sleep(time.Until(b.start.Add(time.Duration(b.sent * int64(time.Second) / b.rate))))
	return n, err
}

type corruptBody struct {
	io.ReadCloser
	done bool
}

func (b *corruptBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 && !b.done {
		p[0] ^= 0x01
		b.done = true
	}
	return n, err
}

func TestS3Source(t *testing.T) {
	srv := testenv.S3(t)
	smallTar, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Seed: 1})
	largeTar, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 4, FileSize: 10 << 20, Seed: 2})
	const key = "runs/run 42/weights v1+final.tar"
	smallURL := srv.PutObject(t, "small/"+key, smallTar)
	largeURL := srv.PutObject(t, "large/"+key, largeTar)
	s, tr := testSources(t, s3Config(srv, "", testChunk, 4))

	for _, tc := range []struct {
		name, url, path string
		chunked         bool
	}{
		{"small", smallURL, smallTar, false},
		{"small percent-encoded", strings.ReplaceAll(smallURL, " ", "%20"), smallTar, false},
		{"large", largeURL, largeTar, true},
		{"large percent-encoded", strings.NewReplacer(" ", "%20", "+", "%2B").Replace(largeURL), largeTar, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := leakCheck(t, tr)
			want, wantSize := fileSHA256(t, tc.path)
			rc, size, err := s.Open(context.Background(), tc.url)
			if err != nil {
				t.Fatal(err)
			}
			if size != wantSize {
				t.Errorf("size = %d, want %d", size, wantSize)
			}
			sum, n, err := readAll(rc)
			if err != nil || n != wantSize || sum != want {
				t.Fatalf("read %d bytes (%x), err %v; want %d bytes (%x)", n, sum, err, wantSize, want)
			}
			if sum := rc.(*verifier).sum; sum != nil {
				t.Logf("verified the %s S3 stored", sum.algo)
			}
			switch r := innerReader(t, rc).(type) {
			case *chunkReader:
				if !tc.chunked {
					t.Errorf("a %d-byte object was read in chunks", size)
				}
				if want := (size + testChunk - 1) / testChunk; r.requests.Load() != want {
					t.Errorf("%d ranged GETs, want %d", r.requests.Load(), want)
				}
				if got := r.maxInFlight.Load(); got > 4 || got < 2 {
					t.Errorf("%d GETs in flight at most, want 2 to 4", got)
				}
			case *streamReader:
				if tc.chunked {
					t.Errorf("a %d-byte object was read with one GET", size)
				}
			}
			if err := rc.Close(); err != nil {
				t.Fatal(err)
			}
			done()
		})
	}
}

func TestS3SourceErrors(t *testing.T) {
	srv := testenv.S3(t)
	url := putBytes(t, srv, "w.tar", []byte("weights"), "")
	s, _ := testSources(t, s3Config(srv, "", testChunk, 4))
	wrongKeys := s3Config(srv, "", testChunk, 4)
	wrongKeys.SecretAccessKey = "not-the-secret"
	denied, _ := testSources(t, wrongKeys)
	for _, tc := range []struct {
		name string
		s    *Sources
		url  string
		want error
		says string
	}{
		{"missing key", s, "s3://" + srv.Bucket + "/nope.tar", ErrNotFound, "check the URL"},
		{"missing bucket", s, "s3://no-such-bucket-r8im/w.tar", ErrNotFound, "s3://no-such-bucket-r8im/w.tar"},
		{"wrong credentials", denied, url, ErrDenied, "AWS_ACCESS_KEY_ID"},
		{"no bucket", s, "s3:///w.tar", ErrInvalidURL, "no bucket"},
		{"no key", s, "s3://" + srv.Bucket, ErrInvalidURL, "no key"},
		{"bucket only", s, "s3://" + srv.Bucket + "/", ErrInvalidURL, "no key"},
		{"empty prefix", s, "s3://" + srv.Bucket + "/runs/", ErrNotFound, "no objects under the prefix"},
		{"bad escape", s, "s3://" + srv.Bucket + "/100%.tar", ErrInvalidURL, "%25"},
		{"query", s, "s3://" + srv.Bucket + "/w.tar?versionId=1", ErrInvalidURL, "%3F"},
		{"user info", s, "s3://key:secret@" + srv.Bucket + "/w.tar", ErrInvalidURL, "credentials"},
		{"port", s, "s3://" + srv.Bucket + ":9000/w.tar", ErrInvalidURL, "endpoint"},
		{"scheme only", s, "s3://", ErrInvalidURL, "no bucket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, _, err := tc.s.Open(context.Background(), tc.url)
			if err == nil {
				rc.Close()
				t.Fatalf("Open(%s) succeeded", tc.url)
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("Open(%s) = %v\nwant %v saying %q", tc.url, err, tc.want, tc.says)
			}
			if strings.Contains(err.Error(), srv.SecretKey) || strings.Contains(err.Error(), "not-the-secret") {
				t.Fatalf("error holds a secret key: %v", err)
			}
		})
	}
}

func TestS3SourceNoCredentials(t *testing.T) {
	srv := testenv.S3(t)
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	cfg := s3Config(srv, "", testChunk, 4)
	cfg.AccessKeyID, cfg.SecretAccessKey = "", ""
	s, _ := testSources(t, cfg)
	_, _, err := s.Open(context.Background(), "s3://"+srv.Bucket+"/w.tar")
	if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "no usable AWS credentials") {
		t.Fatalf("Open without credentials = %v; want ErrDenied saying so", err)
	}
}

func TestS3SourceFaults(t *testing.T) {
	srv := testenv.S3(t)
	data := randomBytes(10*testChunk+1000, 4)
	url := putBytes(t, srv, "faults/w.tar", data, "")
	smallURL := putBytes(t, srv, "faults/small.tar", data[:testChunk-1], "")
	proxy := newS3Proxy(t, srv.Endpoint)
	s, tr := testSources(t, s3Config(srv, proxy.URL, testChunk, 4))

	t.Run("transient faults are retried per chunk", func(t *testing.T) {
		done := leakCheck(t, tr, proxy.tr)
		proxy.gets.Store(0)
		// The first GET of some chunks fails, each in its own way.
		faults := map[int64]fault{
			1: {status: http.StatusServiceUnavailable},
			2: {truncate: true},
			4: {reset: true},
			6: {status: http.StatusTooManyRequests},
			9: {status: http.StatusServiceUnavailable},
		}
		var mu sync.Mutex
		seen := map[string]bool{}
		var injected atomic.Int64
		proxy.onGET(func(n int64, rng string) fault {
			mu.Lock()
			defer mu.Unlock()
			first := !seen[rng]
			seen[rng] = true
			for chunk, f := range faults {
				if first && strings.HasPrefix(rng, fmt.Sprintf("bytes=%d-", chunk*testChunk)) {
					injected.Add(1)
					return f
				}
			}
			return fault{}
		})
		defer proxy.decide.Store(nil)
		rc := mustRead(t, s, url, data)
		// Go's transport itself retries a GET whose reused connection drops
		// before any response byte; the reset may be retried there.
		c := innerReader(t, rc).(*chunkReader)
		if got, want := c.retries.Load(), injected.Load(); got != want && got != want-1 {
			t.Errorf("%d chunk retries, want %d (one per fault, the reset perhaps retried by net/http)", got, want)
		}
		if got, want := proxy.gets.Load(), 11+injected.Load(); got != want {
			t.Errorf("the proxy saw %d GETs, want %d (11 chunks + %d retries)", got, want, injected.Load())
		}
		rc.Close()
		done()
	})

	t.Run("small object resumes mid-body", func(t *testing.T) {
		proxy.mu.Lock()
		proxy.ranges = nil
		proxy.mu.Unlock()
		proxy.onGET(func(n int64, rng string) fault { return fault{truncate: n == 1} })
		defer proxy.decide.Store(nil)
		rc := mustRead(t, s, smallURL, data[:testChunk-1])
		if got := innerReader(t, rc).(*streamReader).retries.Load(); got != 1 {
			t.Errorf("%d resumes, want 1", got)
		}
		proxy.mu.Lock()
		defer proxy.mu.Unlock()
		if len(proxy.ranges) != 2 || proxy.ranges[0] != "" || !strings.HasPrefix(proxy.ranges[1], "bytes=") || strings.HasPrefix(proxy.ranges[1], "bytes=0-") {
			t.Errorf("GET ranges %q, want a whole GET then a ranged one resuming mid-object", proxy.ranges)
		}
	})

	t.Run("stalled chunk is retried", func(t *testing.T) {
		stalled, str := testSources(t, s3Config(srv, proxy.URL, testChunk, 4))
		done := leakCheck(t, str, proxy.tr)
		stalled.stallTimeout = 300 * time.Millisecond
		never := make(chan struct{})
		defer close(never)
		var held atomic.Bool
		proxy.onGET(func(n int64, rng string) fault {
			if strings.HasPrefix(rng, fmt.Sprintf("bytes=%d-", 3*testChunk)) && held.CompareAndSwap(false, true) {
				return fault{wait: never}
			}
			return fault{}
		})
		defer proxy.decide.Store(nil)
		rc := mustRead(t, stalled, url, data)
		if got := innerReader(t, rc).(*chunkReader).retries.Load(); got != 1 {
			t.Errorf("%d retries, want 1 for the stalled chunk", got)
		}
		rc.Close()
		done()
	})

	t.Run("persistent failure gives up after 3 attempts", func(t *testing.T) {
		done := leakCheck(t, tr, proxy.tr)
		proxy.onGET(func(n int64, rng string) fault {
			if strings.HasPrefix(rng, fmt.Sprintf("bytes=%d-", 5*testChunk)) {
				return fault{status: http.StatusInternalServerError}
			}
			return fault{}
		})
		defer proxy.decide.Store(nil)
		rc, _, err := s.Open(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		_, n, err := readAll(rc)
		if err == nil || !strings.Contains(err.Error(), "giving up after 3 attempts") || !strings.Contains(err.Error(), url) {
			t.Fatalf("read = %v; want giving up after 3 attempts, naming %s", err, url)
		}
		if n > 5*testChunk {
			t.Errorf("read %d bytes, past the failed chunk at %d", n, 5*testChunk)
		}
		rc.Close()
		done()
	})
}

func TestS3SourceChanged(t *testing.T) {
	srv := testenv.S3(t)
	data := randomBytes(6*testChunk, 5)
	url := putBytes(t, srv, "changed.tar", data, "")
	proxy := newS3Proxy(t, srv.Endpoint)
	s, tr := testSources(t, s3Config(srv, proxy.URL, testChunk, 2))
	done := leakCheck(t, tr, proxy.tr)

	// Hold every chunk but the first until the object has been replaced.
	replaced := make(chan struct{})
	proxy.onGET(func(n int64, rng string) fault {
		if strings.HasPrefix(rng, "bytes=0-") {
			return fault{}
		}
		return fault{wait: replaced}
	})
	rc, size, err := s.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, testChunk)
	if _, err := io.ReadFull(rc, first); err != nil || !bytes.Equal(first, data[:testChunk]) {
		t.Fatalf("first chunk: %v", err)
	}
	putBytes(t, srv, "changed.tar", randomBytes(int(size), 6), "")
	close(replaced)
	_, _, err = readAll(rc)
	t.Log(err)
	if !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "open it again") {
		t.Fatalf("reading an object replaced mid-download: %v; want ErrChanged naming the URL", err)
	}
	rc.Close()
	done()
}

func TestS3SourceChecksum(t *testing.T) {
	srv := testenv.S3(t)
	proxy := newS3Proxy(t, srv.Endpoint)
	s, _ := testSources(t, s3Config(srv, proxy.URL, testChunk, 3))
	for _, algo := range []struct {
		s3   types.ChecksumAlgorithm
		name string
	}{
		{types.ChecksumAlgorithmSha256, "SHA-256"},
		{types.ChecksumAlgorithmSha1, "SHA-1"},
		{types.ChecksumAlgorithmCrc64nvme, "CRC64NVME"},
		{types.ChecksumAlgorithmCrc32c, "CRC32C"},
		{types.ChecksumAlgorithmCrc32, "CRC32"},
	} {
		for _, size := range []int{testChunk / 2, 3*testChunk + 5} {
			t.Run(fmt.Sprintf("%s/%d", algo.name, size), func(t *testing.T) {
				data := randomBytes(size, uint64(size))
				url := putBytes(t, srv, fmt.Sprintf("sum/%s/%d.tar", algo.s3, size), data, algo.s3)
				rc := mustRead(t, s, url, data) // the checksum S3 stored matched
				if sum := rc.(*verifier).sum; sum == nil || sum.algo != algo.name {
					t.Fatalf("the reader checked %+v, want the %s S3 stored", sum, algo.name)
				}

				// Flip a bit of one chunk (of the only GET for a small object):
				// the length is right, the checksum is not.
				var once sync.Once
				proxy.onGET(func(n int64, rng string) fault {
					f := fault{}
					if rng == "" || !strings.HasPrefix(rng, "bytes=0-") {
						once.Do(func() { f.corrupt = true })
					}
					return f
				})
				defer proxy.decide.Store(nil)
				rc, _, err := s.Open(context.Background(), url)
				if err != nil {
					t.Fatal(err)
				}
				defer rc.Close()
				_, n, err := readAll(rc)
				if !errors.Is(err, ErrShort) || !strings.Contains(err.Error(), algo.name) || n != int64(size) {
					t.Fatalf("reading corrupted bytes: %d bytes, %v; want ErrShort (%s) at the end", n, err, algo.name)
				}
			})
		}
	}
	t.Run("no checksum, no hashing", func(t *testing.T) {
		url := putBytes(t, srv, "sum/none.tar", []byte("abc"), "")
		rc := mustRead(t, s, url, []byte("abc"))
		if rc.(*verifier).h != nil {
			t.Error("the reader hashes an object S3 holds no checksum for")
		}
	})
}

func TestS3SourceMemoryBound(t *testing.T) {
	srv := testenv.S3(t)
	data := randomBytes(10*testChunk, 8)
	url := putBytes(t, srv, "mem.tar", data, "")
	const concurrency = 4
	s, _ := testSources(t, s3Config(srv, "", testChunk, concurrency))
	rc, _, err := s.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	c := innerReader(t, rc).(*chunkReader)
	h := sha256.New()
	buf := make([]byte, 256<<10)
	for {
		n, err := rc.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // a slow consumer: the fetches run ahead until buffers run out
	}
	if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("bytes differ")
	}
	peak := c.peak.Load()
	t.Logf("peak buffered: %d MiB (bound %d MiB)", peak>>20, concurrency*testChunk>>20)
	if peak > concurrency*testChunk {
		t.Errorf("%d bytes buffered at the peak, over the bound of %d", peak, concurrency*testChunk)
	}
	if peak < 2*testChunk {
		t.Errorf("only %d bytes buffered at the peak: the fetches do not run ahead of a slow reader", peak)
	}
	if b := c.buffered.Load(); b != 0 {
		t.Errorf("%d bytes still counted as buffered after EOF", b)
	}
}

func TestS3SourceCancel(t *testing.T) {
	srv := testenv.S3(t)
	data := randomBytes(8*testChunk, 9)
	url := putBytes(t, srv, "cancel.tar", data, "")
	proxy := newS3Proxy(t, srv.Endpoint)
	s, tr := testSources(t, s3Config(srv, proxy.URL, testChunk, 4))
	hold := make(chan struct{})
	defer close(hold)
	proxy.onGET(func(n int64, rng string) fault {
		if strings.HasPrefix(rng, "bytes=0-") {
			return fault{}
		}
		return fault{wait: hold} // the rest stays in flight until cancelled
	})

	for _, how := range []string{"cancel", "close"} {
		t.Run(how, func(t *testing.T) {
			done := leakCheck(t, tr, proxy.tr)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			rc, _, err := s.Open(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(rc, make([]byte, testChunk)); err != nil {
				t.Fatal(err)
			}
			errc := make(chan error, 1)
			go func() {
				_, err := rc.Read(make([]byte, 1))
				errc <- err
			}()
			time.Sleep(50 * time.Millisecond) // the Read waits on chunk 2
			start := time.Now()
			if how == "cancel" {
				cancel()
			} else if err := rc.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-errc:
				t.Logf("Read returned %v after %v", err, time.Since(start))
				if how == "cancel" && !errors.Is(err, context.Canceled) {
					t.Errorf("Read after cancel = %v, want context.Canceled", err)
				}
				if how == "close" && err == nil {
					t.Error("Read after Close succeeded")
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Read still blocked 2s later")
			}
			if err := rc.Close(); err != nil {
				t.Fatal(err)
			}
			done()
		})
	}
}

// BenchmarkS3Source reads a 256 MiB object from local MinIO with the
// default 16 MiB × 8 ranged GETs and with one GetObject: straight from
// MinIO, and through a proxy that holds each connection to 50 MB/s, as
// S3 roughly does.
func BenchmarkS3Source(b *testing.B) {
	srv := testenv.S3(b)
	data := randomBytes(256<<20, 10)
	url := putBytes(b, srv, "bench.tar", data, "")
	sumURL := putBytes(b, srv, "bench-sha256.tar", data, types.ChecksumAlgorithmSha256)
	proxy := newS3Proxy(b, srv.Endpoint)
	proxy.onGET(func(int64, string) fault { return fault{rate: 50e6} })
	for _, bc := range []struct {
		name        string
		chunk       int64
		concurrency int
		endpoint    string
		url         string
	}{
		{"ranged-16MiBx8", config.DefaultS3ChunkSize, config.DefaultS3Concurrency, "", url},
		{"ranged-16MiBx8-sha256", config.DefaultS3ChunkSize, config.DefaultS3Concurrency, "", sumURL},
		{"ranged-8MiBx16", 8 << 20, 16, "", url},
		{"single-GET", 1 << 30, 1, "", url},
		{"capped-50MBps/ranged-16MiBx8", config.DefaultS3ChunkSize, config.DefaultS3Concurrency, proxy.URL, url},
		{"capped-50MBps/single-GET", 1 << 30, 1, proxy.URL, url},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, _ := testSources(b, s3Config(srv, bc.endpoint, bc.chunk, bc.concurrency))
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				rc, _, err := s.Open(context.Background(), bc.url)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, rc); err != nil {
					b.Fatal(err)
				}
				rc.Close()
			}
		})
	}
}
