package imageops

import (
	"fmt"
	"io"
	"net/http"
	"regexp"

	"github.com/r8im/r8im/internal/retry"
	"github.com/r8im/r8im/internal/untrusted"
)

// ErrTooLarge: a manifest, index, config or other registry answer is
// larger than the cap (WithMaxManifestSize). It is permanent: the registry
// holds it as it is.
var ErrTooLarge = retry.New("too large")

// TooLargeError says what was too large, and how large.
type TooLargeError struct {
	What  string // "the answer to GET https://…", "config sha256:… of …"
	Size  int64  // declared size; -1 when the body just kept coming
	Limit int64
}

func (e *TooLargeError) Error() string {
	if e.Size < 0 {
		return fmt.Sprintf("%s is %v: it holds more than the %d-byte limit on manifests, indexes and configs", e.What, ErrTooLarge, e.Limit)
	}
	return fmt.Sprintf("%s is %v: %d bytes, more than the %d-byte limit on manifests, indexes and configs", e.What, ErrTooLarge, e.Size, e.Limit)
}

func (e *TooLargeError) Unwrap() error { return ErrTooLarge }

// blobPath is a blob's content URL: GET /v2/<name>/blobs/<digest>.
var blobPath = regexp.MustCompile(`^/v2/.+/blobs/[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`)

// capBodies fails any registry answer but a blob's content that is larger
// than max: by its Content-Length before a byte of it is read, else once
// max+1 bytes have come. Manifests, indexes, tag lists, error and token
// answers are all small; blob contents are bounded by their descriptors'
// sizes instead (and image configs' descriptors by resolve). A blob GET is
// recognised by the first request of its redirect chain, since a registry
// may redirect it anywhere (a CDN).
func capBodies(rt http.RoundTripper, max int64) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		if err != nil || resp.Body == nil || resp.Body == http.NoBody || req.Method == http.MethodHead || isBlobGet(req) {
			return resp, err
		}
		what := "the answer to " + req.Method + " " + untrusted.URL(req.URL.String())
		if resp.ContentLength > max {
			resp.Body.Close()
			return nil, &TooLargeError{What: what, Size: resp.ContentLength, Limit: max}
		}
		resp.Body = &cappedBody{rc: resp.Body, left: max, err: &TooLargeError{What: what, Size: -1, Limit: max}}
		return resp, nil
	})
}

// isBlobGet reports whether req GETs a blob's content, directly or through
// redirects.
func isBlobGet(req *http.Request) bool {
	first := req
	for i := 0; first.Response != nil && first.Response.Request != nil && i < 100; i++ {
		first = first.Response.Request
	}
	return first.Method == http.MethodGet && blobPath.MatchString(first.URL.Path)
}

// cappedBody reads at most left+1 bytes from rc: the one past the limit
// tells a body that is too long.
type cappedBody struct {
	rc   io.ReadCloser
	left int64
	err  error
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, b.err
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return n - 1, b.err
	}
	return n, err
}

func (b *cappedBody) Close() error { return b.rc.Close() }
