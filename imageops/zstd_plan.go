package imageops

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ZstdPlan is what Recompress would do to an image, found by reading its
// manifests and configs only.
type ZstdPlan struct {
	Source name.Digest `json:"source"` // resolved repo@sha256:…
	Layers []ZstdLayer `json:"layers"` // each distinct layer; Reason says why one would be kept
	// ConvertBytes is the compressed size of the layers to recompress.
	ConvertBytes int64 `json:"convert_bytes"`
	// NeedsWork is false when the image is already all zstd (or every layer
	// is kept) and its manifests are already OCI: recompressing would push
	// the same image again.
	NeedsWork bool `json:"needs_work"`
}

// PlanRecompress resolves req.Source and says what Recompress would do,
// without downloading a layer or writing anything (req.Dest is ignored).
func PlanRecompress(ctx context.Context, req ZstdRequest, opts ...Option) (*ZstdPlan, error) {
	if err := req.normalize(); err != nil {
		return nil, err
	}
	o := makeOptions(opts)
	src, err := o.resolveName(ctx, req.Source, "source", nil)
	if err != nil {
		return nil, err
	}
	plans, convs, err := planZstd(src, req)
	if err != nil {
		return nil, fmt.Errorf("planning %s: %w", src.ref, err)
	}
	res := &ZstdPlan{Source: src.ref}
	for _, p := range plans {
		res.NeedsWork = res.NeedsWork || p.converted
	}
	for _, c := range convs {
		res.Layers = append(res.Layers, c.result())
		if c.reason == "" {
			res.ConvertBytes += c.desc.Size
			res.NeedsWork = true
		}
	}
	return res, nil
}

// emptyTarDiffID is the diffID of an empty tar (two zero blocks).
var emptyTarDiffID = v1.Hash{Algorithm: "sha256", Hex: "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"}

// dockerLayerZstd is the Docker-namespaced zstd layer type some tools write.
const dockerLayerZstd types.MediaType = "application/vnd.docker.image.rootfs.diff.tar.zstd"

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
	r := ZstdLayer{Source: c.desc.Digest, Digest: c.desc.Digest, DiffID: c.diffID,
		OldSize: c.desc.Size, NewSize: c.desc.Size, Reason: c.reason}
	if out := c.output(); out != nil {
		d, _ := out.Digest()
		n, _ := out.Size()
		r.Digest, r.NewSize, r.Recompressed, r.Reused = d, n, true, c.reused != nil
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
