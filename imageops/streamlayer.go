package imageops

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/stream"
	"github.com/google/go-containerregistry/pkg/v1/types"
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

	mu               sync.Mutex
	computed         bool
	digest, diffID   v1.Hash
	size, uncompSize int64
	err              error // a permanent error: later passes fail at once
	lastErr          error // the last error produce returned, for reporting
}

var _ v1.Layer = (*streamLayer)(nil)

// permanentError marks an input error that retrying cannot fix.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

func permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

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

// cause explains a failed upload from the producing side, when it was the
// input (not the network) that failed: the permanent error, else the last
// error produce returned. nil means the failure was the registry's.
func (l *streamLayer) cause() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	return l.lastErr
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

func (l *streamLayer) pass(out io.Writer) error {
	digest := sha256.New()
	compressed := &countingWriter{}
	// Batch the compressor's small writes into large pipe writes.
	bw := bufio.NewWriterSize(io.MultiWriter(out, digest, compressed), 1<<20)
	cw, err := newCompressor(bw, l.compression, l.level)
	if err != nil {
		return err
	}
	diffID := sha256.New()
	uncompressed := &countingWriter{}
	if err := l.produce(io.MultiWriter(cw, diffID, uncompressed)); err != nil {
		return l.failed(err)
	}
	if l.verify != nil {
		if err := l.verify(hashOf(diffID)); err != nil {
			return l.failed(permanent(err))
		}
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("compressing: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	// Set before the reader sees EOF: the uploader asks for the digest as
	// soon as the body is consumed.
	l.mu.Lock()
	l.computed = true
	l.digest, l.diffID = hashOf(digest), hashOf(diffID)
	l.size, l.uncompSize = compressed.n, uncompressed.n
	l.mu.Unlock()
	return nil
}

// failed records why a pass stopped: a permanent error stops later passes
// too; an uploader hanging up is not the input's failure.
func (l *streamLayer) failed(err error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var p permanentError
	if errors.As(err, &p) {
		l.err = p.error
		return p.error
	}
	if !errors.Is(err, io.ErrClosedPipe) {
		l.lastErr = err
	}
	return err
}

func hashOf(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}
