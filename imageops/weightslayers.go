package imageops

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// How a weights layer got into the destination (LayerResult.Source).
const (
	LayerUploaded = "uploaded" // produced from the input and sent
	LayerFound    = "found"    // the destination already had it
	LayerMounted  = "mounted"  // mounted from the repository it was pushed to before
)

// CachedLayer is what the layer-digest cache knows of a weights layer it
// saw produced: its blob, and the repository it was pushed to.
type CachedLayer struct {
	Digest     string `json:"digest"`
	DiffID     string `json:"diff_id"`
	Size       int64  `json:"size"`
	MediaType  string `json:"media_type"`
	Repository string `json:"repository"` // host/repo it was pushed to
}

// LayerDigests remembers the digests of the weights layers Affix produced,
// keyed by what identifies their content (the input entries' IDs and the
// layout options), so that publishing the same weights again reads nothing
// and sends nothing: the layer is found in the destination, or mounted from
// where it was pushed. storage.LayerDigests keeps them in Redis for
// workers; FileLayerDigests on disk for r8im.
type LayerDigests interface {
	LookupLayer(ctx context.Context, key string) (CachedLayer, bool, error)
	StoreLayer(ctx context.Context, key string, l CachedLayer) error
}

// WithLayerDigests makes Affix look up and record its weights layers in c.
// A stale or wrong entry never makes a wrong image: a layer is reused only
// when the registry holds a blob of the recorded digest and size (for an
// uncompressed layer, the size the layout computed), else it is produced
// again.
func WithLayerDigests(c LayerDigests) Option { return func(o *options) { o.layerDigests = c } }

// weightsLayer is one planned layer of a tree, produced, reused or both.
type weightsLayer struct {
	plan        *layerPlan
	tree        WeightsTree
	parents     []*tar.Header // the target directory and its parents, first in every layer
	compression Compression
	level       int
	mediaType   types.MediaType
	size        int64  // the uncompressed tar's exact size
	key         string // layer-digest cache key; "" when not cacheable

	layer  v1.Layer // once uploaded or reused
	result LayerResult
}

// layerCompression is the compression of a planned layer: with Auto, a
// file's own layer is sent as it is (weights do not compress, and an
// uncompressed layer pulls without CPU and resumes byte for byte), a bundle
// is gzipped.
func layerCompression(c Compression, own bool) Compression {
	if c != Auto {
		return c
	}
	if own {
		return Uncompressed
	}
	return Gzip
}

// tarSize is the exact size of the tar tw writes for headers hs (contents
// included): what an uncompressed layer's upload declares up front.
func tarSize(hs []*tar.Header) int64 {
	var c countWriter
	var total int64
	for _, h := range hs {
		c = 0
		tw := tar.NewWriter(&c)
		_ = tw.WriteHeader(h) // valid: the policy wrote it
		total += int64(c) + (h.Size+tarBlockSize-1)/tarBlockSize*tarBlockSize
	}
	return total + 2*tarBlockSize // the end-of-archive marker
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// bufferBudget is the memory the compressed layers of one publish may hold
// in chunk buffers, all jobs together: a compressed layer's size is not
// known until it is written, so its upload holds a chunk; with several at
// once each gets a share (an uncompressed layer holds nothing).
const bufferBudget = 128 << 20

// errEntryChanged: an entry's content did not have the size listed.
var errEntryChanged = errors.New("changed while it was read")

// write writes the layer's tar to w, reading each file's content from the
// tree; read counts the content bytes read.
func (l *weightsLayer) write(ctx context.Context, w io.Writer, read func(int64)) error {
	tw := tar.NewWriter(w)
	for _, h := range l.parents {
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
	}
	var buf []byte
	for _, e := range l.plan.entries {
		if err := tw.WriteHeader(e.out); err != nil {
			return fmt.Errorf("writing entry %s: %w", quoteEntry(e.src.Header.Name), err)
		}
		if e.out.Typeflag != tar.TypeReg || e.out.Size == 0 {
			continue
		}
		if buf == nil {
			buf = make([]byte, min(e.out.Size, copyBufferSize))
		}
		if err := copyEntry(ctx, tw, l.tree, e, buf, read); err != nil {
			return err
		}
	}
	return tw.Close()
}

func copyEntry(ctx context.Context, tw *tar.Writer, tree WeightsTree, e plannedEntry, buf []byte, read func(int64)) error {
	rc, err := tree.Open(ctx, e.src)
	if err != nil {
		return fmt.Errorf("reading %s: %w", quoteEntry(e.src.Header.Name), err)
	}
	defer rc.Close()
	n, err := io.CopyBuffer(tw, &countReader{r: io.LimitReader(rc, e.out.Size), add: read}, buf)
	if err != nil {
		if errors.Is(err, errBodyWrite) {
			return err
		}
		return fmt.Errorf("reading %s: %w", quoteEntry(e.src.Header.Name), err)
	}
	var one [1]byte
	k, _ := rc.Read(one[:])
	if n != e.out.Size || k != 0 {
		return permanent(fmt.Errorf("%s %w (%d bytes listed, %d there); publish from an input nothing writes to", quoteEntry(e.src.Header.Name), errEntryChanged, e.out.Size, n+int64(k)))
	}
	return nil
}

// countReader tells add how many bytes each read gave.
type countReader struct {
	r   io.Reader
	add func(int64)
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.add(int64(n))
	}
	return n, err
}

// cacheKey names the layer's content for the layer-digest cache: every
// entry as written and the ID of where its content comes from, and the
// compression. Empty when an entry has no ID.
func (l *weightsLayer) cacheKey() string {
	h := sha256.New()
	fmt.Fprintf(h, "r8im weights layer v1\x00%s\x00%d\x00", l.compression, l.level)
	for _, p := range l.parents {
		fmt.Fprintf(h, "%s\x00", p.Name)
	}
	for _, e := range l.plan.entries {
		if e.out.Typeflag == tar.TypeReg && e.src.ID == "" {
			return ""
		}
		o := e.out
		fmt.Fprintf(h, "%c\x00%s\x00%s\x00%o\x00%d\x00%d\x00%s\x00", o.Typeflag, o.Name, o.Linkname, o.Mode, o.Size, o.ModTime.Unix(), e.src.ID)
	}
	return "weights-layer:" + hex.EncodeToString(h.Sum(nil))
}

// WeightsOptions say how WeightsLayers lays out and writes weights.
type WeightsOptions struct {
	Layout      Layout      // default LayoutAuto
	Compression Compression // default Auto
	Level       int         // 0: the compression's default
	Target      string      // directory in the image; default DefaultTarget
	// AllowOutsideTarget keeps entries outside Target instead of refusing.
	AllowOutsideTarget bool
	Docker             bool      // Docker media types; OCI's by default
	Limits             TarLimits // bounds on the input; zero fields: TarPolicy's defaults
}

// WeightsLayers lays tree out into weights layers (see Layout) and returns
// them as v1.Layers in image order, for mutate.Append or AppendWeights.
// Each layer is produced from tree when it is read, placed under the
// target and checked as Affix does; the whole tree is checked against the
// tar policy before anything is returned. Digest, DiffID and Size read the
// layer once to compute them; Affix does without that read, computing
// them while it uploads.
func WeightsLayers(ctx context.Context, tree WeightsTree, o WeightsOptions) ([]v1.Layer, error) {
	layout, err := ParseLayout(string(o.Layout))
	if err != nil {
		return nil, invalidf("%v", err)
	}
	c := o.Compression
	if c == "" {
		c = Auto
	}
	if err := checkLevel(c, o.Level); err != nil {
		return nil, err
	}
	planned, err := planWeights(ctx, tree, layout, c, o.Level, o.Docker, TarPolicy{Target: o.Target, AllowOutsideTarget: o.AllowOutsideTarget,
		ModTime: weightsModTime, MaxEntries: o.Limits.MaxEntries, MaxNameLength: o.Limits.MaxNameLength, MaxBytes: o.Limits.MaxBytes})
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(planned))
	for i, l := range planned {
		out[i] = &computedLayer{streamLayer: l.streamLayer(ctx, func(int64) {})}
	}
	return out, nil
}

// planWeights lists tree and plans its layers under policy.
func planWeights(ctx context.Context, tree WeightsTree, layout Layout, c Compression, level int, docker bool, policy TarPolicy) ([]*weightsLayer, error) {
	entries, err := tree.Entries(ctx)
	if err != nil {
		if isInputError(err) {
			return nil, permanent(err)
		}
		return nil, fmt.Errorf("listing the weights: %w", err)
	}
	plans, rw, err := planLayers(entries, layout, policy)
	if err != nil {
		return nil, permanent(err)
	}
	var parents []*tar.Header
	for _, d := range rw.parents {
		parents = append(parents, rw.dirHeader(d+"/"))
	}
	layers := make([]*weightsLayer, len(plans))
	for i, p := range plans {
		lc := layerCompression(c, p.own)
		hs := append([]*tar.Header(nil), parents...)
		for _, e := range p.entries {
			hs = append(hs, e.out)
		}
		lvl := level
		if lc == Uncompressed {
			lvl = 0
		}
		layers[i] = &weightsLayer{plan: p, tree: tree, parents: parents, compression: lc, level: defaultLevel(lc, lvl),
			mediaType: layerMediaType(docker, lc), size: tarSize(hs)}
	}
	return layers, nil
}

// streamLayer is l as a layer produced from the tree on each read.
func (l *weightsLayer) streamLayer(ctx context.Context, read func(int64)) *streamLayer {
	return &streamLayer{compression: l.compression, level: l.level, mediaType: l.mediaType,
		produce: func(w io.Writer) error { return l.write(ctx, w, read) }}
}

// computedLayer is a streamLayer whose Digest, DiffID and Size run a pass
// (reading its input once, sending nothing) when no pass has yet: a plain
// v1.Layer, which go-containerregistry can append and push like any other.
type computedLayer struct {
	*streamLayer
	once sync.Once
	err  error
}

func (l *computedLayer) compute() error {
	l.once.Do(func() {
		if _, err := l.streamLayer.Digest(); err == nil {
			return
		}
		l.err = l.streamLayer.pass(io.Discard)
	})
	return l.err
}

func (l *computedLayer) Digest() (v1.Hash, error) {
	if err := l.compute(); err != nil {
		return v1.Hash{}, err
	}
	return l.streamLayer.Digest()
}

func (l *computedLayer) DiffID() (v1.Hash, error) {
	if err := l.compute(); err != nil {
		return v1.Hash{}, err
	}
	return l.streamLayer.DiffID()
}

func (l *computedLayer) Size() (int64, error) {
	if err := l.compute(); err != nil {
		return 0, err
	}
	return l.streamLayer.Size()
}

// treeLayers plans tree's layers and brings each into repo: reused when
// the cache and the registry allow, else produced and uploaded, o.jobs at
// once. The layers come back in image order.
func (op *operation) treeLayers(req *AffixRequest, docker bool, progress func(int64)) ([]*weightsLayer, error) {
	policy := TarPolicy{Target: req.Target, AllowOutsideTarget: req.AllowOutsideTarget, ModTime: weightsModTime,
		MaxEntries: op.o.limits.MaxEntries, MaxNameLength: op.o.limits.MaxNameLength, MaxBytes: op.o.limits.MaxBytes}
	layers, err := planWeights(op.ctx, req.Tree, req.Layout, req.Compression, req.Level, docker, policy)
	if err != nil {
		return nil, err
	}
	if op.o.layerDigests != nil {
		for _, l := range layers {
			l.key = l.cacheKey()
		}
	}

	var read, reported atomic.Int64
	var mu sync.Mutex
	count := func(n int64) {
		total := read.Add(n)
		if last := reported.Load(); total-last >= progressStep && reported.CompareAndSwap(last, total) {
			mu.Lock()
			progress(total)
			mu.Unlock()
		}
	}
	// One client asks the destination for cached layers, made on first use.
	dest := sync.OnceValues(func() (*http.Client, error) {
		return op.o.registryClient(op.ctx, op.repo, nil, transport.PullScope, true)
	})
	g, ctx := errgroup.WithContext(op.ctx)
	g.SetLimit(op.o.jobs)
	for _, l := range layers {
		g.Go(func() error { return op.bringLayer(ctx, l, dest, count) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	progress(read.Load())
	return layers, nil
}

// bringLayer reuses l from the cache when it can, else produces and
// uploads it (and records it in the cache).
func (op *operation) bringLayer(ctx context.Context, l *weightsLayer, dest func() (*http.Client, error), read func(int64)) error {
	what := fmt.Sprintf("weights layer %d", l.plan.index+1)
	l.result = LayerResult{MediaType: string(l.mediaType), UncompressedSize: l.size, Files: l.plan.files}
	if l.key != "" {
		reused, err := op.reuseLayer(ctx, l, dest)
		if err != nil {
			return err
		}
		if reused {
			return nil
		}
	}
	sl := l.streamLayer(ctx, read)
	sl.maxBuffer = bufferBudget / int64(op.o.jobs)
	size := int64(-1)
	if l.compression == Uncompressed {
		size = l.size
	}
	if err := sl.upload(ctx, op.o, op.repo, op.m, "weights/"+strconv.Itoa(l.plan.index), what, size); err != nil {
		return err
	}
	digest, _ := sl.Digest()
	diffID, _ := sl.DiffID()
	l.layer = sl
	l.result.Digest, l.result.DiffID, l.result.Size, l.result.Source = digest, diffID, sl.size, LayerUploaded
	l.result.ReadBytes = l.plan.content
	if l.key != "" {
		// The cache only saves work: failing to record must not fail the
		// publish.
		_ = op.o.layerDigests.StoreLayer(ctx, l.key, CachedLayer{
			Digest: l.result.Digest.String(), DiffID: l.result.DiffID.String(), Size: l.result.Size, MediaType: l.result.MediaType, Repository: op.repo.Name()})
	}
	return nil
}

// reuseLayer takes l from the cache if the registry has its blob: in the
// destination (found), or in the repository it was pushed to, on the same
// registry (mounted by the push). Anything that does not check out (the
// blob is gone, its size is not the recorded one, the entry is malformed)
// is a miss.
func (op *operation) reuseLayer(ctx context.Context, l *weightsLayer, dest func() (*http.Client, error)) (bool, error) {
	c, ok, err := op.o.layerDigests.LookupLayer(ctx, l.key)
	if err != nil || !ok {
		return false, nil // a cache that cannot answer only costs the work
	}
	digest, err1 := v1.NewHash(c.Digest)
	diffID, err2 := v1.NewHash(c.DiffID)
	if err1 != nil || err2 != nil || c.MediaType != string(l.mediaType) || c.Size <= 0 {
		return false, nil
	}
	if l.compression == Uncompressed && (c.Size != l.size || digest != diffID) {
		return false, nil
	}
	client, err := dest()
	if err != nil {
		return false, err
	}
	known := &knownLayer{diffID: diffID, size: c.Size, mediaType: l.mediaType}
	if size, err := blobSize(ctx, client, op.repo, digest); err != nil {
		return false, err
	} else if size == c.Size {
		known.Layer = &missingLayer{digest: digest}
		l.layer, l.result.Source = known, LayerFound
	} else {
		from, err := name.NewRepository(c.Repository, name.WeakValidation)
		if err != nil || from.RegistryStr() != op.repo.RegistryStr() || from.Name() == op.repo.Name() {
			return false, nil
		}
		fromClient, err := op.o.registryClient(ctx, from, nil, transport.PullScope, true)
		if err != nil {
			return false, nil // no pull access there: produce it
		}
		if size, err := blobSize(ctx, fromClient, from, digest); err != nil || size != c.Size {
			return false, nil // gone from the registry (or not what was recorded)
		}
		ref := from.Digest(digest.String())
		src, err := remote.Layer(ref, op.o.remoteOptions(ctx, nil)...)
		if err != nil {
			return false, nil
		}
		known.Layer = src
		l.layer, l.result.Source = &remote.MountableLayer{Layer: known, Reference: ref}, LayerMounted
	}
	l.result.Digest, l.result.DiffID, l.result.Size, l.result.Cached = digest, diffID, c.Size, true
	return true, nil
}

// missingLayer stands for a blob the destination already holds: the push
// finds it there and never reads it.
type missingLayer struct {
	v1.Layer
	digest v1.Hash
}

func (l *missingLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *missingLayer) Compressed() (io.ReadCloser, error) {
	return nil, fmt.Errorf("blob %s is in the destination and is not read", l.digest)
}
func (l *missingLayer) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }
