package imageops

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"
)

// recompress converts and uploads the layers to recompress, jobs at a
// time; the first failure cancels the others.
func (o *options) recompress(ctx context.Context, repo name.Repository, src *source, convs []*zstdConv, level int, m *meter) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.jobs)
	ropts := o.remoteOptions(gctx, m)
	prog := &zstdProgress{report: func(done, total int64) { o.report("recompress", done, total) }}
	for _, c := range convs {
		if c.reason == "" {
			prog.total += c.desc.Size
		}
	}
	for _, c := range convs {
		if c.reason != "" {
			continue
		}
		c.out = &streamLayer{compression: Zstd, level: level, mediaType: types.OCILayerZStd, verify: c.checkDiffID}
		c.repo = repo.Name()
		convert := func() error {
			from := func() (io.ReadCloser, error) { return o.openBlob(gctx, src.ref.Context(), c.desc, m) }
			c.out.produce = func(w io.Writer) error { return c.decode(w, from, prog) }
			what := fmt.Sprintf("the zstd form of layer %s", c.desc.Digest)
			if err := c.out.upload(gctx, o, repo, m, fmt.Sprintf("zstd/%s/%d", c.desc.Digest, level), what, -1); err != nil {
				if gctx.Err() != nil && ctx.Err() == nil {
					return gctx.Err() // another layer failed first; errgroup keeps its error
				}
				return err
			}
			return nil
		}
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err // a layer failed, or ctx ended, while this one waited
			}
			if o.cache == nil {
				return convert()
			}
			key := ConversionKey{Registry: repo.RegistryStr(), Source: c.desc.Digest.String(), Level: level}
			reused, err := c.fromCache(gctx, o.cache, key, ropts, convert)
			if reused {
				c.out = nil
				prog.add(c.desc.Size)
			}
			return err
		})
	}
	return g.Wait()
}

// decode writes the source layer's uncompressed tar to w (the stream
// layer hashes it and checkDiffID compares). Read errors of the source are
// transient; a stream that does not decompress is permanent. It runs in the
// pass's producing goroutine, ahead of its stages (diffID hash ∥ zstd →
// digest hash → upload): download and gunzip take a core of their own, and
// the decoder writes from its window straight into the stage's buffer.
func (c *zstdConv) decode(w io.Writer, from func() (io.ReadCloser, error), prog *zstdProgress) error {
	d := c.desc.Digest
	rc, err := from()
	if err != nil {
		return fmt.Errorf("fetching layer %s: %w", d, err)
	}
	defer rc.Close()
	sr := &zstdSourceReader{r: &countReader{r: rc, add: prog.add}}
	br := bufio.NewReaderSize(sr, inputBufferSize)
	dec, kind, err := zstdLayerDecoder(br)
	if err != nil {
		if sr.err != nil {
			return fmt.Errorf("reading layer %s: %w", d, sr.err)
		}
		return permanent(fmt.Errorf("layer %s: %w", d, err))
	}
	defer dec.Close()
	ew := &zstdSinkWriter{w: w}
	_, err = io.Copy(ew, dec)
	if err == nil {
		// Read to the end, so the download's length is checked too.
		_, err = io.Copy(io.Discard, br)
	}
	switch {
	case ew.err != nil:
		return ew.err // the other side hung up
	case sr.err != nil:
		return fmt.Errorf("reading layer %s: %w", d, sr.err)
	case err != nil:
		return permanent(fmt.Errorf("layer %s: decompressing the %s stream: %w", d, kind, err))
	}
	return nil
}

// checkDiffID is the stream layer's verify: the uncompressed content it
// hashed must be what the config says, or the image would be corrupt.
func (c *zstdConv) checkDiffID(got v1.Hash) error {
	if got != c.diffID {
		return fmt.Errorf("layer %s: uncompressed content hashes to %s, the config says %s", c.desc.Digest, got, c.diffID)
	}
	return nil
}

// zstdLayerDecoder detects a layer blob's compression from its first bytes
// (media types are not always right) and returns its decompressed stream.
func zstdLayerDecoder(br *bufio.Reader) (io.ReadCloser, Compression, error) {
	head, err := br.Peek(len(magicZstd))
	if err != nil && err != io.EOF {
		return nil, "", err
	}
	switch {
	case bytes.HasPrefix(head, magicGzip):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, Gzip, fmt.Errorf("reading the gzip header: %w", err)
		}
		return zr, Gzip, nil
	case bytes.HasPrefix(head, magicZstd):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			return nil, Zstd, fmt.Errorf("starting the zstd decoder: %w", err)
		}
		return zr.IOReadCloser(), Zstd, nil
	}
	return io.NopCloser(br), Uncompressed, nil
}

// zstdSourceReader remembers the error of the underlying (network) reader, to
// tell it from a decoder's complaint about the bytes.
type zstdSourceReader struct {
	r   io.Reader
	err error
}

func (s *zstdSourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

type zstdSinkWriter struct {
	w   io.Writer
	err error
}

func (e *zstdSinkWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

// zstdProgress adds up the bytes read by concurrent jobs and reports them
// every few MiB and at the end, one report at a time.
type zstdProgress struct {
	mu                sync.Mutex
	done, total, last int64
	report            func(done, total int64)
}

func (p *zstdProgress) add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	if p.done-p.last >= progressStep || p.done == p.total {
		p.last = p.done
		p.report(p.done, p.total)
	}
}
