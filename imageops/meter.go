package imageops

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/r8im/r8im/internal/retry"
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
	// RefusedMounts counts base blobs of the destination's registry that
	// it would not mount (the credentials may not pull their repository):
	// they were downloaded and uploaded again (RefusedMountBytes).
	RefusedMounts     int   `json:"refused_mounts,omitempty"`
	RefusedMountBytes int64 `json:"refused_mount_bytes,omitempty"`
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
	mounted                            map[string]bool   // digests mounted
	refused                            map[string]string // digests whose same-registry mount was refused → source repository
	requireMount                       bool              // fail the copy of a refused mount (MountRefusedError)
	sizes                              map[string]int64  // blob sizes of the images pushed, to price mounts
	committed                          map[string]bool   // digests uploaded by this operation
	retryAfter                         atomic.Int64      // the longest Retry-After seen (ns)
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

func newMeter() *meter {
	return &meter{mounted: map[string]bool{}, committed: map[string]bool{}, refused: map[string]string{}}
}

// addSizes records the layer and config sizes of img, which prices the
// blobs of it that were mounted, skipped or copied.
func (m *meter) addSizes(img v1.Image) {
	mf, err := img.Manifest()
	if err != nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sizes == nil {
		m.sizes = map[string]int64{}
	}
	m.sizes[mf.Config.Digest.String()] = mf.Config.Size
	for _, l := range mf.Layers {
		m.sizes[l.Digest.String()] = l.Size
	}
}

// refusedFrom returns the repository a refused mount of digest was asked
// from, if the mount was refused and never succeeded since.
func (m *meter) refusedFrom(digest string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	from, ok := m.refused[digest]
	return from, ok && !m.mounted[digest]
}

func (m *meter) wrap(t http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		isBlob := strings.Contains(req.URL.Path, "/blobs/")
		if isBlob && req.Method == http.MethodGet && m.requireMount {
			// go-containerregistry copies a blob whose mount was refused:
			// the download is where that copy starts.
			if from, ok := m.refusedFrom(path.Base(req.URL.Path)); ok {
				return nil, &MountRefusedError{Digest: path.Base(req.URL.Path), From: from, Registry: req.URL.Host}
			}
		}
		if isBlob && req.Body != nil && (req.Method == http.MethodPatch || req.Method == http.MethodPut) {
			req.Body = &countingReadCloser{ReadCloser: req.Body, n: &m.uploaded}
		}
		resp, err := t.RoundTrip(req)
		if err != nil {
			return resp, err
		}
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			if d := retry.ParseAfter(resp.Header.Get("Retry-After"), time.Now()); d > time.Duration(m.retryAfter.Load()) {
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
		case req.Method == http.MethodPost && req.URL.Query().Get("mount") != "":
			q := req.URL.Query()
			d, from, origin := q.Get("mount"), q.Get("from"), q.Get("origin")
			m.mu.Lock()
			switch {
			case resp.StatusCode == http.StatusCreated:
				m.mounted[d] = true
			case from != "" && (origin == "" || origin == req.URL.Host):
				// a same-registry mount answered 202 (an upload instead) or
				// 401/403 (no pull on from): the blob will be copied
				m.refused[d] = from
			}
			m.mu.Unlock()
		}
		return resp, nil
	})
}

// transfer totals the counts; sizes maps blob digests to sizes, to price the
// mounts (a mount response does not say how big the blob is).
func (m *meter) transfer(sizes map[string]int64) Transfer {
	m.mu.Lock()
	defer m.mu.Unlock()
	all := maps.Clone(m.sizes)
	if all == nil {
		all = map[string]int64{}
	}
	maps.Copy(all, sizes)
	sizes = all
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
	froms := map[string]bool{}
	for d, from := range m.refused {
		if !m.mounted[d] {
			t.RefusedMounts++
			t.RefusedMountBytes += sizes[d]
			froms[from] = true
		}
	}
	if t.RefusedMounts > 0 {
		t.Notes = append(t.Notes, fmt.Sprintf("the registry refused to mount %d base blob(s) (%d bytes) from %s: they were downloaded and uploaded again; "+
			"credentials that may pull %s would mount them instead", t.RefusedMounts, t.RefusedMountBytes, joinSorted(froms), joinSorted(froms)))
	}
	return t
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

// joinSorted lists a set's members in order.
func joinSorted(set map[string]bool) string {
	var l []string
	for k := range set {
		l = append(l, k)
	}
	slices.Sort(l)
	return strings.Join(l, ", ")
}
