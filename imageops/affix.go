package imageops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// DefaultTarget is where weights land in the image.
const DefaultTarget = "/src/weights"

// Opener opens the weights tarball. It is called again when an upload is
// retried; see OnceOpener for inputs that can only be read once.
type Opener func() (io.ReadCloser, error)

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

// AffixRequest adds a weights tarball as a new layer on top of a base image.
type AffixRequest struct {
	Base        string      // base image reference, by tag or digest
	Dest        string      // destination host/repo[:tag]
	Weights     Opener      // the tarball: .tar, .tar.gz or .tar.zst
	WeightsSize int64       // size of the input in bytes if known, for progress
	Target      string      // directory in the image (default /src/weights)
	Compression Compression // default gzip
	Level       int         // 0 means the compression's default
	Created     time.Time   // history and config time; zero means now
	// AllowOutsideTarget keeps entries outside Target instead of refusing.
	AllowOutsideTarget bool
}

// AffixResult describes a pushed image.
type AffixResult struct {
	Ref           string           `json:"ref"` // repo@sha256:…
	Digest        string           `json:"digest"`
	Tag           string           `json:"tag,omitempty"`
	MediaType     string           `json:"media_type"`
	Base          string           `json:"base"` // resolved base repo@sha256:…
	CrossRegistry bool             `json:"cross_registry"`
	Layer         LayerResult      `json:"layer"`
	Platforms     []PlatformResult `json:"platforms,omitempty"`
	Transfer      Transfer         `json:"transfer"`
	Stages        []Stage          `json:"stages"`
}

// LayerResult describes the new weights layer.
type LayerResult struct {
	Digest           string `json:"digest"`
	DiffID           string `json:"diff_id"`
	MediaType        string `json:"media_type"`
	Size             int64  `json:"size"`
	UncompressedSize int64  `json:"uncompressed_size"`
	Files            int    `json:"files"`
}

// PlatformResult is one platform's image in a pushed index.
type PlatformResult struct {
	Platform string `json:"platform"`
	Digest   string `json:"digest"`
}

// Affix streams req.Weights once — read, rewrite under the target, compress,
// hash, upload — adds it as a layer on the base image(s), pushes, and
// verifies the result. Base layers are never downloaded: the destination
// already has them or they are mounted from the base's repository (copied,
// and reported as such, only when the base is on another registry).
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
	var stats TarStats
	layer := &streamLayer{
		compression: req.Compression, level: req.Level,
		mediaType: layerMediaType(!toOCI, req.Compression),
		produce: func(w io.Writer) (err error) {
			stats, err = req.produce(w, op.o.limits, st.progress("upload", req.WeightsSize))
			return err
		},
	}
	if err := layer.upload(op.ctx, op.o, repo, op.m, "weights/0", "the weights layer"); err != nil {
		return nil, err
	}

	var images []platformImage
	for _, pi := range src.images {
		img, err := affixImage(pi.image, layer, req, toOCI)
		if err != nil {
			return nil, err
		}
		images = append(images, platformImage{platform: pi.platform, image: img})
	}
	pushed, err := op.publish(src, images, toOCI)
	if err != nil {
		return nil, err
	}

	digest, _ := layer.Digest()
	diffID, _ := layer.DiffID()
	return &AffixResult{
		Ref: pushed.ref.String(), Digest: pushed.ref.DigestStr(), Tag: tag, MediaType: string(pushed.mediaType),
		Base: src.ref.String(), CrossRegistry: baseRef.Context().RegistryStr() != repo.RegistryStr(),
		Layer: LayerResult{
			Digest: digest.String(), DiffID: diffID.String(), MediaType: string(layerMediaType(!toOCI, req.Compression)),
			Size: layer.size, UncompressedSize: layer.uncompSize, Files: stats.Files,
		},
		Platforms: pushed.platforms,
		Transfer:  op.m.transfer(src.blobSizes()),
		Stages:    st.list,
	}, nil
}

func (req *AffixRequest) normalize() error {
	if req.Weights == nil {
		return invalidf("no weights tarball given")
	}
	if req.Target == "" {
		req.Target = DefaultTarget
	}
	if !path.IsAbs(req.Target) || path.Clean(req.Target) == "/" {
		return invalidf("target %q must be an absolute directory below / such as /src/weights", req.Target)
	}
	req.Target = path.Clean(req.Target)
	if req.Compression == "" {
		req.Compression = Gzip
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
	stats, err := RewriteTar(w, tr, TarPolicy{Target: req.Target, AllowOutsideTarget: req.AllowOutsideTarget, ModTime: req.Created,
		MaxEntries: limits.MaxEntries, MaxNameLength: limits.MaxNameLength, MaxBytes: limits.MaxBytes})
	if isInputError(err) {
		return stats, permanent(err)
	}
	return stats, err
}

// affixImage returns base plus the weights layer, with config and history
// marking it. A Docker base becomes OCI when toOCI (zstd): manifest, config
// and every layer descriptor take their OCI types; the blobs stay the same.
func affixImage(base v1.Image, layer *streamLayer, req AffixRequest, toOCI bool) (v1.Image, error) {
	mf, err := base.Manifest()
	if err != nil {
		return nil, fmt.Errorf("reading the base manifest: %w", err)
	}
	cf, err := base.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the base config: %w", err)
	}
	digest, _ := layer.Digest()
	diffID, _ := layer.DiffID()

	cfg := cf.DeepCopy()
	cfg.Created = v1.Time{Time: req.Created}
	cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, diffID)
	cfg.History = append(cfg.History, v1.History{
		Created: v1.Time{Time: req.Created}, CreatedBy: fmt.Sprintf(WeightsCreatedByFmt, req.Target), Comment: WeightsComment,
	})
	marked := []string{digest.String()}
	for _, li := range describe(mf, cf) {
		if li.Weights == MarkedR8im {
			marked = append(marked, li.Digest.String())
		}
	}
	cfg.Config.Labels = withWeightsLabel(cfg.Config.Labels, marked)

	add := mutate.Addendum{Layer: layer, MediaType: layerMediaType(!toOCI, req.Compression)}
	if toOCI {
		add.Annotations = map[string]string{AnnotationWeights: "true"}
	}
	img, err := withLayers(base, mf, toOCI, add)
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
