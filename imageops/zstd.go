package imageops

import (
	"context"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
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
	Source       v1.Hash `json:"source"` // the source layer digest
	Digest       v1.Hash `json:"digest"` // the layer in the result (Source when kept)
	DiffID       v1.Hash `json:"diff_id"`
	OldSize      int64   `json:"old_size"`
	NewSize      int64   `json:"new_size"`
	Recompressed bool    `json:"recompressed"`
	Reused       bool    `json:"reused,omitempty"` // the conversion came from the layer cache
	Reason       string  `json:"reason,omitempty"` // why it was kept
}

// ZstdResult describes a pushed recompressed image.
type ZstdResult struct {
	Ref       name.Digest      `json:"ref"` // repo@sha256:…
	Digest    v1.Hash          `json:"digest"`
	Tag       string           `json:"tag,omitempty"`
	MediaType string           `json:"media_type"`
	Source    name.Digest      `json:"source"` // resolved source repo@sha256:…
	Layers    []ZstdLayer      `json:"layers"`
	Platforms []PlatformResult `json:"platforms,omitempty"`
	Transfer  Transfer         `json:"transfer"`
	Stages    []Stage          `json:"stages"`
}

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
		Ref: pushed.ref, Digest: pushed.digest, Tag: op.tag, MediaType: string(pushed.mediaType),
		Source: src.ref, Platforms: pushed.platforms, Transfer: op.m.transfer(src.blobSizes()), Stages: op.st.list,
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
