package imageops

import (
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Transfer counts what crossed the network for an operation, as observed on
// the wire: the figures behind "no base layer bytes moved".
type Transfer struct {
	UploadedBytes   int64 `json:"uploaded_bytes"`   // blob bytes sent (retries included)
	DownloadedBytes int64 `json:"downloaded_bytes"` // blob bytes received
	MountedBlobs    int   `json:"mounted_blobs"`    // blobs cross-repository mounted
	MountedBytes    int64 `json:"mounted_bytes"`
	SkippedBlobs    int   `json:"skipped_blobs"` // blobs the destination already had
	SkippedBytes    int64 `json:"skipped_bytes"`
	Chunks          int   `json:"chunks,omitempty"`        // chunked PATCH requests acknowledged
	ChunkSize       int64 `json:"chunk_size,omitempty"`    // the chunk size, when a 413 made it smaller
	ResumedBytes    int64 `json:"resumed_bytes,omitempty"` // bytes an interrupted upload had sent, not sent again
	// Notes says, in words, where an upload did not go as planned: a
	// refused chunked upload sent in one request, a smaller chunk size after
	// a 413, an interrupted upload resumed or started again.
	Notes []string `json:"notes,omitempty"`
}

// meter is an http.RoundTripper that counts blob traffic. It sits below
// go-containerregistry's auth transport, so it sees the requests as sent.
type meter struct {
	uploaded, downloaded, skippedBytes atomic.Int64
	skipped                            atomic.Int64
	mu                                 sync.Mutex
	mounted                            map[string]bool // digests mounted
	committed                          map[string]bool // digests uploaded by this operation
	retryAfter                         atomic.Int64    // the longest Retry-After seen (ns)
	chunks, resumed, chunkSize         atomic.Int64
	notes                              []string
}

// addNote records how an upload deviated from the plan (Transfer.Notes).
func (m *meter) addNote(s string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.notes) < 100 {
		m.notes = append(m.notes, s)
	}
}

// setChunkSize records a chunk size made smaller by a 413.
func (m *meter) setChunkSize(n int64) {
	for {
		old := m.chunkSize.Load()
		if old != 0 && old <= n || m.chunkSize.CompareAndSwap(old, n) {
			return
		}
	}
}

func newMeter() *meter { return &meter{mounted: map[string]bool{}, committed: map[string]bool{}} }

func (m *meter) wrap(t http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		isBlob := strings.Contains(req.URL.Path, "/blobs/")
		if isBlob && req.Body != nil && (req.Method == http.MethodPatch || req.Method == http.MethodPut) {
			req.Body = &countingReadCloser{ReadCloser: req.Body, n: &m.uploaded}
		}
		resp, err := t.RoundTrip(req)
		if err != nil {
			return resp, err
		}
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			if d := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); d > time.Duration(m.retryAfter.Load()) {
				m.retryAfter.Store(int64(d))
			}
		}
		if !isBlob {
			return resp, nil
		}
		digest := path.Base(req.URL.Path)
		switch {
		case req.Method == http.MethodPut && resp.StatusCode == http.StatusCreated:
			if d := req.URL.Query().Get("digest"); d != "" {
				m.mu.Lock()
				m.committed[d] = true
				m.mu.Unlock()
			}
		case req.Method == http.MethodHead && resp.StatusCode == http.StatusOK:
			m.mu.Lock()
			ours := m.committed[digest] // the existence check of a blob we just uploaded
			m.mu.Unlock()
			if !ours {
				m.skipped.Add(1)
				m.skippedBytes.Add(max(resp.ContentLength, 0))
			}
		case req.Method == http.MethodGet && resp.StatusCode == http.StatusOK:
			resp.Body = &countingReadCloser{ReadCloser: resp.Body, n: &m.downloaded}
		case req.Method == http.MethodPost && resp.StatusCode == http.StatusCreated:
			if d := req.URL.Query().Get("mount"); d != "" {
				m.mu.Lock()
				m.mounted[d] = true
				m.mu.Unlock()
			}
		}
		return resp, nil
	})
}

// transfer totals the counts; sizes maps blob digests to sizes, to price the
// mounts (a mount response does not say how big the blob is).
func (m *meter) transfer(sizes map[string]int64) Transfer {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := Transfer{
		UploadedBytes: m.uploaded.Load(), DownloadedBytes: m.downloaded.Load(),
		SkippedBlobs: int(m.skipped.Load()), SkippedBytes: m.skippedBytes.Load(),
		MountedBlobs: len(m.mounted),
		Chunks:       int(m.chunks.Load()), ChunkSize: m.chunkSize.Load(), ResumedBytes: m.resumed.Load(),
		Notes: append([]string(nil), m.notes...),
	}
	for d := range m.mounted {
		t.MountedBytes += sizes[d]
	}
	return t
}

// parseRetryAfter reads a Retry-After header: seconds, or an HTTP date.
// Absurd values are capped at an hour.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), time.Hour)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type countingReadCloser struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countingReadCloser) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}
