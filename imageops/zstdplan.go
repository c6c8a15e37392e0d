package imageops

import (
	"context"
	"fmt"
)

// ZstdPlan is what Recompress would do to an image, found by reading its
// manifests and configs only.
type ZstdPlan struct {
	Source string      `json:"source"` // resolved repo@sha256:…
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
	ref, err := o.parseRef(req.Source, "source")
	if err != nil {
		return nil, err
	}
	src, err := o.resolve(ctx, ref, o.remoteOptions(ctx, nil), "source")
	if err != nil {
		return nil, err
	}
	plans, convs, err := planZstd(src, req)
	if err != nil {
		return nil, fmt.Errorf("planning %s: %w", src.ref, err)
	}
	res := &ZstdPlan{Source: src.ref.String()}
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
