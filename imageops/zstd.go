package imageops

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"
)

// ZstdRequest recompresses an image's layers to zstd (see Recompress; the
// operation cannot be called Zstd, the Compression constant of that name).
type ZstdRequest struct {
	Source  string // image reference, by tag or digest
	Dest    string // destination host/repo[:tag]
	Level   int    // zstd level 1–22; 0 means DefaultZstdLevel
	MinSize int64  // layers whose compressed size is below this are kept as they are; 0 recompresses all
}

// Why a layer is kept as it is (ZstdLayer.Reason).
const (
	ReasonZstd     = "already zstd"
	ReasonSmall    = "below the minimum size"
	ReasonEmpty    = "empty layer"
	ReasonForeign  = "non-distributable layer"
	ReasonNotLayer = "not a layer tar"
)

// ZstdLayer is one distinct layer of the source (a layer several platforms
// share is listed once).
type ZstdLayer struct {
	Source       string `json:"source"` // the source layer digest
	Digest       string `json:"digest"` // the layer in the result (Source when kept)
	DiffID       string `json:"diff_id"`
	OldSize      int64  `json:"old_size"`
	NewSize      int64  `json:"new_size"`
	Recompressed bool   `json:"recompressed"`
	Reused       bool   `json:"reused,omitempty"` // the conversion came from the layer cache
	Reason       string `json:"reason,omitempty"` // why it was kept
}

// ZstdResult describes a pushed recompressed image.
type ZstdResult struct {
	Ref       string           `json:"ref"` // repo@sha256:…
	Digest    string           `json:"digest"`
	Tag       string           `json:"tag,omitempty"`
	MediaType string           `json:"media_type"`
	Source    string           `json:"source"` // resolved source repo@sha256:…
	Layers    []ZstdLayer      `json:"layers"`
	Platforms []PlatformResult `json:"platforms,omitempty"`
	Transfer  Transfer         `json:"transfer"`
	Stages    []Stage          `json:"stages"`
}

// emptyTarDiffID is the diffID of an empty tar (two zero blocks).
var emptyTarDiffID = v1.Hash{Algorithm: "sha256", Hex: "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"}

// dockerLayerZstd is the Docker-namespaced zstd layer type some tools write.
const dockerLayerZstd types.MediaType = "application/vnd.docker.image.rootfs.diff.tar.zstd"

// Recompress recompresses the layers of an image (or of every platform of an
// index) to zstd and pushes the result as OCI. Each layer is converted in
// one pass — registry download → decompress → zstd → hash → upload — and
// its uncompressed content is checked against the config's diffID on the
// way, so the config is kept byte for byte. Layers already zstd, empty, or
// below MinSize are kept and mounted, never re-uploaded. Layers are
// converted concurrently (WithJobs); one shared by several platforms is
// converted once.
func Recompress(ctx context.Context, req ZstdRequest, opts ...Option) (_ *ZstdResult, err error) {
	if err := req.normalize(); err != nil {
		return nil, err
	}
	op, err := begin(ctx, opts, req.Dest)
	if err != nil {
		return nil, err
	}
	defer func() { err = op.finish(err) }()
	_, src, err := op.resolve(op.o, req.Source, "source")
	if err != nil {
		return nil, err
	}
	plans, convs, err := planZstd(src, req)
	if err != nil {
		return nil, err
	}

	op.st.start("recompress")
	if err := op.o.recompress(ctx, op.repo, src, convs, req.Level, op.m); err != nil {
		return nil, err
	}

	images := make([]platformImage, 0, len(plans))
	for _, p := range plans {
		img, err := p.build()
		if err != nil {
			return nil, err
		}
		images = append(images, platformImage{platform: p.platform, image: img})
	}
	pushed, err := op.publish(src, images, true)
	if err != nil {
		return nil, err
	}

	res := &ZstdResult{
		Ref: pushed.ref.String(), Digest: pushed.ref.DigestStr(), Tag: op.tag, MediaType: string(pushed.mediaType),
		Source: src.ref.String(), Platforms: pushed.platforms, Transfer: op.m.transfer(src.blobSizes()), Stages: op.st.list,
	}
	for _, c := range convs {
		res.Layers = append(res.Layers, c.result())
	}
	return res, nil
}

func (req *ZstdRequest) normalize() error {
	req.Level = defaultLevel(Zstd, req.Level)
	if err := checkLevel(Zstd, req.Level); err != nil {
		return err
	}
	if req.MinSize < 0 {
		return invalidf("minimum size %d: use 0 (recompress every layer) or a positive size in bytes", req.MinSize)
	}
	return nil
}

// zstdConv is one distinct source layer: kept as it is, or recompressed.
type zstdConv struct {
	desc   v1.Descriptor // as the source manifest gives it
	diffID v1.Hash
	reason string       // why it is kept; "" means recompress
	kept   v1.Layer     // the source layer (mountable), when kept
	out    *streamLayer // the zstd layer, when recompressed here
	reused v1.Layer     // the zstd layer, when the layer cache had it
	repo   string       // where out is pushed (for the layer cache)
}

// output is the zstd layer that replaces the source layer, or nil when the
// source layer is kept.
func (c *zstdConv) output() v1.Layer {
	switch {
	case c.reused != nil:
		return c.reused
	case c.out != nil:
		return c.out
	}
	return nil
}

func (c *zstdConv) result() ZstdLayer {
	r := ZstdLayer{Source: c.desc.Digest.String(), Digest: c.desc.Digest.String(), DiffID: c.diffID.String(),
		OldSize: c.desc.Size, NewSize: c.desc.Size, Reason: c.reason}
	if out := c.output(); out != nil {
		d, _ := out.Digest()
		n, _ := out.Size()
		r.Digest, r.NewSize, r.Recompressed, r.Reused = d.String(), n, true, c.reused != nil
	}
	return r
}

// zstdPlan is one platform's image: its source manifest and config, and its
// layers' conversions in manifest order.
type zstdPlan struct {
	platform  *v1.Platform
	source    v1.Image
	raw       []byte // the source manifest as served
	manifest  *v1.Manifest
	config    []byte // the source config, kept byte for byte
	labelled  map[string]bool
	conv      []*zstdConv
	converted bool // some layer is recompressed or changes media type
}

// planZstd reads each selected image's manifest and config and decides, per
// distinct layer digest, whether it is recompressed or kept.
func planZstd(src *source, req ZstdRequest) ([]*zstdPlan, []*zstdConv, error) {
	byDigest := map[v1.Hash]*zstdConv{}
	var convs []*zstdConv
	var plans []*zstdPlan
	for _, pi := range src.images {
		what := src.ref.String()
		if pi.platform != nil {
			what += " (" + pi.platform.String() + ")"
		}
		raw, err := pi.image.RawManifest()
		if err != nil {
			return nil, nil, registryErr(err, "reading the manifest of "+what)
		}
		mf, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			return nil, nil, fmt.Errorf("reading the manifest of %s: %w", what, err)
		}
		cfg, err := pi.image.RawConfigFile()
		if err != nil {
			return nil, nil, registryErr(err, "reading the config of "+what)
		}
		cf, err := v1.ParseConfigFile(bytes.NewReader(cfg))
		if err != nil {
			return nil, nil, invalidf("the config of %s is not an image config: %v", what, err)
		}
		if len(cf.RootFS.DiffIDs) != len(mf.Layers) {
			return nil, nil, invalidf("%s has %d layers but its config lists %d diffIDs; refusing to recompress a malformed image", what, len(mf.Layers), len(cf.RootFS.DiffIDs))
		}
		p := &zstdPlan{platform: pi.platform, source: pi.image, raw: raw, manifest: mf, config: cfg,
			labelled: map[string]bool{}, converted: mf.MediaType != types.OCIManifestSchema1 || mf.Config.MediaType != ociEquivalent(mf.Config.MediaType)}
		for _, d := range strings.Split(cf.Config.Labels[LabelWeightsLayers], ",") {
			p.labelled[strings.TrimSpace(d)] = true
		}
		for i, d := range mf.Layers {
			diffID := cf.RootFS.DiffIDs[i]
			c, seen := byDigest[d.Digest]
			switch {
			case seen && c.diffID != diffID:
				return nil, nil, invalidf("layer %s has diffID %s in one config and %s in another (%s); the source is inconsistent", d.Digest, c.diffID, diffID, what)
			case !seen:
				c = &zstdConv{desc: d, diffID: diffID, reason: keepReason(d, diffID, req.MinSize)}
				if c.reason != "" {
					if c.kept, err = pi.image.LayerByDigest(d.Digest); err != nil {
						return nil, nil, fmt.Errorf("reading layer %s of %s: %w", d.Digest, what, err)
					}
				}
				byDigest[d.Digest] = c
				convs = append(convs, c)
			}
			if c.reason == "" || ociLayerType(d.MediaType) != d.MediaType {
				p.converted = true
			}
			p.conv = append(p.conv, c)
		}
		plans = append(plans, p)
	}
	return plans, convs, nil
}

// keepReason says why a layer is not recompressed, or "" if it is.
func keepReason(d v1.Descriptor, diffID v1.Hash, minSize int64) string {
	switch {
	case d.MediaType == types.OCILayerZStd || d.MediaType == dockerLayerZstd ||
		d.MediaType == "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd":
		return ReasonZstd
	case !d.MediaType.IsLayer():
		return ReasonNotLayer
	case !d.MediaType.IsDistributable():
		return ReasonForeign
	case diffID == emptyTarDiffID:
		return ReasonEmpty
	case d.Size < minSize:
		return ReasonSmall
	}
	return ""
}

// ociLayerType is the media type of a kept layer's blob in an OCI manifest.
func ociLayerType(mt types.MediaType) types.MediaType {
	if mt == dockerLayerZstd {
		return types.OCILayerZStd
	}
	return ociEquivalent(mt)
}

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
	sr := &zstdSourceReader{r: &zstdCountingReader{r: rc, add: prog.add}}
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

type zstdCountingReader struct {
	r   io.Reader
	add func(int64)
}

func (c *zstdCountingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.add(int64(n))
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

// build assembles the platform's OCI image: the source manifest with the
// recompressed layers swapped in and every type made OCI, and the source
// config unchanged. An image that needs no change keeps its manifest bytes.
func (p *zstdPlan) build() (v1.Image, error) {
	img := &zstdImage{manifest: p.raw, config: p.config, source: p.source, layers: map[v1.Hash]v1.Layer{}}
	for _, c := range p.conv {
		if out := c.output(); out != nil {
			d, _ := out.Digest()
			img.layers[d] = out
		} else {
			img.layers[c.desc.Digest] = c.kept
		}
	}
	if !p.converted {
		return img, nil
	}
	mf := p.manifest.DeepCopy()
	mf.MediaType = types.OCIManifestSchema1
	mf.Config.MediaType = ociEquivalent(mf.Config.MediaType)
	for i, c := range p.conv {
		l := &mf.Layers[i]
		out := c.output()
		if out == nil {
			l.MediaType = ociLayerType(l.MediaType)
			continue
		}
		ann := make(map[string]string, len(l.Annotations)+2)
		for k, v := range l.Annotations {
			ann[k] = v
		}
		ann[AnnotationSource] = l.Digest.String()
		if p.labelled[l.Digest.String()] {
			// The config's weights label names the old digest: mark the
			// layer where readers look next.
			ann[AnnotationWeights] = "true"
		}
		digest, _ := out.Digest()
		size, _ := out.Size()
		*l = v1.Descriptor{MediaType: types.OCILayerZStd, Digest: digest, Size: size, Annotations: ann}
	}
	raw, err := json.Marshal(mf)
	if err != nil {
		return nil, fmt.Errorf("writing the manifest: %w", err)
	}
	img.manifest = raw
	return img, nil
}

// zstdImage is an image served from its manifest and config bytes as they
// are (mutate would re-serialize the config). Its layers are the source's
// (mountable) and the uploaded zstd layers; its config layer is the
// source's, so the config blob is mounted too.
type zstdImage struct {
	manifest, config []byte
	source           v1.Image
	layers           map[v1.Hash]v1.Layer
}

var _ v1.Image = (*zstdImage)(nil)

func (i *zstdImage) MediaType() (types.MediaType, error) {
	mf, err := i.Manifest()
	if err != nil {
		return "", err
	}
	return mf.MediaType, nil
}

func (i *zstdImage) RawManifest() ([]byte, error)   { return i.manifest, nil }
func (i *zstdImage) RawConfigFile() ([]byte, error) { return i.config, nil }
func (i *zstdImage) Size() (int64, error)           { return int64(len(i.manifest)), nil }

func (i *zstdImage) Manifest() (*v1.Manifest, error) {
	return v1.ParseManifest(bytes.NewReader(i.manifest))
}

func (i *zstdImage) ConfigFile() (*v1.ConfigFile, error) {
	return v1.ParseConfigFile(bytes.NewReader(i.config))
}

func (i *zstdImage) Digest() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(i.manifest))
	return h, err
}

func (i *zstdImage) ConfigName() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(i.config))
	return h, err
}

// ConfigLayer is the source's config blob, mountable from its repository.
func (i *zstdImage) ConfigLayer() (v1.Layer, error) { return partial.ConfigLayer(i.source) }

func (i *zstdImage) Layers() ([]v1.Layer, error) {
	mf, err := i.Manifest()
	if err != nil {
		return nil, err
	}
	ls := make([]v1.Layer, 0, len(mf.Layers))
	for _, d := range mf.Layers {
		l, err := i.LayerByDigest(d.Digest)
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}

func (i *zstdImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	if l, ok := i.layers[h]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("layer %s is not in the image", h)
}

func (i *zstdImage) LayerByDiffID(h v1.Hash) (v1.Layer, error) {
	d, err := partial.DiffIDToBlob(i, h)
	if err != nil {
		return nil, err
	}
	return i.LayerByDigest(d)
}
