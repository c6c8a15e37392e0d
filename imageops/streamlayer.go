package imageops

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

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
// Uncompressed layers skip the compressor and the second hash (their
// digest is their diffID). Every stage sees the same bytes in the same
// order as a sequential pass would, so the output is identical.
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
	sink := newStage(stopped, func(p []byte) error {
		if !uncompressed && !outHashes {
			digest.Write(p)
		}
		compressed += int64(len(p))
		_, err := out.Write(p)
		return err
	})
	cw, err := newCompressor(sink, l.compression, l.level)
	if err != nil {
		return err
	}
	diffID := sha256.New()
	var uncompSize int64
	hasher := newStage(stopped, func(p []byte) error {
		diffID.Write(p)
		uncompSize += int64(len(p))
		return nil
	})
	var compressor *stage
	var to io.Writer = hasher
	switch {
	case uncompressed && outHashes && l.verify == nil:
		to = sink // the diffID is the digest the uploader computes
	case uncompressed:
		// The sink hashes nothing; hashing and sending overlap anyway.
		to = io.MultiWriter(hasher, sink)
	default:
		compressor = newStage(stopped, func(p []byte) error {
			_, err := cw.Write(p)
			return err
		})
		to = io.MultiWriter(hasher, compressor)
	}
	// On every early return the deferred close(stopped) ends the stages'
	// goroutines; none is left blocked, whichever end failed.
	if err := l.produce(to); err != nil {
		return l.failed(err)
	}
	if err := hasher.Close(); err != nil {
		return err
	}
	if compressor != nil {
		if err := compressor.Close(); err != nil {
			return fmt.Errorf("compressing: %w", err)
		}
	}
	if l.verify != nil {
		if err := l.verify(hashOf(diffID)); err != nil {
			return l.failed(permanent(err))
		}
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("compressing: %w", err)
	}
	if err := sink.Close(); err != nil {
		return err
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

// stage is a pipeline step: bytes written to it are cut into chunks that a
// goroutine of its own hands to consume, in order. Close flushes and waits
// for consume to have seen everything. A consume error stops the stage and
// is returned by later writes and by Close; once the pass's stopped channel
// is closed, the goroutine and any blocked writer return at once.
type stage struct {
	consume func([]byte) error
	full    chan []byte
	free    chan []byte
	done    chan struct{} // closed when the goroutine has exited
	stopped <-chan struct{}
	buf     []byte
	err     error // consume's error, readable once done is closed
}

// errStageStopped is what a stage returns after the pass gave up.
var errStageStopped = errors.New("layer pass stopped")

func newStage(stopped <-chan struct{}, consume func([]byte) error) *stage {
	s := &stage{
		consume: consume, stopped: stopped,
		full: make(chan []byte, stageDepth), free: make(chan []byte, stageDepth+1),
		done: make(chan struct{}),
	}
	for i := 0; i < stageDepth+1; i++ {
		s.free <- make([]byte, 0, stageChunk)
	}
	go s.run()
	return s
}

func (s *stage) run() {
	defer close(s.done)
	for {
		select {
		case p, ok := <-s.full:
			if !ok {
				return
			}
			if err := s.consume(p); err != nil {
				s.err = err
				return
			}
			s.free <- p[:0]
		case <-s.stopped:
			s.err = errStageStopped
			return
		}
	}
}

func (s *stage) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if s.buf == nil {
			select {
			case s.buf = <-s.free:
			case <-s.done:
				return n, s.failure()
			case <-s.stopped:
				return n, errStageStopped
			}
		}
		k := copy(s.buf[len(s.buf):cap(s.buf)], p)
		s.buf, p, n = s.buf[:len(s.buf)+k], p[k:], n+k
		if len(s.buf) == cap(s.buf) {
			if err := s.send(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (s *stage) send() error {
	select {
	case s.full <- s.buf:
		s.buf = nil
		return nil
	case <-s.done:
		return s.failure()
	case <-s.stopped:
		return errStageStopped
	}
}

// failure is the error that stopped the goroutine; call it once done is
// closed.
func (s *stage) failure() error {
	if s.err != nil {
		return s.err
	}
	return errStageStopped
}

// Close sends what is buffered, then waits for the goroutine. Only the one
// goroutine that writes to the stage may close it, once.
func (s *stage) Close() error {
	if len(s.buf) > 0 {
		if err := s.send(); err != nil {
			return err
		}
	}
	close(s.full)
	<-s.done
	return s.err
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
