package imageops

import (
	"archive/tar"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// streamLayers lays a stream (a compressed tarball, stdin) out into layers
// as it is read, one after another: it can only be read in order. Entries
// keep their order; a file with a layer of its own ends the bundle before
// it, and a bundle is cut before it would exceed BundleSize. The same bytes
// give the same layers; a tarball of the same files in another order gives
// other bundles.
//
// A pass that fails for a reason a retry may fix reads the input again
// from the start: the layers the failed pass committed are checked (their
// content must hash as before) instead of being sent again.
func (op *operation) streamLayers(req *AffixRequest, docker bool, progress func(int64)) ([]*weightsLayer, error) {
	var committed []*weightsLayer
	for attempt := 1; ; attempt++ {
		layers, err := op.streamPass(req, docker, progress, committed)
		if err == nil {
			return layers, nil
		}
		if attempt == uploadAttempts || IsPermanent(err) || op.ctx.Err() != nil {
			return nil, err
		}
		committed = layers
		if err := sleepCtx(op.ctx, time.Duration(attempt)*500*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// streamPass reads the input once, cutting it into layers each uploaded
// while it is read. It returns the layers committed so far, also on error.
func (op *operation) streamPass(req *AffixRequest, docker bool, progress func(int64), committed []*weightsLayer) ([]*weightsLayer, error) {
	rc, err := req.Weights()
	if err != nil {
		return committed, fmt.Errorf("opening the weights: %w", err)
	}
	defer rc.Close()
	var read int64
	tr, _, err := OpenTarStream(&progressReader{r: rc, report: func(n int64) { read = n; progress(n) }})
	if isInputError(err) {
		return committed, permanent(err)
	} else if err != nil {
		return committed, fmt.Errorf("reading the weights: %w", err) // the source's failure: may be transient
	}
	defer tr.Close()
	c := &layerCutter{op: op, req: req, docker: docker, committed: committed}
	_, err = rewriteTar(tr, TarPolicy{Target: req.Target, AllowOutsideTarget: req.AllowOutsideTarget, ModTime: weightsModTime,
		MaxEntries: op.o.limits.MaxEntries, MaxNameLength: op.o.limits.MaxNameLength, MaxBytes: op.o.limits.MaxBytes}, c)
	if err != nil {
		// The upload's own failure explains a failed write to its pipe.
		if uerr := c.abandon(err); uerr != nil && errors.Is(err, errLayerWrite) {
			err = uerr
		}
		if isInputError(err) {
			err = permanent(err)
		}
		if len(c.layers) < len(committed) {
			return committed, err // this pass got less far than the last
		}
		return c.layers, err
	}
	if n := len(c.layers); n > 0 {
		c.layers[n-1].result.ReadBytes = read // what the whole stream took, counted once
	}
	return c.layers, nil
}

// errLayerWrite marks a failed write of the stream into a layer's upload.
var errLayerWrite = errors.New("writing the layer")

// layerCutter is rewriteTar's sink for a stream: each layer's tar goes
// through a pipe into its upload, which runs while the next entries are
// read; a layer is done (its upload committed) before the next starts.
type layerCutter struct {
	op        *operation
	req       *AffixRequest
	docker    bool
	committed []*weightsLayer // layers an earlier pass committed: checked, not sent

	layers []*weightsLayer // done, in order
	cur    *layerFeed
}

type layerFeed struct {
	l    *weightsLayer
	pw   *io.PipeWriter
	tw   *tar.Writer
	own  bool
	done chan error
}

func (c *layerCutter) next(in, out *tar.Header, parents []*tar.Header) (*tar.Writer, error) {
	own := c.req.Layout.ownLayer(in)
	cur := c.cur
	if cur == nil || own || cur.own || (out.Typeflag == tar.TypeReg && cur.l.plan.content > 0 && cur.l.plan.content+out.Size > BundleSize) {
		if err := c.finish(); err != nil {
			return nil, err
		}
		if err := c.start(own, out, parents); err != nil {
			return nil, err
		}
	}
	if out.Typeflag == tar.TypeReg {
		c.cur.l.plan.content += out.Size
		c.cur.l.plan.files++
	}
	return c.cur.tw, nil
}

func (c *layerCutter) end() error { return c.finish() }

// start begins the next layer, whose first entry is out: its upload, or
// for a layer an earlier pass committed, the check that its content is
// unchanged. A file's own uncompressed layer has a size known up front, so
// its chunks stream, nothing buffered.
func (c *layerCutter) start(own bool, out *tar.Header, parents []*tar.Header) error {
	i := len(c.layers)
	if i == MaxWeightsLayers {
		return permanent(invalidf("the %s layout makes more than %d weights layers: use the auto layout, or bundle the small files", c.req.Layout, MaxWeightsLayers))
	}
	comp := layerCompression(c.req.Compression, own)
	level := c.req.Level
	if comp == Uncompressed {
		level = 0
	}
	l := &weightsLayer{plan: &layerPlan{index: i, own: own}, compression: comp, level: defaultLevel(comp, level), mediaType: layerMediaType(c.docker, comp), size: -1}
	if own && comp == Uncompressed {
		l.size = tarSize(append(append([]*tar.Header(nil), parents...), out))
	}
	pr, pw := io.Pipe()
	f := &layerFeed{l: l, pw: pw, tw: tar.NewWriter(&layerWriter{pw}), own: own, done: make(chan error, 1)}
	if i < len(c.committed) {
		prev := c.committed[i]
		go func() {
			h := sha256.New()
			_, err := io.Copy(h, pr)
			if err == nil && hashOf(h) != prev.result.DiffID {
				err = permanent(fmt.Errorf("weights layer %d: the input changed since the interrupted pass (its content hashes to %s, not %s)", i+1, hashOf(h), prev.result.DiffID))
			}
			pr.CloseWithError(err)
			if err == nil {
				*l = *prev
			}
			f.done <- err
		}()
	} else {
		used := false
		sl := &streamLayer{compression: comp, level: l.level, mediaType: l.mediaType, produce: func(w io.Writer) error {
			if used {
				return errors.New("a streamed input cannot be read again within one pass; the next pass reads it from the start")
			}
			used = true
			_, err := io.Copy(w, pr)
			return err
		}}
		go func() {
			err := sl.upload(c.op.ctx, c.op.o, c.op.repo, c.op.m, "weights/"+strconv.Itoa(i), fmt.Sprintf("weights layer %d", i+1), l.size)
			if err == nil {
				digest, _ := sl.Digest()
				diffID, _ := sl.DiffID()
				l.layer = sl
				l.result = LayerResult{Digest: digest, DiffID: diffID, MediaType: string(l.mediaType),
					Size: sl.size, UncompressedSize: sl.uncompSize, Source: LayerUploaded}
			}
			pr.CloseWithError(err)
			f.done <- err
		}()
	}
	c.cur = f
	for _, h := range parents {
		if err := f.tw.WriteHeader(h); err != nil {
			return err
		}
	}
	return nil
}

// finish ends the layer being written and waits for its upload.
func (c *layerCutter) finish() error {
	f := c.cur
	if f == nil {
		return nil
	}
	c.cur = nil
	if err := f.tw.Close(); err != nil {
		f.pw.CloseWithError(err)
		if uerr := <-f.done; uerr != nil {
			return uerr
		}
		return err
	}
	f.pw.Close()
	if err := <-f.done; err != nil {
		return err
	}
	f.l.result.Files = f.l.plan.files
	c.layers = append(c.layers, f.l)
	return nil
}

// abandon stops the layer being written after err, and returns its
// upload's own error, if it failed.
func (c *layerCutter) abandon(err error) error {
	f := c.cur
	if f == nil {
		return nil
	}
	c.cur = nil
	f.pw.CloseWithError(err)
	return <-f.done
}

// layerWriter marks write errors of a layer's pipe.
type layerWriter struct{ w io.Writer }

func (w *layerWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if err != nil {
		err = fmt.Errorf("%w: %w", errLayerWrite, err)
	}
	return n, err
}
