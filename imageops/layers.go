package imageops

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
)

// LayersResult summarizes one image: its layers with their weights markers
// and sizes as the manifest states them (compressed).
type LayersResult struct {
	Ref         name.Digest `json:"ref"` // repo@sha256 of the image (the platform's image when the ref is an index)
	MediaType   string      `json:"media_type"`
	Platform    string      `json:"platform,omitempty"`
	Layers      []LayerInfo `json:"layers"`
	TotalSize   int64       `json:"total_size"`   // sum of the layer sizes
	WeightsSize int64       `json:"weights_size"` // sum of whole-weights layers (IsWholeLayer)
}

// Layers describes the layers of the image ref names, one result per
// selected platform (WithPlatform(nil): every platform of an index). It reads
// manifests and configs only, never a layer blob.
func Layers(ctx context.Context, ref string, opts ...Option) ([]LayersResult, error) {
	o := makeOptions(opts)
	src, err := o.resolveName(ctx, ref, "image", nil)
	if err != nil {
		return nil, err
	}
	out := make([]LayersResult, 0, len(src.images))
	for _, pi := range src.images {
		res, err := describeImage(src, pi)
		if err != nil {
			return nil, err
		}
		out = append(out, *res)
	}
	return out, nil
}

// describeImage reads one image's manifest and config and summarizes it.
func describeImage(src *source, pi platformImage) (*LayersResult, error) {
	digest, err := pi.image.Digest()
	if err != nil {
		return nil, registryErr(err, "reading the manifest of "+src.ref.String())
	}
	ref := src.ref.Context().Digest(digest.String())
	mf, err := pi.image.Manifest()
	if err != nil {
		return nil, registryErr(err, "reading the manifest of "+ref.String())
	}
	cf, err := pi.image.ConfigFile()
	if err != nil {
		return nil, registryErr(err, "reading the config of "+ref.String())
	}
	res := &LayersResult{Ref: ref, MediaType: string(mf.MediaType), Layers: describe(mf, cf)}
	switch {
	case pi.platform != nil:
		res.Platform = pi.platform.String()
	case cf.OS != "" && cf.Architecture != "":
		res.Platform = fmt.Sprintf("%s/%s", cf.OS, cf.Architecture)
		if cf.Variant != "" {
			res.Platform += "/" + cf.Variant
		}
	}
	if res.MediaType == "" {
		if mt, err := pi.image.MediaType(); err == nil {
			res.MediaType = string(mt)
		}
	}
	for _, li := range res.Layers {
		res.TotalSize += li.Size
		if li.Weights.IsWholeLayer() {
			res.WeightsSize += li.Size
		}
	}
	return res, nil
}
