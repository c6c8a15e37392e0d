package storage

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/r8im/r8im/internal/netguard"
	"github.com/r8im/r8im/internal/untrusted"
)

// openHTTP probes the URL with a GET for its first byte (a HEAD would not
// do: presigned URLs are signed for one method), which tells the size, the
// validators (ETag, Last-Modified) and whether ranges work in one round
// trip. A server that answers 200 to the probe is streamed from that very
// response.
func (s *Sources) openHTTP(ctx context.Context, raw string) (io.ReadCloser, int64, error) {
	red := redactURL(raw)
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, 0, fmt.Errorf("opening %s: %w: not a valid URL; use https://host/path/weights.tar", red, ErrInvalidURL)
	}
	h := &httpObject{client: s.http, url: raw, red: red}
	var resp *http.Response
	var retries atomic.Int64
	err = s.retry(ctx, &retries, func(ctx context.Context) error {
		r, err := h.do(ctx, "bytes=0-0", false)
		if err != nil {
			return err
		}
		if r.StatusCode != http.StatusPartialContent && r.StatusCode != http.StatusOK && r.StatusCode != http.StatusRequestedRangeNotSatisfiable {
			drain(r)
			return statusError(r)
		}
		resp = r
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, fmt.Errorf("opening %s: %w", red, ctx.Err())
		}
		return nil, 0, fmt.Errorf("opening %s: %w", red, err)
	}
	switch resp.StatusCode {
	case http.StatusOK: // no ranges: stream this response, without resuming
		size := resp.ContentLength
		return verify(&streamReader{src: s, ctx: ctx, url: red, body: resp.Body, size: size}, red, size, nil), size, nil
	case http.StatusRequestedRangeNotSatisfiable: // "bytes */0": an empty file
		drain(resp)
		if total, ok := contentRangeTotal(resp.Header.Get("Content-Range")); ok && total == 0 {
			return emptyReader{}, 0, nil
		}
		return nil, 0, fmt.Errorf("opening %s: the server refused the range bytes=0-0 (HTTP %d) without saying the size; serve the file with range support or without", red, resp.StatusCode)
	}
	drain(resp)
	size, ok := contentRangeTotal(resp.Header.Get("Content-Range"))
	if !ok { // size unknown ("bytes 0-0/*"): one plain GET
		r, err := h.do(ctx, "", false)
		if err == nil && r.StatusCode != http.StatusOK {
			drain(r)
			err = statusError(r)
		}
		if err != nil {
			return nil, 0, fmt.Errorf("opening %s: %w", red, err)
		}
		return verify(&streamReader{src: s, ctx: ctx, url: red, body: r.Body, size: r.ContentLength}, red, r.ContentLength, nil), r.ContentLength, nil
	}
	h.size = size
	if etag := resp.Header.Get("ETag"); etag != "" && !strings.HasPrefix(etag, "W/") {
		h.etag = etag
	} else if lm := resp.Header.Get("Last-Modified"); lm != "" {
		h.lastModified = lm
	}
	var r io.ReadCloser
	switch {
	case size == 0:
		r = emptyReader{}
	case size <= s.chunkSize:
		sr, err := s.openStream(ctx, h, red, size)
		if err != nil {
			if ctx.Err() != nil {
				return nil, 0, fmt.Errorf("opening %s: %w", red, ctx.Err())
			}
			return nil, 0, fmt.Errorf("opening %s: %w", red, err)
		}
		r = sr
	default:
		r = s.newChunkReader(ctx, h, red, size, s.concurrency)
	}
	return verify(r, red, size, nil), size, nil
}

// httpObject is one version of a file served over http(s): every ranged
// GET is conditional on the validator the probe saw.
type httpObject struct {
	client       *http.Client
	url, red     string // red: query redacted, for messages
	etag         string // strong ETag, for If-Match
	lastModified string // for If-Unmodified-Since when there is no strong ETag
	size         int64
}

// do sends a GET, with a Range header unless rng is empty.
func (h *httpObject) do(ctx context.Context, rng string, conditional bool) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidURL, scrub(err, h.red))
	}
	req.Header.Set("Accept-Encoding", "identity") // exact sizes and ranges, no transparent gunzip
	req.Header.Set("User-Agent", "r8im")
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	if conditional {
		if h.etag != "" {
			req.Header.Set("If-Match", h.etag)
		} else if h.lastModified != "" {
			req.Header.Set("If-Unmodified-Since", h.lastModified)
		}
	}
	resp, err := h.client.Do(req)
	if err != nil {
		err = scrub(err, h.red)
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		// The error may quote what the server sent (a malformed answer's
		// first line): its text is filtered and capped.
		safe := untrusted.Err(err, 512)
		var cert *tls.CertificateVerificationError
		switch {
		case errors.As(err, &cert):
			return nil, fmt.Errorf("the server's TLS certificate is not trusted; fix the certificate, or give its CA to the worker with R8IM_CA_FILE (or SSL_CERT_FILE): %w", safe)
		case errors.Is(err, netguard.ErrBlockedAddress):
			return nil, fmt.Errorf("%w: %w; weights are fetched from public addresses only, unless the worker allows the network with R8IM_ALLOW_PRIVATE_NETWORKS", ErrDenied, safe)
		case errors.Is(err, netguard.ErrRedirectRefused), errors.Is(err, netguard.ErrTooManyRedirects):
			return nil, fmt.Errorf("%w: %w", ErrDenied, safe)
		}
		return nil, transient(fmt.Errorf("reaching the server: %w", safe))
	}
	return resp, nil
}

func (h *httpObject) get(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	end := off + n - 1
	resp, err := h.do(ctx, fmt.Sprintf("bytes=%d-%d", off, end), true)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (io.ReadCloser, error) {
		drain(resp)
		return nil, err
	}
	if etag := resp.Header.Get("ETag"); h.etag != "" && etag != "" && etag != h.etag {
		return fail(fmt.Errorf("%w: its ETag went from %s to %s; open it again to read the new version", ErrChanged, h.etag, etag))
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		want := fmt.Sprintf("bytes %d-%d/%d", off, end, h.size)
		if cr := resp.Header.Get("Content-Range"); cr != want {
			return fail(fmt.Errorf("%w: asked for %s, the server sent %q; open it again", ErrChanged, want, cr))
		}
	case http.StatusOK:
		if off != 0 || resp.ContentLength != h.size {
			return fail(fmt.Errorf("the server stopped honouring Range requests (HTTP 200 for bytes=%d-%d); serve the file from a server with steady range support", off, end))
		}
	case http.StatusPreconditionFailed:
		return fail(fmt.Errorf("%w: the file was replaced while it was being read (HTTP 412); open it again to read the new version", ErrChanged))
	case http.StatusRequestedRangeNotSatisfiable:
		return fail(fmt.Errorf("%w: the file shrank while it was being read (HTTP 416); open it again", ErrChanged))
	default:
		return fail(statusError(resp))
	}
	if resp.ContentLength >= 0 && resp.ContentLength != n {
		return fail(fmt.Errorf("%w: asked for %d bytes, the response holds %d; open it again", ErrChanged, n, resp.ContentLength))
	}
	return resp.Body, nil
}

// statusError classifies a failed HTTP response.
func statusError(r *http.Response) error {
	switch c := r.StatusCode; {
	case c == http.StatusNotFound || c == http.StatusGone:
		return fmt.Errorf("%w: the server has no such file (HTTP %d); check the URL", ErrNotFound, c)
	case c == http.StatusUnauthorized || c == http.StatusForbidden:
		return fmt.Errorf("%w: the server refused access (HTTP %d); a presigned URL may have expired, or been signed for another method or host: make a new one", ErrDenied, c)
	case c == http.StatusPreconditionFailed:
		return fmt.Errorf("%w: the file was replaced (HTTP 412); open it again", ErrChanged)
	case c == http.StatusTooManyRequests || c == http.StatusRequestTimeout || c >= 500:
		return transient(fmt.Errorf("the server is busy or failing (HTTP %d)", c))
	default:
		return fmt.Errorf("the server answered HTTP %d (%s); check the URL and the server", c, http.StatusText(c))
	}
}

// scrub removes the query string from the URL in a client error: it may hold
// a presigned URL's signature.
func scrub(err error, red string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return &url.Error{Op: ue.Op, URL: red, Err: ue.Err}
	}
	return err
}

// drain discards a little of a response body, so the connection can be
// reused, and closes it.
func drain(r *http.Response) {
	_, _ = io.CopyN(io.Discard, r.Body, 4<<10)
	_ = r.Body.Close()
}
