package imageops

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/errgroup"

	"github.com/r8im/r8im/internal/retry"
	"github.com/r8im/r8im/internal/untrusted"
)

// Blob uploads: every blob r8im produces or copies (affix's weights layers,
// zstd's recompressed layers, remix's cross-registry copies) goes through
// uploadBlob, which speaks the OCI distribution upload protocol itself
// because go-containerregistry only streams a blob in one request
// (go-containerregistry#1448):
//
//   - A blob that fits in one chunk is sent in one PATCH, as before.
//   - A bigger one goes in chunks: PATCH with Content-Range and
//     Content-Length, each at most the chunk size (DefaultChunkSize, or the
//     registry's OCI-Chunk-Min-Length if larger, or its
//     OCI-Chunk-Max-Length if smaller), so a CDN front that caps request
//     bodies (Cloudflare: 100–500 MB) never sees a bigger one.
//   - A 413 on a chunk halves the chunk size (not below the registry's
//     minimum) for the rest of the blob; a registry that refuses chunking
//     (a 4xx on the first chunk) gets the blob in one streamed request.
//   - A dropped connection or 5xx during a chunk asks the registry how much
//     it holds (GET on the upload location) and resends only the rest.
//   - After every acknowledged chunk the session (location, offset, the
//     sha256 state of the blob at that offset) is saved to the
//     UploadSessions store, when one is configured. A retry — another
//     worker, the same command run again — finds it, asks the registry for
//     the offset, produces the blob again from the start while sending
//     nothing up to that offset, and checks the hash state there against the
//     saved one: a different input can never be spliced onto an old prefix.
//     An expired session (404) or a mismatch starts the blob again; the
//     registry checks the final digest in any case.
//
// Memory: a chunked upload holds the chunk being sent (at most the chunk
// size, 96 MiB by default) so that it can resend it without producing the
// blob again; a blob sent in one request holds nothing.

// DefaultChunkSize is the upload chunk size: under the 100 MB request-body
// cap of Cloudflare's smaller plans, with room for headers.
const DefaultChunkSize = 96 << 20

// DefaultChunkThreshold is the size from which a blob whose size is known
// in advance is sent in chunks; a blob of unknown size is chunked once it
// outgrows one chunk.
const DefaultChunkThreshold = 128 << 20

// minChunkSize is the floor for chunk halving when the registry names no
// minimum: below it a 413 is a misconfigured front, not a chunk size.
const minChunkSize = 256 << 10

// chunkRetries is how many times one chunk is retried after a dropped
// connection or a 5xx before the upload fails (retryably: the session is
// saved, so the next attempt resumes).
const chunkRetries = 4

// UploadSession is a chunked upload as of its last acknowledged chunk.
type UploadSession struct {
	Location string `json:"location"` // the registry's upload URL
	Offset   int64  `json:"offset"`   // bytes the registry acknowledged
	State    []byte `json:"state"`    // crypto/sha256 state after Offset bytes of the blob
}

// UploadSessions keeps upload sessions between attempts, so that a retry
// resumes a big upload where the last one stopped (WithUploadSessions).
// Keys are opaque strings of at most a few hundred bytes.
type UploadSessions interface {
	// LoadSession returns the session saved under key, or nil.
	LoadSession(ctx context.Context, key string) (*UploadSession, error)
	SaveSession(ctx context.Context, key string, s UploadSession) error
	DeleteSession(ctx context.Context, key string) error
}

// WithChunkSize sets the upload chunk size in bytes (default
// DefaultChunkSize); 0 sends every blob in one request.
func WithChunkSize(n int64) Option {
	return func(o *options) {
		if n >= 0 {
			o.chunkSize = n
		}
	}
}

// WithUploadSessions saves chunked upload sessions in s under keys that
// start with key (which should name the job: a task id, or a hash of a
// command's inputs), so that running the same job again resumes them.
func WithUploadSessions(s UploadSessions, key string) Option {
	return func(o *options) { o.sessions, o.sessionKey = s, key }
}

// blobSpec is one blob to upload.
type blobSpec struct {
	id     string  // names the blob within the job, for its session key
	what   string  // for messages: "the weights layer"
	size   int64   // -1 when unknown until written
	digest v1.Hash // zero when unknown until written
	// maxBuffer, when set, bounds the chunk of a blob whose size is not
	// known (it is held in memory): several such uploads at once share a
	// memory budget.
	maxBuffer int64
	// write writes the blob's bytes from the start; it is called again when
	// the upload starts over.
	write func(w io.Writer) error
}

var (
	// errRestart: the upload must start the blob again (session expired,
	// input changed, digest refused); a note says why.
	errRestart = errors.New("restarting the upload")
	// errChunkingRefused: the registry refused the first chunk.
	errChunkingRefused = errors.New("the registry refused a chunked upload")
)

// uploadAttempts bounds the attempts at one blob within an operation that
// get no further: a failed attempt that is not permanent (the source or the
// registry dropped a connection, a 5xx, a 413 to a streamed chunk) is
// followed by another, which resumes the upload where the registry has it.
// An attempt that got more bytes acknowledged, or learned something for
// the next (a smaller chunk after a 413, one request after a refused
// chunk), does not count.
const uploadAttempts = 3

// uploadHint is what an attempt learned about the registry for the next:
// a smaller chunk after a 413, or one request after a refused chunk.
type uploadHint struct {
	chunk  int64
	single bool
}

// uploadBlob uploads one blob to repo, resuming a saved session when there
// is one, and commits it.
func (o *options) uploadBlob(ctx context.Context, repo name.Repository, m *meter, b blobSpec) error {
	client, err := o.registryClient(ctx, repo, m, transport.PushScope, false)
	if err != nil {
		return err
	}
	key := ""
	if o.sessions != nil {
		key = o.sessionKey + "|" + repo.Name() + "|" + b.id
	}
	var carry *UploadSession // what the last attempt left at the registry
	var hint uploadHint
	for failed := 1; ; {
		u := &blobUpload{ctx: ctx, o: o, m: m, client: client, repo: repo, spec: b, key: key, h: sha256.New(), carry: carry, hint: hint}
		err := u.run()
		if err == nil || failed == uploadAttempts || IsPermanent(err) || ctx.Err() != nil {
			return err
		}
		advanced := u.last != nil && (carry == nil || u.last.Offset > carry.Offset)
		if !advanced && u.hint == hint {
			failed++ // neither more bytes acknowledged nor a lesson learned (a 413's smaller chunk)
		}
		carry, hint = u.last, u.hint
		if errors.Is(err, errRestart) {
			carry = nil
		}
		if err := sleepCtx(ctx, time.Duration(failed)*500*time.Millisecond); err != nil {
			return err
		}
	}
}

// blobUpload is one attempt at uploading a blob. It is the io.Writer the
// blob is written to.
type blobUpload struct {
	ctx    context.Context
	o      *options
	m      *meter
	client *http.Client
	repo   name.Repository
	spec   blobSpec
	key    string         // session key; "" when sessions are not kept
	carry  *UploadSession // the previous attempt's session, to resume
	last   *UploadSession // this attempt's session as of its last acknowledged bytes
	hint   uploadHint     // from the previous attempt; updated for the next

	loc      *url.URL
	offset   int64 // bytes the registry acknowledged
	chunk    int64 // current chunk size; 0 until the upload starts
	minChunk int64
	h        hash.Hash // the blob's digest, over every byte written so far
	written  int64
	buf      []byte // bytes written but not yet acknowledged, from offset
	mem      []byte // buf's memory: one chunk

	// Resuming: bytes up to skip were sent by an earlier attempt; the hash
	// state at checkAt must equal checkState.
	skip, checkAt int64
	checkState    []byte

	sentChunks int // chunks acknowledged in this attempt

	// Streamed chunks (a blob of known size): each chunk's PATCH streams
	// what Write is given, nothing is buffered; a chunk that fails fails
	// the attempt, and the next resumes where the registry has it.
	streamed bool
	chunkEnd int64 // the byte the chunk in flight ends at

	// One-request mode: the blob streams into a single PATCH.
	single     bool
	pw         *io.PipeWriter
	sent       chan streamResult // the PATCH's outcome, once
	streamErr  error             // the PATCH's outcome, once received
	streamCode int               // its status

	err error // the first failure, returned by every later Write

	// A producer may write from a goroutine of its own: writing is held for
	// the length of a Write; stopped refuses later ones; pipe is the request
	// body in flight, for stopWrites to unblock.
	writing sync.Mutex
	stopped bool
	pipe    atomic.Pointer[io.PipeWriter]
}

// errWritesStopped: a write after the attempt ended.
var errWritesStopped = errors.New("the upload attempt has ended")

type streamResult struct {
	loc  *url.URL
	code int // the response's status, 0 when none came
	err  error
}

func (u *blobUpload) run() error {
	if err := u.begin(); err != nil {
		return err
	}
	err := u.spec.write(u)
	u.stopWrites(err)
	if u.err != nil {
		err = u.err // the upload's own failure, not its echo through the writer's pipeline
	}
	if err == nil {
		err = u.commit()
	}
	if err != nil {
		if errors.Is(err, errRestart) || u.last == nil {
			u.abort() // nothing a later attempt could resume
			u.forget()
		} else if u.pw != nil {
			u.pw.CloseWithError(err)
			u.wait()
		}
		return err
	}
	u.forget()
	return nil
}

// stopWrites ends the writes of a producer that returned: one that gave up
// (err) may still have a goroutine of its own inside Write, blocked on a
// request body. That write is unblocked, then awaited; later writes fail.
// Only then may the attempt clean up.
func (u *blobUpload) stopWrites(err error) {
	if pw := u.pipe.Load(); pw != nil && err != nil {
		pw.CloseWithError(err)
	}
	u.writing.Lock()
	u.stopped = true
	u.writing.Unlock()
}

func (u *blobUpload) sum() v1.Hash { return hashOf(u.h) }

// Sum is the digest of what was written: the pass leaves the blob's digest
// to its uploader.
func (u *blobUpload) Sum() v1.Hash { return u.sum() }

// begin resumes the saved session, or starts a new one.
func (u *blobUpload) begin() error {
	u.chunk = u.o.chunkSize
	if u.hint.chunk > 0 {
		u.chunk = u.hint.chunk
	}
	threshold := u.chunk
	if u.chunk == DefaultChunkSize {
		threshold = DefaultChunkThreshold
	}
	if u.spec.size >= 0 && u.spec.size <= threshold || u.hint.single {
		u.chunk = 0 // a known small blob: one request, nothing held in memory
	}
	// A known big blob streams each chunk: nothing held in memory either.
	u.streamed = u.chunk > 0 && u.spec.size >= 0
	if !u.streamed && u.chunk > 0 && u.spec.maxBuffer > 0 {
		u.chunk = min(u.chunk, max(u.spec.maxBuffer, minChunkSize))
	}
	if u.carry != nil {
		if err := u.resume(u.carry); err != nil {
			return err
		}
	} else if u.key != "" {
		s, err := u.o.sessions.LoadSession(u.ctx, u.key)
		if err != nil {
			return fmt.Errorf("reading the saved upload session of %s: %w", u.spec.what, err)
		}
		if s != nil {
			if err := u.resume(s); err != nil {
				return err
			}
		}
	}
	if u.loc == nil {
		return u.start()
	}
	return nil
}

// resume picks up a saved session if the registry still has it.
func (u *blobUpload) resume(s *UploadSession) error {
	loc, err := u.location(s.Location)
	if err != nil {
		u.forget()
		return nil
	}
	u.loc = loc
	u.last = s // still the checkpoint if this attempt fails before a new one
	have, err := u.status()
	switch {
	case errors.Is(err, errRestart):
		u.m.addNote(fmt.Sprintf("%s: the registry no longer has the interrupted upload; sending it from the start", u.spec.what))
		u.loc, u.last = nil, nil
		u.forget()
		return nil
	case err != nil:
		return err
	case have < s.Offset || s.Offset <= 0:
		u.m.addNote(fmt.Sprintf("%s: the interrupted upload cannot be resumed (the registry holds %d bytes, %d were recorded); sending it from the start", u.spec.what, have, s.Offset))
		u.abort()
		u.loc, u.last = nil, nil
		u.forget()
		return nil
	}
	u.offset, u.skip, u.checkAt, u.checkState = have, have, s.Offset, s.State
	u.single = u.chunk == 0 // the rest, if any, in one request
	u.m.resumed.Add(have)
	u.m.addNote(fmt.Sprintf("%s: resuming an interrupted upload at byte %d", u.spec.what, have))
	return nil
}

// start opens an upload session (POST).
func (u *blobUpload) start() error {
	uploadURL := url.URL{Scheme: u.repo.Scheme(), Host: u.repo.RegistryStr(), Path: fmt.Sprintf("/v2/%s/blobs/uploads/", u.repo.RepositoryStr())}
	req, err := http.NewRequestWithContext(u.ctx, http.MethodPost, uploadURL.String(), nil)
	if err != nil {
		return err
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return fmt.Errorf("starting the upload of %s to %s: %w", u.spec.what, u.repo, err)
	}
	defer drain(resp)
	if err := transport.CheckError(resp, http.StatusAccepted); err != nil {
		return registryErr(err, fmt.Sprintf("starting the upload of %s to %s", u.spec.what, u.repo))
	}
	if u.loc, err = u.location(resp.Header.Get("Location")); err != nil {
		return err
	}
	u.offset = 0
	if u.chunk > 0 {
		if v, err := strconv.ParseInt(resp.Header.Get("OCI-Chunk-Min-Length"), 10, 64); err == nil && v > 0 {
			u.minChunk = v
			u.chunk = max(u.chunk, v)
		}
		if v, err := strconv.ParseInt(resp.Header.Get("OCI-Chunk-Max-Length"), 10, 64); err == nil && v >= max(u.minChunk, 1) {
			u.chunk = min(u.chunk, v)
		}
	}
	if u.chunk == 0 {
		u.single = true
	}
	return nil
}

// location resolves an upload location the registry sent, which must stay
// on the registry's own scheme and host.
func (u *blobUpload) location(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, fmt.Errorf("uploading %s to %s: the registry sent no upload location", u.spec.what, u.repo)
	}
	base := &url.URL{Scheme: u.repo.Scheme(), Host: u.repo.RegistryStr(), Path: "/"}
	if u.loc != nil {
		base = u.loc
	}
	return u.locationFrom(base, raw)
}

// locationFrom resolves raw against base (location without touching u).
func (u *blobUpload) locationFrom(base *url.URL, raw string) (*url.URL, error) {
	if raw == "" {
		return nil, fmt.Errorf("uploading %s to %s: the registry sent no upload location", u.spec.what, u.repo)
	}
	loc, err := base.Parse(raw)
	// The scheme may be https where the reference says http (a TLS registry
	// on loopback, found by go-containerregistry's ping), never the reverse.
	if err != nil || (loc.Scheme != u.repo.Scheme() && loc.Scheme != "https") || loc.Host != u.repo.RegistryStr() {
		return nil, fmt.Errorf("uploading %s to %s: the registry sent an upload location off its own host (%s); r8im sends blobs only to the registry named", u.spec.what, u.repo, untrusted.URL(raw))
	}
	return loc, nil
}

// Write takes the next bytes of the blob.
func (u *blobUpload) Write(p []byte) (int, error) {
	u.writing.Lock()
	defer u.writing.Unlock()
	if u.stopped {
		return 0, errWritesStopped
	}
	if u.err != nil {
		return 0, u.err
	}
	n := len(p)
	for len(p) > 0 {
		// Resuming: hash, check and drop what the registry already has.
		if u.written < u.skip {
			k := int64(len(p))
			if u.written < u.checkAt {
				k = min(k, u.checkAt-u.written)
			} else {
				k = min(k, u.skip-u.written)
			}
			u.h.Write(p[:k])
			u.written += k
			p = p[k:]
			if u.written == u.checkAt && !u.stateMatches() {
				u.m.addNote(fmt.Sprintf("%s: the input changed since the interrupted upload; sending it from the start", u.spec.what))
				return 0, u.fail(fmt.Errorf("%w: %s differs from the interrupted upload's", errRestart, u.spec.what))
			}
			continue
		}
		if u.streamed {
			k, err := u.writeStreamed(p)
			if err != nil {
				return 0, u.fail(err)
			}
			p = p[k:]
			continue
		}
		if u.single {
			if u.pw == nil {
				u.stream()
			}
			u.h.Write(p)
			u.written += int64(len(p))
			if _, err := u.pw.Write(p); err != nil {
				return 0, u.fail(u.streamFailed(err))
			}
			return n, nil
		}
		k := min(len(p), int(u.chunk)-len(u.buf))
		if len(u.buf)+k > cap(u.buf) {
			// 1 MiB first, then the whole chunk at once: a small blob holds
			// little, a big one one chunk (growing by steps would hold more).
			size := int(u.chunk)
			if cap(u.buf) == 0 {
				size = min(size, max(k, 1<<20))
			}
			nb := make([]byte, len(u.buf), size)
			copy(nb, u.buf)
			u.mem, u.buf = nb, nb
		}
		u.buf = append(u.buf, p[:k]...)
		u.h.Write(p[:k])
		u.written += int64(k)
		p = p[k:]
		if len(u.buf) >= int(u.chunk) {
			if err := u.flush(); err != nil {
				return 0, u.fail(err)
			}
		}
	}
	return n, nil
}

func (u *blobUpload) fail(err error) error {
	if u.err == nil {
		u.err = err
	}
	return u.err
}

func (u *blobUpload) stateMatches() bool {
	st, err := u.h.(encoding.BinaryMarshaler).MarshalBinary()
	return err == nil && bytes.Equal(st, u.checkState)
}

// flush sends the buffered bytes as chunks and saves the session.
func (u *blobUpload) flush() error {
	for len(u.buf) > 0 {
		err := u.sendChunk()
		if errors.Is(err, errChunkingRefused) {
			return u.fallBack()
		}
		if err != nil {
			return err
		}
	}
	u.buf = u.mem[:0]
	u.save()
	return nil
}

// sendChunk sends the front of buf (at most one chunk) and drops what the
// registry acknowledged, retrying dropped connections and 5xx.
func (u *blobUpload) sendChunk() error {
	for tries := 0; ; tries++ {
		n := min(int64(len(u.buf)), u.chunk)
		var wait time.Duration
		resp, err := u.patch(u.buf[:n])
		if err == nil {
			switch {
			case resp.StatusCode == http.StatusAccepted:
				loc, lerr := u.location(resp.Header.Get("Location"))
				drain(resp)
				if lerr != nil {
					return lerr
				}
				u.loc = loc
				u.offset += n
				u.buf = u.buf[n:]
				u.sentChunks++
				u.m.chunks.Add(1)
				return nil
			case resp.StatusCode == http.StatusRequestEntityTooLarge:
				drain(resp)
				half := u.chunk / 2
				if half < max(u.minChunk, minChunkSize) {
					return fmt.Errorf("uploading %s to %s: a request of %d bytes was refused as too large (413), and the registry's minimum chunk is %d: the registry's front caps request bodies below what the registry accepts", u.spec.what, u.repo, n, max(u.minChunk, minChunkSize))
				}
				u.chunk = half
				u.m.setChunkSize(half)
				u.m.addNote(fmt.Sprintf("%s: a chunk of %d bytes was refused as too large (413); sending chunks of %d bytes", u.spec.what, n, half))
				tries--
				continue
			case u.offset == 0 && u.sentChunks == 0 && refusesChunks(resp.StatusCode):
				drain(resp)
				return errChunkingRefused
			case resp.StatusCode == http.StatusNotFound:
				drain(resp)
				u.m.addNote(fmt.Sprintf("%s: the registry dropped the upload session; sending it from the start", u.spec.what))
				return errRestart
			case resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusRequestTimeout:
				err := transport.CheckError(resp, http.StatusAccepted)
				drain(resp)
				return registryErr(err, fmt.Sprintf("uploading %s to %s", u.spec.what, u.repo))
			default:
				err = transport.CheckError(resp, http.StatusAccepted)
				wait = retry.ParseAfter(resp.Header.Get("Retry-After"), time.Now())
				drain(resp)
			}
		}
		if u.ctx.Err() != nil {
			return u.ctx.Err()
		}
		if tries >= chunkRetries {
			return fmt.Errorf("uploading %s to %s: chunk at byte %d failed %d times: %w", u.spec.what, u.repo, u.offset, tries+1, err)
		}
		if err := sleepCtx(u.ctx, max(wait, time.Duration(1<<tries)*500*time.Millisecond)); err != nil {
			return err
		}
		// How much of the chunk did the registry keep?
		have, serr := u.status()
		if serr != nil {
			if errors.Is(serr, errRestart) {
				return serr
			}
			continue // the registry is still unreachable: try again
		}
		if have < u.offset || have > u.offset+n {
			u.m.addNote(fmt.Sprintf("%s: the registry reports %d bytes where %d were acknowledged; sending it from the start", u.spec.what, have, u.offset))
			return errRestart
		}
		u.buf = u.buf[have-u.offset:]
		u.offset = have
		if len(u.buf) == 0 {
			return nil
		}
	}
}

// refusesChunks reports whether a status on the first chunk means the
// registry takes no chunked uploads (Range not satisfiable, method or
// feature not supported, a bad request over Content-Range).
func refusesChunks(code int) bool {
	switch code {
	case http.StatusRequestedRangeNotSatisfiable, http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return true
	}
	return false
}

func (u *blobUpload) patch(p []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(u.ctx, http.MethodPatch, u.loc.String(), bytes.NewReader(p))
	if err != nil {
		return nil, err
	}
	req.ContentLength = int64(len(p))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", u.offset, u.offset+int64(len(p))-1))
	return u.client.Do(req)
}

// fallBack switches to one request after the registry refused the first
// chunk: a new session, and the buffered bytes first in its stream.
func (u *blobUpload) fallBack() error {
	u.m.addNote(fmt.Sprintf("%s: the registry refused a chunked upload; sent in one request", u.spec.what))
	u.abort()
	u.single = true
	if err := u.start(); err != nil {
		return err
	}
	u.single = true
	u.stream()
	pending := u.buf
	u.buf, u.mem = nil, nil
	if _, err := u.pw.Write(pending); err != nil {
		return u.streamFailed(err)
	}
	return nil
}

// stream starts the one-request PATCH whose body is what Write is given.
func (u *blobUpload) stream() { u.streamPatch(-1) }

// streamPatch starts a PATCH whose body is what Write is given: the rest
// of the blob when n < 0, else a chunk of n bytes from offset.
func (u *blobUpload) streamPatch(n int64) {
	pr, pw := io.Pipe()
	u.pw = pw
	u.pipe.Store(pw)
	u.sent = make(chan streamResult, 1)
	req, err := http.NewRequestWithContext(u.ctx, http.MethodPatch, u.loc.String(), pr)
	if err != nil {
		u.sent <- streamResult{err: err}
		pr.CloseWithError(err)
		return
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if n >= 0 {
		req.ContentLength = n
		req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", u.offset, u.offset+n-1))
	}
	loc := *u.loc
	go func() {
		var r streamResult
		resp, err := u.client.Do(req)
		if err == nil {
			r.code = resp.StatusCode
			if err = transport.CheckError(resp, http.StatusAccepted); err != nil {
				err = registryErr(err, fmt.Sprintf("uploading %s to %s", u.spec.what, u.repo))
			} else {
				r.loc, err = u.locationFrom(&loc, resp.Header.Get("Location"))
			}
			drain(resp)
		}
		r.err = err
		pr.CloseWithError(err)
		u.sent <- r
	}()
}

// wait returns the streamed PATCH's outcome, waiting for it once.
func (u *blobUpload) wait() error {
	if u.sent != nil {
		r := <-u.sent
		u.sent = nil
		u.streamErr, u.streamCode = r.err, r.code
		if r.loc != nil {
			u.loc = r.loc
		}
	}
	return u.streamErr
}

// writeStreamed sends the front of p in the chunk in flight, starting one
// when none is, and ends the chunk when it is full: the registry's answer
// is awaited and the session saved. It returns how much of p it took.
func (u *blobUpload) writeStreamed(p []byte) (int, error) {
	if u.pw == nil {
		n := min(u.chunk, u.spec.size-u.written)
		if n <= 0 {
			return 0, fmt.Errorf("%s is longer than the %d bytes announced", u.spec.what, u.spec.size)
		}
		u.chunkEnd = u.written + n
		u.streamPatch(n)
	}
	k := int(min(int64(len(p)), u.chunkEnd-u.written))
	u.h.Write(p[:k])
	u.written += int64(k)
	if _, err := u.pw.Write(p[:k]); err != nil {
		return 0, u.chunkFailed(u.streamFailed(err))
	}
	if u.written == u.chunkEnd {
		u.pw.Close()
		u.pw = nil
		if err := u.wait(); err != nil {
			return 0, u.chunkFailed(fmt.Errorf("uploading %s to %s: %w", u.spec.what, u.repo, err))
		}
		u.offset = u.written
		u.sentChunks++
		u.m.chunks.Add(1)
		u.save()
	}
	return k, nil
}

// chunkFailed explains a streamed chunk's failure and sets the hint for
// the next attempt: a 413 halves the chunk, a refused first chunk sends the
// blob in one request, a lost session starts it again.
func (u *blobUpload) chunkFailed(err error) error {
	switch code := u.streamCode; {
	case code == http.StatusRequestEntityTooLarge:
		half := u.chunk / 2
		if half < max(u.minChunk, minChunkSize) {
			return fmt.Errorf("uploading %s to %s: a request of %d bytes was refused as too large (413), and the registry's minimum chunk is %d: the registry's front caps request bodies below what the registry accepts", u.spec.what, u.repo, u.chunk, max(u.minChunk, minChunkSize))
		}
		u.hint.chunk = half
		u.m.setChunkSize(half)
		u.m.addNote(fmt.Sprintf("%s: a chunk of %d bytes was refused as too large (413); sending chunks of %d bytes", u.spec.what, u.chunk, half))
	case u.offset == 0 && u.sentChunks == 0 && refusesChunks(code):
		u.hint.single = true
		u.m.addNote(fmt.Sprintf("%s: the registry refused a chunked upload; sent in one request", u.spec.what))
		return fmt.Errorf("%w: %v", errRestart, err)
	case code == http.StatusNotFound:
		u.m.addNote(fmt.Sprintf("%s: the registry dropped the upload session; sending it from the start", u.spec.what))
		return fmt.Errorf("%w: %v", errRestart, err)
	}
	return err
}

// streamFailed explains a failed write to the one-request stream by the
// request's own outcome.
func (u *blobUpload) streamFailed(werr error) error {
	u.pw.CloseWithError(werr)
	if err := u.wait(); err != nil {
		return fmt.Errorf("uploading %s to %s: %w", u.spec.what, u.repo, err)
	}
	return werr
}

// commit sends what is left and PUTs the digest.
func (u *blobUpload) commit() error {
	if u.single && (u.pw != nil || u.offset == 0) {
		if u.pw == nil {
			u.stream() // an empty blob
		}
		u.pw.Close()
		if err := u.wait(); err != nil {
			return fmt.Errorf("uploading %s to %s: %w", u.spec.what, u.repo, err)
		}
		u.offset = u.written
		u.save()
	} else if u.streamed {
		if u.pw != nil || u.written != u.spec.size {
			return fmt.Errorf("%s is shorter (%d bytes) than the %d bytes announced", u.spec.what, u.written, u.spec.size)
		}
	} else if !u.single {
		if err := u.flush(); err != nil {
			return err
		}
	}
	if u.written < u.skip {
		return fmt.Errorf("%w: %s is shorter than the interrupted upload's", errRestart, u.spec.what)
	}
	d := u.sum()
	if u.spec.digest != (v1.Hash{}) && d != u.spec.digest {
		return fmt.Errorf("uploading %s: its bytes hash to %s, not the expected %s", u.spec.what, d, u.spec.digest)
	}
	put := *u.loc
	q := put.Query()
	q.Set("digest", d.String())
	put.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(u.ctx, http.MethodPut, put.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := u.client.Do(req)
	if err != nil {
		return fmt.Errorf("committing %s to %s: %w", u.spec.what, u.repo, err)
	}
	defer drain(resp)
	if err := transport.CheckError(resp, http.StatusCreated); err != nil {
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusBadRequest && u.skip > 0 {
			u.m.addNote(fmt.Sprintf("%s: the registry refused the resumed upload at commit (%d); sending it from the start", u.spec.what, resp.StatusCode))
			return fmt.Errorf("%w: %v", errRestart, err)
		}
		return registryErr(err, fmt.Sprintf("committing %s to %s", u.spec.what, u.repo))
	}
	return nil
}

// status asks the registry how many bytes the upload holds. errRestart
// means the session is gone.
func (u *blobUpload) status() (int64, error) {
	req, err := http.NewRequestWithContext(u.ctx, http.MethodGet, u.loc.String(), nil)
	if err != nil {
		return 0, err
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("asking %s for the upload's progress: %w", u.repo.RegistryStr(), err)
	}
	defer drain(resp)
	if resp.StatusCode == http.StatusNotFound {
		return 0, errRestart
	}
	if err := transport.CheckError(resp, http.StatusNoContent, http.StatusAccepted); err != nil {
		return 0, registryErr(err, "asking for the upload's progress")
	}
	if loc := resp.Header.Get("Location"); loc != "" {
		if l, err := u.location(loc); err == nil {
			u.loc = l
		}
	}
	return parseRange(resp.Header.Get("Range"))
}

// parseRange reads the Range header of an upload's status, "0-<last>", as
// a byte count. An empty upload is "0-0" on distribution 2.8 (and "0--1"
// on some versions), the same text as a one-byte upload: it is read as 0,
// since a registry that kept one byte answers the next chunk with 416.
func parseRange(v string) (int64, error) {
	v = strings.TrimPrefix(strings.TrimSpace(v), "bytes=")
	if v == "" {
		return 0, nil
	}
	first, last, ok := strings.Cut(v, "-")
	if !ok || first != "0" {
		return 0, fmt.Errorf("the registry sent an upload Range of %q, not 0-<last>", v)
	}
	n, err := strconv.ParseInt(last, 10, 64)
	if err != nil || n < -1 {
		return 0, fmt.Errorf("the registry sent an upload Range of %q, not 0-<last>", v)
	}
	if n <= 0 {
		return 0, nil
	}
	return n + 1, nil
}

// save records the session after acknowledged bytes, for the next attempt
// and, when sessions are kept, for the next process; a failure to save costs
// only the ability to resume, so it is not an upload failure.
func (u *blobUpload) save() {
	if u.offset == 0 || u.written != u.offset {
		return
	}
	st, err := u.h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return
	}
	u.last = &UploadSession{Location: u.loc.String(), Offset: u.offset, State: st}
	if u.key == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(u.ctx), 5*time.Second)
	defer cancel()
	if err := u.o.sessions.SaveSession(ctx, u.key, *u.last); err != nil {
		u.m.addNote(fmt.Sprintf("%s: saving the upload session failed (%v); an interruption would send it again", u.spec.what, err))
	}
}

func (u *blobUpload) forget() {
	if u.key == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(u.ctx), 5*time.Second)
	defer cancel()
	_ = u.o.sessions.DeleteSession(ctx, u.key)
}

// abort cancels the registry's session (best effort) unless it is saved
// for a later resume.
func (u *blobUpload) abort() {
	if u.loc == nil {
		return
	}
	if u.pw != nil {
		u.pw.CloseWithError(errors.New("upload abandoned"))
		u.wait()
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(u.ctx), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, u.loc.String(), nil)
	if err != nil {
		return
	}
	if resp, err := u.client.Do(req); err == nil {
		drain(resp)
	}
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// uploadLayers uploads, through uploadBlob (chunked, resumable), the layers
// of images that the destination lacks: with all, every one but those
// mountable within the registry (Push: the caller's layers); without, only
// those that live on another registry (the operations' own layers are up
// already). go-containerregistry would stream each in one request, which a
// front capping request bodies refuses; after this, remote.Write finds
// them all.
func (op *operation) uploadLayers(images []platformImage, all bool) error {
	client, err := op.o.registryClient(op.ctx, op.repo, nil, transport.PushScope, false) // unmetered: remote.Write's own existence check is the one counted
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(op.ctx)
	g.SetLimit(op.o.jobs)
	seen := map[v1.Hash]bool{}
	for _, pi := range images {
		layers, err := pi.image.Layers()
		if err != nil {
			return fmt.Errorf("listing the layers to push: %w", err)
		}
		for _, l := range layers {
			ml, mountable := l.(*remote.MountableLayer)
			switch {
			case mountable && ml.Reference.Context().RegistryStr() == op.repo.RegistryStr():
				continue // remote.Write mounts it
			case !mountable && !all:
				continue // ours, up already
			}
			what := "layer %s"
			if mountable {
				what += " (copied from " + ml.Reference.Context().RegistryStr() + ")"
			}
			d, err := l.Digest()
			if err != nil || seen[d] {
				continue
			}
			seen[d] = true
			size, err := l.Size()
			if err != nil {
				return fmt.Errorf("reading the size of layer %s: %w", d, err)
			}
			g.Go(func() error {
				if have, err := blobExists(ctx, client, op.repo, d); err != nil || have {
					return err
				}
				return op.o.uploadBlob(ctx, op.repo, op.m, blobSpec{
					id: "copy/" + d.String(), what: fmt.Sprintf(what, d),
					size: size, digest: d,
					write: func(w io.Writer) error {
						rc, err := l.Compressed()
						if err != nil {
							return registryErr(err, "reading layer "+d.String())
						}
						defer rc.Close()
						_, err = io.Copy(w, rc)
						return err
					},
				})
			})
		}
	}
	return g.Wait()
}

// blobExists asks repo's registry whether it holds blob d.
func blobExists(ctx context.Context, client *http.Client, repo name.Repository, d v1.Hash) (bool, error) {
	size, err := blobSize(ctx, client, repo, d)
	return size >= 0, err
}

// blobSize asks repo's registry for the size of blob d: -1 when it does not
// hold it, 0 when it holds it without saying how big it is.
func blobSize(ctx context.Context, client *http.Client, repo name.Repository, d v1.Hash) (int64, error) {
	u := url.URL{Scheme: repo.Scheme(), Host: repo.RegistryStr(), Path: fmt.Sprintf("/v2/%s/blobs/%s", repo.RepositoryStr(), d)}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u.String(), nil)
	if err != nil {
		return -1, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return -1, fmt.Errorf("checking for blob %s in %s: %w", d, repo, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return -1, nil
	}
	return max(resp.ContentLength, 0), nil
}
