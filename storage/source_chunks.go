package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// ranger fetches byte ranges of one version of an object (S3 or http). The
// body it returns holds the n bytes asked for; its errors wrap a sentinel
// (permanent, with advice) or are transient.
type ranger interface {
	get(ctx context.Context, off, n int64) (io.ReadCloser, error)
}

// transientError marks a failure worth retrying: a network error, 5xx, 429,
// a truncated or stalled body.
type transientError struct{ err error }

func (e transientError) Error() string { return e.err.Error() }
func (e transientError) Unwrap() error { return e.err }

func transient(err error) error { return transientError{err} }

func isTransient(err error) bool {
	var t transientError
	return errors.As(err, &t)
}

var (
	errClosed  = errors.New("reader closed")
	errStalled = errors.New("no bytes received for too long")
)

// retry runs op until it succeeds, fails permanently, ctx ends or
// s.attempts tries are spent, waiting with exponential backoff and jitter
// between tries. retries counts the tries after the first.
func (s *Sources) retry(ctx context.Context, retries *atomic.Int64, op func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		err := op(ctx)
		if err == nil || ctx.Err() != nil || !isTransient(err) {
			return err
		}
		if attempt >= s.attempts {
			return fmt.Errorf("giving up after %d attempts; check the network and the server's health: %w", attempt, err)
		}
		retries.Add(1)
		if !sleep(ctx, s.jitter(attempt)) {
			return err
		}
	}
}

// jitter returns the wait before retry number attempt: between half and all
// of backoff×2^(attempt-1).
func (s *Sources) jitter(attempt int) time.Duration {
	d := s.backoff << (attempt - 1)
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// bufferPool recycles chunk buffers between readers of one Sources.
type bufferPool struct {
	size int64
	pool sync.Pool
}

func newBufferPool(size int64) *bufferPool {
	return &bufferPool{size: size, pool: sync.Pool{New: func() any {
		b := make([]byte, size)
		return &b
	}}}
}

func (p *bufferPool) get() []byte { return *(p.pool.Get().(*[]byte)) }

func (p *bufferPool) put(b []byte) {
	if int64(cap(b)) == p.size {
		b = b[:cap(b)]
		p.pool.Put(&b)
	}
}

// chunkReader reads an object as parallel ranged GETs and returns the bytes
// strictly in order. A dispatcher goroutine starts one fetch per chunk as
// soon as a buffer is free; at most concurrency buffers exist, so at most
// concurrency GETs are in flight and at most chunk×concurrency bytes are
// held. Each chunk is retried on its own.
type chunkReader struct {
	src          *Sources
	r            ranger
	url          string // redacted, for messages
	size, chunk  int64
	concurrency  int
	chunks       int64
	parent, ctx  context.Context
	cancel       context.CancelCauseFunc
	wg           sync.WaitGroup
	free         chan []byte           // buffers ready for reuse
	order        chan chan chunkResult // one result channel per chunk, in chunk order
	cur          []byte                // chunk being consumed
	pos          int                   // next byte of cur
	next         int64                 // chunks consumed
	err          error                 // sticky
	closeOnce    sync.Once
	buffered     atomic.Int64 // bytes received and not yet read
	peak         atomic.Int64 // most bytes ever buffered
	retries      atomic.Int64 // chunk GETs retried
	requests     atomic.Int64 // chunk GETs sent
	maxInFlight  atomic.Int64 // most chunk GETs ever in flight
	fetchesAlive atomic.Int64
}

type chunkResult struct {
	buf []byte
	err error
}

// newChunkReader reads r with at most concurrency chunks in flight.
func (s *Sources) newChunkReader(ctx context.Context, r ranger, url string, size int64, concurrency int) *chunkReader {
	cctx, cancel := context.WithCancelCause(ctx)
	c := &chunkReader{
		src: s, r: r, url: url, size: size, chunk: s.chunkSize, concurrency: concurrency,
		chunks: (size + s.chunkSize - 1) / s.chunkSize,
		parent: ctx, ctx: cctx, cancel: cancel,
		free:  make(chan []byte, concurrency),
		order: make(chan chan chunkResult, concurrency),
	}
	c.wg.Add(1)
	go c.dispatch()
	return c
}

func (c *chunkReader) dispatch() {
	defer c.wg.Done()
	allocated := 0
	for i := range c.chunks {
		var buf []byte
		select {
		case buf = <-c.free:
		default:
			if allocated < c.concurrency {
				buf, allocated = c.src.buffers.get(), allocated+1
				break
			}
			select {
			case buf = <-c.free:
			case <-c.ctx.Done():
				return
			}
		}
		ch := make(chan chunkResult, 1)
		select {
		case c.order <- ch:
		case <-c.ctx.Done():
			c.free <- buf
			return
		}
		c.wg.Add(1)
		go c.fetch(i, buf, ch)
	}
}

func (c *chunkReader) fetch(i int64, buf []byte, ch chan<- chunkResult) {
	defer c.wg.Done()
	alive := c.fetchesAlive.Add(1)
	for m := c.maxInFlight.Load(); alive > m && !c.maxInFlight.CompareAndSwap(m, alive); m = c.maxInFlight.Load() {
	}
	off := i * c.chunk
	buf = buf[:min(c.chunk, c.size-off)]
	err := c.src.retry(c.ctx, &c.retries, func(ctx context.Context) error { return c.fill(ctx, off, buf) })
	// Not in flight any more: counted down before the result is handed
	// over, since handing it over frees the buffer the next fetch takes.
	c.fetchesAlive.Add(-1)
	if err != nil && c.ctx.Err() == nil {
		err = fmt.Errorf("reading %s (bytes %d-%d): %w", c.url, off, off+int64(len(buf))-1, err)
		c.cancel(err) // the first failure stops the other fetches
	}
	ch <- chunkResult{buf: buf, err: err}
}

// fill reads bytes [off, off+len(buf)) into buf with one GET, abandoning it
// (as a transient failure) when no byte arrives for stallTimeout.
func (c *chunkReader) fill(ctx context.Context, off int64, buf []byte) (err error) {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(c.src.stallTimeout, func() { cancel(errStalled) })
	defer stall.Stop()
	stalled := func(err error) error {
		if ctx.Err() == nil && context.Cause(actx) == errStalled {
			return transient(fmt.Errorf("%w (%s)", errStalled, c.src.stallTimeout))
		}
		return err
	}
	c.requests.Add(1)
	body, err := c.r.get(actx, off, int64(len(buf)))
	if err != nil {
		return stalled(err)
	}
	defer body.Close()
	got := 0
	defer func() {
		if err != nil {
			c.addBuffered(-int64(got))
		}
	}()
	for got < len(buf) {
		n, rerr := body.Read(buf[got:])
		got += n
		c.addBuffered(int64(n))
		stall.Reset(c.src.stallTimeout)
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return stalled(transient(fmt.Errorf("receiving the body: %w", rerr)))
		}
	}
	if got < len(buf) {
		return transient(fmt.Errorf("the body ended after %d of %d bytes: %w", got, len(buf), io.ErrUnexpectedEOF))
	}
	return nil
}

func (c *chunkReader) addBuffered(n int64) {
	b := c.buffered.Add(n)
	for p := c.peak.Load(); b > p && !c.peak.CompareAndSwap(p, b); p = c.peak.Load() {
	}
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.ctx.Err() != nil { // cancelled or closed: stop even with bytes at hand
		c.err = c.failure(nil)
		return 0, c.err
	}
	for c.pos >= len(c.cur) {
		if c.cur != nil {
			c.free <- c.cur[:cap(c.cur)]
			c.cur = nil
		}
		if c.next == c.chunks {
			c.err = io.EOF
			return 0, io.EOF
		}
		buf, err := c.await()
		if err != nil {
			c.err = err
			return 0, err
		}
		c.cur, c.pos = buf, 0
		c.next++
	}
	n := copy(p, c.cur[c.pos:])
	c.pos += n
	c.addBuffered(-int64(n))
	return n, nil
}

// await returns the next chunk in order.
func (c *chunkReader) await() ([]byte, error) {
	var ch chan chunkResult
	select {
	case ch = <-c.order:
	case <-c.ctx.Done():
		return nil, c.failure(nil)
	}
	select {
	case res := <-ch:
		if res.err != nil {
			return nil, c.failure(res.err)
		}
		return res.buf, nil
	case <-c.ctx.Done():
		return nil, c.failure(nil)
	}
}

// failure explains why the download stopped: the caller's context, Close,
// or the first chunk that failed.
func (c *chunkReader) failure(err error) error {
	if c.parent.Err() != nil {
		return fmt.Errorf("reading %s: %w", c.url, c.parent.Err())
	}
	if cause := context.Cause(c.ctx); cause != nil {
		if cause == errClosed {
			return fmt.Errorf("reading %s: %w", c.url, errClosed)
		}
		return cause
	}
	return err
}

// Close stops every fetch and waits for its goroutines.
func (c *chunkReader) Close() error {
	c.closeOnce.Do(func() {
		c.cancel(errClosed)
		c.wg.Wait()
		for {
			select {
			case b := <-c.free:
				c.src.buffers.put(b)
			case ch := <-c.order:
				select { // every fetch has finished; a concurrent Read may have taken its result
				case res := <-ch:
					if res.err == nil {
						c.src.buffers.put(res.buf)
					}
				default:
				}
			default:
				return
			}
		}
	})
	return nil
}

// streamReader reads an object with one GET. When the ranger is set, a
// transient failure mid-body resumes from the next byte with a ranged GET
// that still names the same version. Close may be called while a Read
// blocks: it closes the body, which ends the Read.
type streamReader struct {
	src      *Sources
	ctx      context.Context
	r        ranger // nil: no resuming
	url      string
	off      int64
	size     int64
	failures int
	retries  atomic.Int64

	mu     sync.Mutex
	body   io.ReadCloser
	closed bool
}

// openStream returns a streamReader with its first GET done, so that
// errors such as a missing object surface from Open.
func (s *Sources) openStream(ctx context.Context, r ranger, url string, size int64) (*streamReader, error) {
	sr := &streamReader{src: s, ctx: ctx, r: r, url: url, size: size}
	if err := sr.open(); err != nil {
		return nil, err
	}
	return sr, nil
}

// open GETs the object from s.off on.
func (s *streamReader) open() error {
	var body io.ReadCloser
	err := s.src.retry(s.ctx, &s.retries, func(ctx context.Context) (err error) {
		body, err = s.r.get(ctx, s.off, s.size-s.off)
		return err
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = body.Close()
		return errClosed
	}
	s.body = body
	return nil
}

func (s *streamReader) current() (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("reading %s: %w", s.url, errClosed)
	}
	return s.body, nil
}

func (s *streamReader) Read(p []byte) (int, error) {
	for {
		body, err := s.current()
		if err != nil {
			return 0, err
		}
		if body == nil {
			if err := s.open(); err != nil {
				if s.ctx.Err() != nil {
					return 0, fmt.Errorf("reading %s: %w", s.url, s.ctx.Err())
				}
				return 0, fmt.Errorf("reading %s (from byte %d): %w", s.url, s.off, err)
			}
			continue
		}
		n, err := body.Read(p)
		s.off += int64(n)
		if n > 0 {
			s.failures = 0
		}
		if err == nil || err == io.EOF {
			return n, err
		}
		if s.ctx.Err() != nil {
			return n, fmt.Errorf("reading %s: %w", s.url, s.ctx.Err())
		}
		if _, cerr := s.current(); cerr != nil {
			return n, cerr
		}
		if s.r == nil || s.failures+1 >= s.src.attempts {
			return n, fmt.Errorf("reading %s (at byte %d): the connection failed; open it again: %w", s.url, s.off, err)
		}
		s.failures++
		s.retries.Add(1)
		s.mu.Lock()
		s.body = nil
		s.mu.Unlock()
		_ = body.Close()
		if !sleep(s.ctx, s.src.jitter(s.failures)) {
			return n, fmt.Errorf("reading %s: %w", s.url, s.ctx.Err())
		}
		if n > 0 {
			return n, nil
		}
	}
}

func (s *streamReader) Close() error {
	s.mu.Lock()
	body := s.body
	s.closed, s.body = true, nil
	s.mu.Unlock()
	if body != nil {
		return body.Close()
	}
	return nil
}
