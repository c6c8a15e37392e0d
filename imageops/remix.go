package imageops

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// RemixRequest combines the code of one image with the weights of another.
type RemixRequest struct {
	Base    string    // image A: everything but its weights layers is kept
	Weights string    // image B: its weights layers are added
	Dest    string    // host/repo[:tag]
	Created time.Time // zero means B's creation time, so a remix is reproducible
}

// RemixResult describes a pushed remix.
type RemixResult struct {
	Ref       name.Digest      `json:"ref"`
	Digest    v1.Hash          `json:"digest"`
	Tag       string           `json:"tag,omitempty"`
	MediaType string           `json:"media_type"`
	Base      name.Digest      `json:"base"`    // resolved A
	Weights   name.Digest      `json:"weights"` // resolved B
	Removed   []v1.Hash        `json:"removed_layers"`
	Added     []v1.Hash        `json:"added_layers"`
	Platforms []PlatformResult `json:"platforms,omitempty"`
	Transfer  Transfer         `json:"transfer"`
	Stages    []Stage          `json:"stages"`
}

// Remix builds A's layers without A's weights layers plus B's weights
// layers, with A's config and a history that lines up with the layers. Only
// manifests and configs are read; on one registry every layer is mounted, so
// no layer byte moves (Transfer says what did).
func Remix(ctx context.Context, req RemixRequest, opts ...Option) (_ *RemixResult, err error) {
	op, err := begin(ctx, opts, req.Dest)
	if err != nil {
		return nil, err
	}
	defer func() { err = op.finish(err) }()
	_, a, err := op.resolve(op.o, req.Base, "base")
	if err != nil {
		return nil, err
	}
	// B is read for every platform, to match each of A's.
	bo := *op.o
	bo.platform = nil
	bRef, b, err := op.resolve(&bo, req.Weights, "weights image")
	if err != nil {
		return nil, err
	}
	st, tag := op.st, op.tag

	st.start("remix")
	res := &RemixResult{Base: a.ref, Weights: b.ref, Tag: tag}
	var images []platformImage
	toOCI := false
	for _, pa := range a.images {
		pb, err := b.match(pa.platform, bRef.String())
		if err != nil {
			return nil, err
		}
		img, removed, added, oci, err := remix(pa.image, pb, req.Created)
		if err != nil {
			return nil, err
		}
		toOCI = toOCI || oci
		res.Removed, res.Added = union(res.Removed, removed), union(res.Added, added)
		images = append(images, platformImage{platform: pa.platform, image: img})
	}

	pushed, err := op.publish(a, images, toOCI)
	if err != nil {
		return nil, err
	}
	sizes := a.blobSizes()
	for d, n := range b.blobSizes() {
		sizes[d] = n
	}
	res.Ref, res.Digest, res.MediaType = pushed.ref, pushed.digest, string(pushed.mediaType)
	res.Platforms, res.Transfer, res.Stages = pushed.platforms, op.m.transfer(sizes), st.list
	return res, nil
}

// match returns the image of s for platform p: the only image of a
// single-platform source, else the one with the same platform.
func (s *source) match(p *v1.Platform, ref string) (v1.Image, error) {
	if s.index == nil && len(s.images) == 1 {
		return s.images[0].image, nil
	}
	for _, pi := range s.images {
		if p == nil || pi.platform != nil && platformMatches(*pi.platform, *p) {
			return pi.image, nil
		}
	}
	return nil, invalidf("weights image %s has no %s image to remix with", ref, p)
}

// remix assembles one platform's image. It reports the digests removed from
// A and added from B, and whether the result had to become OCI.
func remix(a, b v1.Image, created time.Time) (v1.Image, []v1.Hash, []v1.Hash, bool, error) {
	amf, acf, err := manifestAndConfig(a, "base")
	if err != nil {
		return nil, nil, nil, false, err
	}
	bmf, bcf, err := manifestAndConfig(b, "weights image")
	if err != nil {
		return nil, nil, nil, false, err
	}
	ainfo, binfo := describe(amf, acf), describe(bmf, bcf)
	bWeights := weightsLayers(binfo)
	if len(bWeights) == 0 {
		return nil, nil, nil, false, fmt.Errorf("%w: the weights image has no weights layer (searched: r8im markers, history \"# weights\", cog COPY --from=weights); remix needs one", ErrNoWeights)
	}
	aLayers, err := a.Layers()
	if err != nil {
		return nil, nil, nil, false, fmt.Errorf("reading the base layers: %w", err)
	}
	bLayers, err := b.Layers()
	if err != nil {
		return nil, nil, nil, false, fmt.Errorf("reading the weights image layers: %w", err)
	}

	// OCI when A is, or when B brings layer types a Docker manifest cannot carry.
	toOCI := !isDocker(amf.MediaType)
	for _, i := range bWeights {
		if bmf.Layers[i].MediaType == types.OCILayerZStd || !isDocker(bmf.MediaType) && isDocker(amf.MediaType) && bmf.Layers[i].MediaType != types.DockerLayer {
			toOCI = true
		}
	}
	layerType := func(mt types.MediaType) types.MediaType {
		if toOCI {
			return ociEquivalent(mt)
		}
		return mt
	}

	cfg := acf.DeepCopy()
	cfg.RootFS.DiffIDs = nil
	cfg.History = nil
	var adds []mutate.Addendum
	var removed, added []v1.Hash
	// A's history, walked in order: empty-layer entries stay where they are,
	// entries of dropped layers go with their layer.
	hi := 0
	for i, li := range ainfo {
		for hi < len(acf.History) && acf.History[hi].EmptyLayer {
			cfg.History = append(cfg.History, acf.History[hi])
			hi++
		}
		var h *v1.History
		if hi < len(acf.History) {
			h = &acf.History[hi]
			hi++
		}
		if li.Weights.IsWholeLayer() {
			removed = append(removed, li.Digest)
			continue
		}
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, li.DiffID)
		if h != nil {
			cfg.History = append(cfg.History, *h)
		}
		adds = append(adds, mutate.Addendum{Layer: aLayers[i], MediaType: layerType(amf.Layers[i].MediaType), Annotations: amf.Layers[i].Annotations})
	}
	cfg.History = append(cfg.History, acf.History[min(hi, len(acf.History)):]...) // trailing empty entries
	for _, i := range bWeights {
		li := binfo[i]
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, li.DiffID)
		h := v1.History{CreatedBy: li.CreatedBy, Comment: WeightsComment, Created: bcf.Created}
		if li.history != nil {
			h = *li.history
		}
		cfg.History = append(cfg.History, h)
		ann := map[string]string{}
		for k, v := range bmf.Layers[i].Annotations {
			ann[k] = v
		}
		if toOCI {
			ann[AnnotationWeights] = "true"
		}
		adds = append(adds, mutate.Addendum{Layer: bLayers[i], MediaType: layerType(bmf.Layers[i].MediaType), Annotations: ann})
		added = append(added, li.Digest)
	}
	if created.IsZero() {
		created = bcf.Created.Time
	}
	cfg.Created = v1.Time{Time: created.UTC()}
	cfg.Config.Labels = withWeightsLabel(cfg.Config.Labels, added)

	img, err := mutate.Append(empty.Image, adds...)
	if err != nil {
		return nil, nil, nil, false, err
	}
	if toOCI {
		img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	}
	img, err = mutate.ConfigFile(img, cfg)
	return img, removed, added, toOCI, err
}

func manifestAndConfig(img v1.Image, what string) (*v1.Manifest, *v1.ConfigFile, error) {
	mf, err := img.Manifest()
	if err != nil {
		return nil, nil, fmt.Errorf("reading the %s manifest: %w", what, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, nil, fmt.Errorf("reading the %s config: %w", what, err)
	}
	return mf, cf, nil
}

// union appends to l the members of add it does not have yet: the layers
// removed or added on any platform of an index.
func union(l, add []v1.Hash) []v1.Hash {
	for _, s := range add {
		if !slices.Contains(l, s) {
			l = append(l, s)
		}
	}
	return l
}
