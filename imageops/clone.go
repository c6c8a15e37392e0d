package imageops

import (
	"context"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// CloneRequest copies an image to another repository, unchanged.
type CloneRequest struct {
	Source string // image reference, by tag or digest
	Dest   string // host/repo[:tag]
}

// CloneResult describes a pushed copy.
type CloneResult struct {
	Ref       name.Digest      `json:"ref"` // repo@sha256:…
	Digest    v1.Hash          `json:"digest"`
	Tag       string           `json:"tag,omitempty"`
	MediaType string           `json:"media_type"`
	Source    name.Digest      `json:"source"` // resolved repo@sha256:…
	Platforms []PlatformResult `json:"platforms,omitempty"`
	Transfer  Transfer         `json:"transfer"`
	Stages    []Stage          `json:"stages"`
}

// Clone copies Source to Dest without a new layer: on the same registry
// every blob is mounted and nothing is downloaded; from another registry the
// layers are copied (in chunks, resumable) and reported as such. A single
// image keeps its digest; with every platform (WithPlatform(nil)) an index
// is pushed as a new index of the same images.
func Clone(ctx context.Context, req CloneRequest, opts ...Option) (_ *CloneResult, err error) {
	op, err := begin(ctx, opts, req.Dest)
	if err != nil {
		return nil, err
	}
	defer func() { err = op.finish(err) }()
	_, src, err := op.resolve(op.o, req.Source, "source")
	if err != nil {
		return nil, err
	}
	pushed, err := op.publish(src, src.images, false)
	if err != nil {
		return nil, err
	}
	return &CloneResult{
		Ref: pushed.ref, Digest: pushed.digest, Tag: op.tag, MediaType: string(pushed.mediaType),
		Source: src.ref, Platforms: pushed.platforms, Transfer: op.m.transfer(src.blobSizes()), Stages: op.st.list,
	}, nil
}
