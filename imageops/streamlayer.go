package imageops

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/stream"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/r8im/r8im/internal/retry"
)

// streamLayer is a layer produced, compressed and hashed in one pass while
// go-containerregistry uploads it. Unlike stream.Layer it can be read again:
// each Compressed() call runs produce anew, so go-containerregistry's retry
// of a failed upload works. Digest, DiffID and Size report
// stream.ErrNotComputed until a pass has completed, which makes
// remote.WriteLayer stream the blob and commit it with the digest computed
// on the way.
type streamLayer struct {
	// produce writes the layer's uncompressed tar to w. An error it returns
	// that is permanent (bad input) should be marked with permanent().
	produce func(w io.Writer) error
	// verify, if set, checks the diffID once produce is done and before the
	// stream ends, so a failed check aborts the upload: the blob is never
	// committed. Its error is permanent.
	verify      func(diffID v1.Hash) error
	compression Compression
	level       int
	mediaType   types.MediaType
	// maxBuffer bounds the chunk held in memory when the layer's size is
	// not known in advance (see blobSpec); 0 means the chunk size.
	maxBuffer int64

	mu               sync.Mutex
	computed         bool
	digest, diffID   v1.Hash
	size, uncompSize int64
	err              error // a permanent error: later passes fail at once
}

var _ v1.Layer = (*streamLayer)(nil)

// permanent marks an error that retrying cannot fix.
func permanent(err error) error { return retry.Permanent(err) }

func (l *streamLayer) Digest() (v1.Hash, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.computed {
		return v1.Hash{}, stream.ErrNotComputed
	}
	return l.digest, nil
}

func (l *streamLayer) DiffID() (v1.Hash, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.computed {
		return v1.Hash{}, stream.ErrNotComputed
	}
	return l.diffID, nil
}

func (l *streamLayer) Size() (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.computed {
		return 0, stream.ErrNotComputed
	}
	return l.size, nil
}

func (l *streamLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }

// failure returns the permanent error that stopped a pass, if any.
func (l *streamLayer) failure() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Uncompressed is not needed to push; it is provided for completeness.
func (l *streamLayer) Uncompressed() (io.ReadCloser, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(l.produce(pw)) }()
	return pr, nil
}

// Compressed starts a pass: produce → diffID hash → compress → digest hash
// → the returned reader. Closing the reader early stops the pass.
func (l *streamLayer) Compressed() (io.ReadCloser, error) {
	if err := l.failure(); err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(l.pass(pw)) }()
	return pr, nil
}

// Pipeline sizes: each stage takes chunks of stageChunk bytes and holds at
// most stageDepth of them, so a pass buffers a few MiB whatever the layer
// size. Measured on 1 GiB of fp16 weights: as fast as 1 MiB × 4 chunks,
// with 9 MiB less peak RSS (docs/performance.md).
const (
	stageChunk = 512 << 10
	stageDepth = 3
)

// pass runs one pass as a pipeline of goroutines, so that on a few cores
// the stages overlap instead of adding up (docs/design.md §6):
//
//	produce ─┬─ diffID hash
//	         └─ compress ── digest hash ── out (the uploader)
//
// The fork is one stage with two consumers: produce's bytes are copied once
// into a chunk that both read. Uncompressed layers skip the compressor and
// the second hash (their digest is their diffID). Every stage sees the same
// bytes in the same order as a sequential pass would, so the output is
// identical.
//
// When out is a digester (the blob uploader, which must hash exactly up to
// each chunk it saves), the blob's digest is left to it; an uncompressed
// layer with nothing to verify then has no hash stage of its own.
func (l *streamLayer) pass(out io.Writer) (err error) {
	stopped := make(chan struct{}) // closed when the pass gives up: stages drop their work
	defer close(stopped)

	uncompressed := l.compression == Uncompressed
	outer, outHashes := out.(digester)
	digest := sha256.New()
	var compressed int64
	send := func(p []byte) error {
		if !uncompressed && !outHashes {
			digest.Write(p)
		}
		compressed += int64(len(p))
		_, err := out.Write(p)
		return err
	}
	diffID := sha256.New()
	var uncompSize int64
	hash := func(p []byte) error {
		diffID.Write(p)
		uncompSize += int64(len(p))
		return nil
	}
	var sink *stage       // the compressor's output, when there is a compressor
	var to *stage         // what produce writes to
	var cw io.WriteCloser // the compressor, writing to sink
	switch {
	case uncompressed && outHashes && l.verify == nil:
		to = newStage(stopped, send) // the diffID is the digest the uploader computes
	case uncompressed:
		// The sink hashes nothing; hashing and sending overlap anyway.
		to = newStage(stopped, hash, send)
	default:
		sink = newStage(stopped, send)
		if cw, err = newCompressor(sink, l.compression, l.level); err != nil {
			return err
		}
		to = newStage(stopped, hash, func(p []byte) error {
			_, err := cw.Write(p)
			return err
		})
	}
	// On every early return the deferred close(stopped) ends the stages'
	// goroutines; none is left blocked, whichever end failed.
	if err := l.produce(to); err != nil {
		return l.failed(err)
	}
	if err := to.Close(); err != nil {
		if sink != nil && to.failedConsumer() == 1 {
			return fmt.Errorf("compressing: %w", err)
		}
		return err
	}
	if l.verify != nil {
		if err := l.verify(hashOf(diffID)); err != nil {
			return l.failed(permanent(err))
		}
	}
	if sink != nil {
		if err := cw.Close(); err != nil {
			return fmt.Errorf("compressing: %w", err)
		}
		if err := sink.Close(); err != nil {
			return err
		}
	}
	// Set before the reader sees EOF: the uploader asks for the digest as
	// soon as the body is consumed.
	l.mu.Lock()
	defer l.mu.Unlock()
	l.computed = true
	l.diffID = hashOf(diffID)
	l.digest = l.diffID
	switch {
	case outHashes:
		l.digest = outer.Sum()
		if uncompressed && l.verify == nil {
			l.diffID, uncompSize = l.digest, compressed
		}
	case !uncompressed:
		l.digest = hashOf(digest)
	}
	l.size, l.uncompSize = compressed, uncompSize
	return nil
}

// digester is a writer that hashes what it is given.
type digester interface{ Sum() v1.Hash }

// upload produces the layer straight into a (chunked, resumable) upload to
// repo; id names the layer within the operation, for its saved session;
// size is the blob's size when known in advance (an uncompressed layer of a
// planned layout), else -1.
func (l *streamLayer) upload(ctx context.Context, o *options, repo name.Repository, m *meter, id, what string, size int64) error {
	if err := l.failure(); err != nil {
		return err
	}
	err := o.uploadBlob(ctx, repo, m, blobSpec{id: id, what: what, size: size, write: l.pass, maxBuffer: l.maxBuffer})
	if perm := l.failure(); perm != nil {
		return perm
	}
	return err
}

// stage is a pipeline step: bytes written to it are cut into chunks that
// each of its consumers — a goroutine apiece — is handed, in order. The
// bytes are copied once, whatever the number of consumers; a chunk is
// reused once every consumer is done with it. Close flushes and waits for
// every consumer to have seen everything. A consumer's error stops the
// stage and is returned by later writes and by Close; once the pass's
// stopped channel is closed, the goroutines and any blocked writer return
// at once.
type stage struct {
	consumers []chan *chunk
	free      chan *chunk
	failed    chan struct{} // closed at the first consumer error
	stopped   <-chan struct{}
	wg        sync.WaitGroup
	buf       *chunk

	once   sync.Once
	err    error // the first consumer error, readable once failed is closed
	failer int   // the index of the consumer that failed first
}

// chunk is stageChunk bytes that refs consumers have still to see.
type chunk struct {
	p    []byte
	refs atomic.Int32
}

// errStageStopped is what a stage returns after the pass gave up.
var errStageStopped = errors.New("layer pass stopped")

func newStage(stopped <-chan struct{}, consumers ...func([]byte) error) *stage {
	s := &stage{stopped: stopped, free: make(chan *chunk, stageDepth+1), failed: make(chan struct{})}
	for i := 0; i < stageDepth+1; i++ {
		s.free <- &chunk{p: make([]byte, 0, stageChunk)}
	}
	for i, consume := range consumers {
		// stageDepth+1 chunks exist and the writer holds one while it
		// fills it, so a consumer's queue never holds more than stageDepth.
		full := make(chan *chunk, stageDepth)
		s.consumers = append(s.consumers, full)
		s.wg.Add(1)
		go s.run(i, consume, full)
	}
	return s
}

func (s *stage) run(i int, consume func([]byte) error, full <-chan *chunk) {
	defer s.wg.Done()
	for {
		select {
		case c, ok := <-full:
			if !ok {
				return
			}
			if err := consume(c.p); err != nil {
				s.fail(i, err)
				return
			}
			if c.refs.Add(-1) == 0 {
				c.p = c.p[:0]
				s.free <- c // never blocks: free holds every chunk
			}
		case <-s.stopped:
			s.fail(i, errStageStopped)
			return
		}
	}
}

func (s *stage) fail(i int, err error) {
	s.once.Do(func() {
		s.err, s.failer = err, i
		close(s.failed)
	})
}

// failedConsumer is the index of the consumer whose error stopped the
// stage; call it once Close or Write returned an error.
func (s *stage) failedConsumer() int { return s.failer }

func (s *stage) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if s.buf == nil {
			select {
			case s.buf = <-s.free:
			case <-s.failed:
				return n, s.err
			case <-s.stopped:
				return n, errStageStopped
			}
		}
		k := copy(s.buf.p[len(s.buf.p):cap(s.buf.p)], p)
		s.buf.p, p, n = s.buf.p[:len(s.buf.p)+k], p[k:], n+k
		if len(s.buf.p) == cap(s.buf.p) {
			if err := s.send(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (s *stage) send() error {
	c := s.buf
	s.buf = nil
	c.refs.Store(int32(len(s.consumers)))
	for _, full := range s.consumers {
		select {
		case full <- c:
		case <-s.failed:
			return s.err
		case <-s.stopped:
			return errStageStopped
		}
	}
	return nil
}

// Close sends what is buffered, then waits for the consumers. Only the one
// goroutine that writes to the stage may close it, once.
func (s *stage) Close() error {
	var err error
	if s.buf != nil && len(s.buf.p) > 0 {
		err = s.send()
	}
	for _, full := range s.consumers {
		close(full)
	}
	s.wg.Wait()
	select {
	case <-s.failed:
		return s.err
	default:
	}
	return err
}

// failed records why a pass stopped: a permanent error stops later passes
// too.
func (l *streamLayer) failed(err error) error {
	if retry.IsPermanent(err) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.err = err
	}
	return err
}

func hashOf(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}
}
