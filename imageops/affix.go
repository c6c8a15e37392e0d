package imageops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// DefaultTarget is where weights land in the image (Affix's and
// TarPolicy's default target).
const DefaultTarget = "/src/weights"

// Opener opens the weights tarball: go-containerregistry's tarball.Opener.
// It is called again when an upload is retried; see OnceOpener for inputs
// that can only be read once.
type Opener = tarball.Opener

// OnceOpener serves r once (stdin): a retried upload fails instead of
// silently sending a partial stream.
func OnceOpener(r io.Reader) Opener {
	used := false
	return func() (io.ReadCloser, error) {
		if used {
			return nil, permanent(fmt.Errorf("the weights input can only be read once (stdin) and the upload needs a retry; give a file instead"))
		}
		used = true
		return io.NopCloser(r), nil
	}
}

// AffixRequest adds weights as new layers on top of a base image.
type AffixRequest struct {
	Base string // base image reference, by tag or digest
	Dest string // destination host/repo[:tag]
	// Tree is the weights as a tree with random access (DirTree,
	// TarFileTree, an S3 prefix): its layers are produced in parallel, laid
	// out by Layout. When nil, Weights is streamed.
	Tree WeightsTree
	// Weights is the weights tarball as a stream (.tar, .tar.gz or
	// .tar.zst), read in order into one layer. Used when Tree is nil, or
	// with LayoutSingle.
	Weights     Opener
	WeightsSize int64       // size of the input in bytes if known, for progress
	Target      string      // directory in the image (default /src/weights)
	Layout      Layout      // how a Tree is cut into layers (default auto)
	Compression Compression // default Auto
	Level       int         // 0 means the compression's default
	Created     time.Time   // history and config time; zero means now
	// AllowOutsideTarget keeps entries outside Target instead of refusing.
	AllowOutsideTarget bool
}

// AffixResult describes a pushed image.
type AffixResult struct {
	Ref           name.Digest `json:"ref"` // repo@sha256:…
	Digest        v1.Hash     `json:"digest"`
	Tag           string      `json:"tag,omitempty"`
	MediaType     string      `json:"media_type"`
	Base          name.Digest `json:"base"` // resolved base repo@sha256:…
	CrossRegistry bool        `json:"cross_registry"`
	// Layer sums up the weights layers: with one layer, that layer; with
	// several, the first one's digests and the totals of sizes and files.
	Layer LayerResult `json:"layer"`
	// Layers lists every weights layer, in image order.
	Layers    []LayerResult    `json:"layers"`
	ReadBytes int64            `json:"read_bytes"` // weights content bytes read from the input
	Platforms []PlatformResult `json:"platforms,omitempty"`
	Transfer  Transfer         `json:"transfer"`
	Stages    []Stage          `json:"stages"`
}

// LayerResult describes a weights layer.
type LayerResult struct {
	Digest           v1.Hash `json:"digest"`
	DiffID           v1.Hash `json:"diff_id"`
	MediaType        string  `json:"media_type"`
	Size             int64   `json:"size"`
	UncompressedSize int64   `json:"uncompressed_size"`
	Files            int     `json:"files"`
	// Source says how the layer got into the destination: LayerUploaded,
	// LayerFound or LayerMounted; Cached that its digest came from the
	// layer-digest cache (nothing of it was read).
	Source    string `json:"source,omitempty"`
	Cached    bool   `json:"cached,omitempty"`
	ReadBytes int64  `json:"read_bytes"` // content bytes read to produce it
}

// PlatformResult is one platform's image in a pushed index.
type PlatformResult struct {
	Platform string  `json:"platform"`
	Digest   v1.Hash `json:"digest"`
}

// weightsModTime is the time of every entry of a weights layer: a fixed
// one, so that a layer depends on the weights alone and publishing the same
// weights again (another day, another repository) gives the same blobs.
// The publish time goes in the config and history (Created).
var weightsModTime = time.Unix(0, 0).UTC()

// Affix adds the weights as new layers on the base image(s), pushes, and
// verifies the result. A Tree is laid out into several layers (Layout) that
// are produced and uploaded o.jobs at once, each read from the input, placed
// under the target, checked, compressed, hashed and uploaded in one pass; a
// stream becomes one layer the same way. Layers the layer-digest cache knows
// (WithLayerDigests) and the registry holds are not read nor sent. Base
// layers are never downloaded: the destination already has them or they are
// mounted from the base's repository (copied, and reported as such, only
// when the base is on another registry).
func Affix(ctx context.Context, req AffixRequest, opts ...Option) (_ *AffixResult, err error) {
	if err := req.normalize(); err != nil {
		return nil, err
	}
	op, err := begin(ctx, opts, req.Dest)
	if err != nil {
		return nil, err
	}
	defer func() { err = op.finish(err) }()
	baseRef, src, err := op.resolve(op.o, req.Base, "base")
	if err != nil {
		return nil, err
	}
	st, repo, tag := op.st, op.repo, op.tag
	toOCI := req.Compression == Zstd || !src.docker()

	st.start("upload")
	layers, err := op.weightsLayers(&req, !toOCI, st.progress("upload", req.WeightsSize))
	if err != nil {
		return nil, err
	}

	var images []platformImage
	for _, pi := range src.images {
		img, err := affixImage(pi.image, layers, req, toOCI)
		if err != nil {
			return nil, err
		}
		images = append(images, platformImage{platform: pi.platform, image: img})
	}
	pushed, err := op.publish(src, images, toOCI)
	if err != nil {
		return nil, err
	}

	res := &AffixResult{
		Ref: pushed.ref, Digest: pushed.digest, Tag: tag, MediaType: string(pushed.mediaType),
		Base: src.ref, CrossRegistry: baseRef.Context().RegistryStr() != repo.RegistryStr(),
		Platforms: pushed.platforms,
		Transfer:  op.m.transfer(src.blobSizes()),
		Stages:    st.list,
	}
	for i, l := range layers {
		res.Layers = append(res.Layers, l.result)
		res.ReadBytes += l.result.ReadBytes
		if i == 0 {
			res.Layer = l.result
			continue
		}
		res.Layer.Size += l.result.Size
		res.Layer.UncompressedSize += l.result.UncompressedSize
		res.Layer.Files += l.result.Files
		res.Layer.ReadBytes += l.result.ReadBytes
	}
	return res, nil
}

// weightsLayers brings the weights layers into the destination: a tree's
// per its layout, in parallel; a stream's one after another as it is read;
// with LayoutSingle, the stream as one layer.
func (op *operation) weightsLayers(req *AffixRequest, docker bool, progress func(int64)) ([]*weightsLayer, error) {
	switch {
	case req.Tree != nil && (req.Layout != LayoutSingle || req.Weights == nil):
		return op.treeLayers(req, docker, progress)
	case req.Layout != LayoutSingle:
		return op.streamLayers(req, docker, progress)
	}
	c := layerCompression(req.Compression, false)
	level := req.Level
	if c != req.Compression && req.Compression != Auto {
		level = 0
	}
	level = defaultLevel(c, level)
	var stats TarStats
	var read int64
	sl := &streamLayer{
		compression: c, level: level, mediaType: layerMediaType(docker, c),
		produce: func(w io.Writer) (err error) {
			stats, err = req.produce(w, op.o.limits, func(n int64) {
				read = n
				progress(n)
			})
			return err
		},
	}
	if err := sl.upload(op.ctx, op.o, op.repo, op.m, "weights/0", "the weights layer", -1); err != nil {
		return nil, err
	}
	digest, _ := sl.Digest()
	diffID, _ := sl.DiffID()
	return []*weightsLayer{{layer: sl, mediaType: sl.mediaType, result: LayerResult{
		Digest: digest, DiffID: diffID, MediaType: string(sl.mediaType),
		Size: sl.size, UncompressedSize: sl.uncompSize, Files: stats.Files, Source: LayerUploaded, ReadBytes: read,
	}}}, nil
}

func (req *AffixRequest) normalize() error {
	if req.Weights == nil && req.Tree == nil {
		return invalidf("no weights given")
	}
	var err error
	if req.Layout, err = ParseLayout(string(req.Layout)); err != nil {
		return invalidf("%v", err)
	}
	if req.Target == "" {
		req.Target = DefaultTarget
	}
	if !path.IsAbs(req.Target) || path.Clean(req.Target) == "/" {
		return invalidf("target %q must be an absolute directory below / such as /src/weights", req.Target)
	}
	req.Target = path.Clean(req.Target)
	if req.Compression == "" {
		req.Compression = Auto
	}
	if _, err := ParseCompression(string(req.Compression)); err != nil {
		return invalidf("%v", err)
	}
	req.Level = defaultLevel(req.Compression, req.Level)
	if err := checkLevel(req.Compression, req.Level); err != nil {
		return err
	}
	if req.Created.IsZero() {
		req.Created = time.Now()
	}
	req.Created = req.Created.UTC().Truncate(time.Second)
	return nil
}

// produce writes the rewritten weights tar to w: input errors and policy
// violations are permanent, read errors of the source are not.
func (req *AffixRequest) produce(w io.Writer, limits TarLimits, progress func(int64)) (TarStats, error) {
	rc, err := req.Weights()
	if err != nil {
		return TarStats{}, fmt.Errorf("opening the weights: %w", err)
	}
	defer rc.Close()
	tr, _, err := OpenTarStream(&progressReader{r: rc, report: progress})
	if isInputError(err) {
		return TarStats{}, permanent(err)
	} else if err != nil {
		return TarStats{}, fmt.Errorf("reading the weights: %w", err) // the source's failure: may be transient
	}
	defer tr.Close()
	stats, err := RewriteTar(w, tr, TarPolicy{Target: req.Target, AllowOutsideTarget: req.AllowOutsideTarget, ModTime: weightsModTime,
		MaxEntries: limits.MaxEntries, MaxNameLength: limits.MaxNameLength, MaxBytes: limits.MaxBytes})
	if isInputError(err) {
		return stats, permanent(err)
	}
	return stats, err
}

// AppendWeights returns base with weights layers appended (such as
// WeightsLayers gives), marked as r8im marks weights: a history entry each
// (created, and target in its text), the config label listing every
// weights layer of the image, and in OCI manifests an annotation on each.
// `r8im layers`, extract and remix then treat them, with any weights layers
// base already had, as one set. The config's created time becomes created.
func AppendWeights(base v1.Image, target string, created time.Time, layers ...v1.Layer) (v1.Image, error) {
	mf, err := base.Manifest()
	if err != nil {
		return nil, fmt.Errorf("reading the base manifest: %w", err)
	}
	if target == "" {
		target = DefaultTarget
	}
	return appendWeights(base, layers, target, created, !isDocker(mf.MediaType))
}

// affixImage returns base plus the weights layers. A Docker base becomes
// OCI when toOCI (zstd): manifest, config and every layer descriptor take
// their OCI types; the blobs stay the same.
func affixImage(base v1.Image, layers []*weightsLayer, req AffixRequest, toOCI bool) (v1.Image, error) {
	ls := make([]v1.Layer, len(layers))
	for i, l := range layers {
		ls[i] = l.layer
	}
	return appendWeights(base, ls, req.Target, req.Created, toOCI)
}

func appendWeights(base v1.Image, layers []v1.Layer, target string, created time.Time, toOCI bool) (v1.Image, error) {
	mf, err := base.Manifest()
	if err != nil {
		return nil, fmt.Errorf("reading the base manifest: %w", err)
	}
	cf, err := base.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the base config: %w", err)
	}
	cfg := cf.DeepCopy()
	cfg.Created = v1.Time{Time: created}
	var marked []v1.Hash
	adds := make([]mutate.Addendum, 0, len(layers))
	for _, l := range layers {
		digest, err := l.Digest()
		if err != nil {
			return nil, fmt.Errorf("a weights layer's digest: %w", err)
		}
		diffID, err := l.DiffID()
		if err != nil {
			return nil, fmt.Errorf("weights layer %s: %w", digest, err)
		}
		mt, err := l.MediaType()
		if err != nil {
			return nil, fmt.Errorf("weights layer %s: %w", digest, err)
		}
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, diffID)
		cfg.History = append(cfg.History, v1.History{
			Created: v1.Time{Time: created}, CreatedBy: fmt.Sprintf(WeightsCreatedByFmt, target), Comment: WeightsComment,
		})
		marked = append(marked, digest)
		add := mutate.Addendum{Layer: l, MediaType: mt}
		if toOCI {
			add.MediaType = ociEquivalent(mt)
			add.Annotations = map[string]string{AnnotationWeights: "true"}
		}
		adds = append(adds, add)
	}
	for _, li := range describe(mf, cf) {
		if li.Weights == MarkedR8im {
			marked = append(marked, li.Digest)
		}
	}
	cfg.Config.Labels = withWeightsLabel(cfg.Config.Labels, marked)

	img, err := withLayers(base, mf, toOCI, adds...)
	if err != nil {
		return nil, err
	}
	return mutate.ConfigFile(img, cfg)
}

// withLayers appends adds to base. When a Docker base must become OCI it is
// rebuilt from its own layers (same objects, so they still mount) with OCI
// media types.
func withLayers(base v1.Image, mf *v1.Manifest, toOCI bool, adds ...mutate.Addendum) (v1.Image, error) {
	if !toOCI || !isDocker(mf.MediaType) {
		return mutate.Append(base, adds...)
	}
	layers, err := base.Layers()
	if err != nil {
		return nil, fmt.Errorf("reading the base layers: %w", err)
	}
	all := make([]mutate.Addendum, 0, len(layers)+len(adds))
	for i, l := range layers {
		all = append(all, mutate.Addendum{Layer: l, MediaType: ociEquivalent(mf.Layers[i].MediaType), Annotations: mf.Layers[i].Annotations})
	}
	img, err := mutate.Append(empty.Image, append(all, adds...)...)
	if err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	return mutate.ConfigMediaType(img, types.OCIConfigJSON), nil
}

// isInputError reports whether err is the weights input's fault (bad or
// refused tarball): permanent, where a retry would fail the same way.
func isInputError(err error) bool {
	var pe *PolicyError
	return errors.As(err, &pe) || errors.Is(err, ErrEmptyInput) || errors.Is(err, ErrNotTar) ||
		errors.Is(err, ErrTruncatedTar) || errors.Is(err, ErrCorruptTar) || errors.Is(err, ErrEmptyTar)
}
