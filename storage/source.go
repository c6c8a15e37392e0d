package storage

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/internal/netguard"
	"github.com/r8im/r8im/internal/retry"
)

// Errors returned by Sources.Open and by the readers it returns. Each is
// wrapped with the URL (query strings redacted), what failed and what to do.
// ErrNotFound, ErrDenied, ErrInvalidURL and ErrChanged are permanent:
// retrying the same URL cannot help (a changed object is not the one the
// event named): retry.IsPermanent says so to every package (an upload never
// re-reads a source that failed for good). ErrShort means this download went
// wrong; opening the URL again may succeed.
var (
	ErrNotFound   = retry.New("weights source not found")
	ErrDenied     = retry.New("access to weights source denied")
	ErrInvalidURL = retry.New("invalid weights source URL")
	ErrChanged    = retry.New("weights source changed during the download")
	ErrShort      = errors.New("weights source incomplete or corrupt")
)

// Sources opens weights tarballs by URL: s3://bucket/key, https://… and
// http://… (presigned URLs welcome), file:///abs/path and plain paths.
// It is safe for concurrent use.
type Sources struct {
	s3          s3API
	creds       aws.CredentialsProvider // nil: none to check before a request
	http        *http.Client
	net         *config.Network // nil: the defaults, no private network allowed
	chunkSize   int64
	concurrency int
	buffers     *bufferPool

	// Tuning the tests shorten.
	attempts     int           // tries per chunk or request
	backoff      time.Duration // first retry waits about this long, doubling
	stallTimeout time.Duration // a chunk GET with no bytes for this long is retried
}

// SourceOption configures Sources.
type SourceOption func(*Sources)

// WithHTTPClient sets the client for https:// and http:// sources and for
// S3 requests, replacing every limit WithNetwork describes. By default
// https:// and http:// use a guarded client (see WithNetwork) tuned for
// Concurrency connections per host, and S3 the AWS SDK's client (which
// honours AWS_CA_BUNDLE), tuned likewise.
func WithHTTPClient(c *http.Client) SourceOption {
	return func(s *Sources) { s.http = c }
}

// WithNetwork applies the network settings to https:// and http:// sources
// (not to S3, whose endpoint is the operator's): the CA file, the idle
// timeout (also S3 chunks' stall timeout) and the private networks they
// may reach. Without it, no loopback, private or link-local address may be
// reached and the idle timeout is config.DefaultIdleTimeout.
func WithNetwork(n *config.Network) SourceOption {
	return func(s *Sources) { s.net = n }
}

// NewSources returns Sources reading S3 with cfg: the AWS SDK's default
// configuration and credential chain (environment, shared files, SSO, web
// identity, instance roles) with cfg's endpoint, region and path style on
// top, and cfg's static keys only when AccessKeyID is set. Objects larger
// than cfg.ChunkSize are fetched as cfg.Concurrency parallel ranged GETs
// (config.DefaultS3ChunkSize and config.DefaultS3Concurrency when zero), so
// each open reader holds at most ChunkSize×Concurrency bytes.
func NewSources(ctx context.Context, cfg config.S3, opts ...SourceOption) (*Sources, error) {
	s := &Sources{
		chunkSize:    cfg.ChunkSize,
		concurrency:  cfg.Concurrency,
		attempts:     3,
		backoff:      200 * time.Millisecond,
		stallTimeout: time.Minute,
	}
	if s.chunkSize <= 0 {
		s.chunkSize = config.DefaultS3ChunkSize
	}
	if s.concurrency <= 0 {
		s.concurrency = config.DefaultS3Concurrency
	}
	for _, o := range opts {
		o(s)
	}
	s3HTTP := s.http
	if s.http == nil {
		hc, err := weightsClient(s.concurrency, s.net)
		if err != nil {
			return nil, err
		}
		s.http = hc
	}
	if s.net != nil && s.net.IdleTimeout > 0 {
		s.stallTimeout = s.net.IdleTimeout
	}
	s.buffers = newBufferPool(s.chunkSize)
	var err error
	if s.s3, s.creds, err = newS3Client(ctx, cfg, s3HTTP, s.concurrency); err != nil {
		return nil, err
	}
	return s, nil
}

// weightsClient is the client of https:// and http:// sources: weights URLs
// come from events, so it follows redirects only on the same scheme and
// host, refuses connections to non-public addresses that n does not allow
// (whatever name resolved to them), and fails a connection idle for n's
// idle timeout.
func weightsClient(concurrency int, n *config.Network) (*http.Client, error) {
	o := netguard.Options{SameHost: true, GuardPrivate: true, IdleTimeout: config.DefaultIdleTimeout}
	if n != nil {
		roots, err := n.RootCAs()
		if err != nil {
			return nil, fmt.Errorf("R8IM_CA_FILE: %w", err)
		}
		o.RootCAs, o.Allow = roots, n.AllowPrivateNetworks
		if n.IdleTimeout > 0 {
			o.IdleTimeout = n.IdleTimeout
		}
	}
	t := netguard.NewTransport(o)
	t.MaxIdleConnsPerHost = max(2*concurrency, 16)
	t.DisableCompression = true
	return &http.Client{Transport: netguard.Wrap(t, o), CheckRedirect: o.CheckRedirect}, nil
}

// Open opens the weights tarball at rawURL and returns a reader and its size
// in bytes (-1 when an http(s) server does not say). The reader is bound to
// ctx: cancelling ctx, or closing the reader, stops every request in flight.
// The reader checks what it delivers: a wrong byte count, or a checksum that
// differs from the whole-object one S3 stored (SHA-256, SHA-1, CRC64NVME,
// CRC32C or CRC32), ends the stream with ErrShort instead of io.EOF.
func (s *Sources) Open(ctx context.Context, rawURL string) (io.ReadCloser, int64, error) {
	if strings.TrimSpace(rawURL) == "" {
		return nil, 0, fmt.Errorf("opening weights: %w: the URL is empty; use s3://bucket/key, https://…, file:///path or a path", ErrInvalidURL)
	}
	scheme, _, hasScheme := strings.Cut(rawURL, "://")
	if !hasScheme || !isScheme(scheme) {
		return s.openFile(rawURL, rawURL)
	}
	switch strings.ToLower(scheme) {
	case "s3":
		return s.openS3(ctx, rawURL)
	case "https", "http":
		return s.openHTTP(ctx, rawURL)
	case "file":
		return s.openFileURL(rawURL)
	default:
		return nil, 0, fmt.Errorf("opening %s: %w: scheme %q is not supported; use s3://bucket/key, https://…, http://…, file:///path or a plain path",
			redactURL(rawURL), ErrInvalidURL, scheme)
	}
}

// isScheme reports whether s is a URL scheme (RFC 3986: a letter, then
// letters, digits, '+', '-' or '.'), so that "dir/a://b" stays a path.
func isScheme(s string) bool {
	for i, c := range s {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return s != ""
}

// redactURL returns rawURL fit for an error message: the query (which holds
// a presigned URL's signature) and fragment replaced by REDACTED, and any
// user info masked.
func redactURL(rawURL string) string {
	u := rawURL
	var tail string
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u, tail = u[:i], "?REDACTED"
	}
	if scheme, rest, ok := strings.Cut(u, "://"); ok {
		host, path, _ := strings.Cut(rest, "/")
		if at := strings.LastIndex(host, "@"); at >= 0 {
			host = "REDACTED@" + host[at+1:]
		}
		u = scheme + "://" + host
		if path != "" || strings.Contains(rest, "/") {
			u += "/" + path
		}
	}
	return u + tail
}

// emptyReader serves a zero-byte object.
type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, io.EOF }
func (emptyReader) Close() error             { return nil }

// checksum is a whole-object checksum the source stored: its algorithm
// name (as S3 spells it), a hash computing it and the value to match.
type checksum struct {
	algo string
	hash func() hash.Hash
	want []byte
}

// verifier counts the bytes a source delivers and, when the source stored a
// checksum of the whole object, hashes them; at the end of the stream a
// wrong count or checksum becomes ErrShort instead of io.EOF.
type verifier struct {
	r    io.ReadCloser
	url  string
	size int64 // -1: unknown
	n    int64
	sum  *checksum // nil: none to check
	h    hash.Hash
	err  error
}

func verify(r io.ReadCloser, url string, size int64, sum *checksum) *verifier {
	v := &verifier{r: r, url: url, size: size, sum: sum}
	if sum != nil {
		v.h = sum.hash()
	}
	return v
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	v.n += int64(n)
	if v.h != nil {
		v.h.Write(p[:n])
	}
	switch {
	case v.size >= 0 && v.n > v.size:
		err = fmt.Errorf("reading %s: %w: received more than the %d bytes announced; the source may have changed, open it again", v.url, ErrShort, v.size)
	case err != io.EOF:
	case v.size >= 0 && v.n != v.size:
		err = fmt.Errorf("reading %s: %w: received %d of %d bytes; open it again", v.url, ErrShort, v.n, v.size)
	case v.h != nil && !bytes.Equal(v.h.Sum(nil), v.sum.want):
		err = fmt.Errorf("reading %s: %w: the %s of the %d bytes received is %s, not the %s stored with the object; open it again",
			v.url, ErrShort, v.sum.algo, v.n, base64.StdEncoding.EncodeToString(v.h.Sum(nil)), base64.StdEncoding.EncodeToString(v.sum.want))
	}
	if err != nil {
		v.err = err
	}
	return n, err
}

func (v *verifier) Close() error { return v.r.Close() }
