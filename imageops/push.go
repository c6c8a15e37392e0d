package imageops

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// Push writes img to ref the way r8im's own operations publish: every
// layer the registry lacks goes up in chunks that a front capping request
// bodies accepts, resumable across attempts (WithChunkSize,
// WithUploadSessions); a layer read from the same registry
// (remote.MountableLayer) is mounted; the manifest is written by
// go-containerregistry with WithRemoteOptions passed through; then the
// image is read back by digest and every blob it references checked. ref
// is a tag, or img's own digest. It returns the digest pushed.
//
// With WeightsLayers and AppendWeights it is Affix taken apart:
//
//	layers, err := imageops.WeightsLayers(ctx, imageops.DirTree(dir), imageops.WeightsOptions{})
//	img, err := imageops.AppendWeights(base, imageops.DefaultTarget, time.Now(), layers...)
//	d, err := imageops.Push(ctx, img, name.MustParseReference("r8.im/acme/model:v2"))
func Push(ctx context.Context, img v1.Image, ref name.Reference, opts ...Option) (name.Digest, error) {
	o := makeOptions(opts)
	tag, err := pushTag(ref, img)
	if err != nil {
		return name.Digest{}, err
	}
	op := o.begin(ctx, ref.Context(), tag)
	op.uploadAll = true
	p, err := op.publish(&source{}, []platformImage{{image: img}}, false)
	if err != nil {
		return name.Digest{}, op.finish(err)
	}
	return p.ref, nil
}

// PushIndex is Push for an index of images (one per platform, as
// mutate.AppendManifests builds): the layers of every image it lists go up
// as Push's do, then the index is written as it is — its manifests,
// platforms, annotations and order kept — and read back and checked. An
// index that lists another index is refused.
func PushIndex(ctx context.Context, idx v1.ImageIndex, ref name.Reference, opts ...Option) (name.Digest, error) {
	o := makeOptions(opts)
	tag, err := pushTag(ref, idx)
	if err != nil {
		return name.Digest{}, err
	}
	images, err := indexImages(idx)
	if err != nil {
		return name.Digest{}, err
	}
	op := o.begin(ctx, ref.Context(), tag)
	op.uploadAll = true
	d, err := op.pushIndex(idx, images, ref)
	return d, op.finish(err)
}

// pushIndex uploads the layers of images (idx's), writes idx to ref and
// checks it.
func (op *operation) pushIndex(idx v1.ImageIndex, images []platformImage, ref name.Reference) (name.Digest, error) {
	op.st.start("push")
	for _, pi := range images {
		op.m.addSizes(pi.image)
	}
	if err := op.uploadLayers(images, true); err != nil {
		return name.Digest{}, err
	}
	d, err := idx.Digest()
	if err != nil {
		return name.Digest{}, fmt.Errorf("computing the index digest: %w", err)
	}
	if err := remote.WriteIndex(ref, idx, op.ropts...); err != nil {
		return name.Digest{}, registryErr(err, "pushing "+ref.String())
	}
	pushed := ref.Context().Digest(d.String())
	op.st.start("verify")
	if err := verifyPushed(op.ctx, op.o, pushed, op.ropts); err != nil {
		return name.Digest{}, err
	}
	op.st.stop()
	return pushed, nil
}

// pushTag is the tag a push to ref writes: "" for a digest reference, which
// must be what is pushed.
func pushTag(ref name.Reference, what interface{ Digest() (v1.Hash, error) }) (string, error) {
	switch r := ref.(type) {
	case name.Tag:
		return r.TagStr(), nil
	case name.Digest:
		d, err := what.Digest()
		if err != nil {
			return "", fmt.Errorf("computing the digest to push: %w", err)
		}
		if d.String() != r.DigestStr() {
			return "", invalidf("%s names a digest, and what is pushed has %s: push it by tag, or by its own digest", ref, d)
		}
	}
	return "", nil
}

// indexImages lists the images of idx with their platforms.
func indexImages(idx v1.ImageIndex) ([]platformImage, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading the index: %w", err)
	}
	var out []platformImage
	for _, desc := range im.Manifests {
		if desc.MediaType.IsIndex() {
			return nil, invalidf("the index lists another index (%s); push that one on its own", desc.Digest)
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return nil, fmt.Errorf("reading the index's image %s: %w", desc.Digest, err)
		}
		out = append(out, platformImage{platform: desc.Platform, image: img})
	}
	return out, nil
}

type pushed struct {
	ref       name.Digest
	digest    v1.Hash
	mediaType types.MediaType
	platforms []PlatformResult
}

// push writes the new image, or a new index of the new per-platform images
// when the source was an index and every platform was processed. The tag,
// if any, is written last, by the manifest that carries it.
func push(repo name.Repository, tag string, src *source, images []platformImage, toOCI bool, ropts []remote.Option) (*pushed, error) {
	if src.index == nil {
		img := images[0].image
		d, err := img.Digest()
		if err != nil {
			return nil, fmt.Errorf("computing the image digest: %w", err)
		}
		mt, _ := img.MediaType()
		var ref name.Reference = repo.Digest(d.String())
		if tag != "" {
			ref = repo.Tag(tag)
		}
		if err := remote.Write(ref, img, ropts...); err != nil {
			return nil, registryErr(err, "pushing "+ref.String())
		}
		return &pushed{ref: repo.Digest(d.String()), digest: d, mediaType: mt}, nil
	}
	mt, err := src.index.MediaType()
	if err != nil {
		return nil, err
	}
	if toOCI {
		mt = ociEquivalent(mt)
	}
	var adds []mutate.IndexAddendum
	out := &pushed{mediaType: mt}
	for _, pi := range images {
		d, err := pi.image.Digest()
		if err != nil {
			return nil, fmt.Errorf("computing the %s image digest: %w", pi.platform, err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: pi.image, Descriptor: v1.Descriptor{Platform: pi.platform}})
		out.platforms = append(out.platforms, PlatformResult{Platform: pi.platform.String(), Digest: d})
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, mt), adds...)
	d, err := idx.Digest()
	if err != nil {
		return nil, fmt.Errorf("computing the index digest: %w", err)
	}
	var ref name.Reference = repo.Digest(d.String())
	if tag != "" {
		ref = repo.Tag(tag)
	}
	if err := remote.WriteIndex(ref, idx, ropts...); err != nil {
		return nil, registryErr(err, "pushing "+ref.String())
	}
	out.ref, out.digest = repo.Digest(d.String()), d
	return out, nil
}

// verifyPushed re-reads what was pushed by digest and checks with HEAD that
// the registry holds every blob it references.
func verifyPushed(ctx context.Context, o *options, ref name.Digest, ropts []remote.Option) error {
	desc, err := remote.Get(ref, ropts...)
	if err != nil {
		return registryErr(err, "verifying "+ref.String())
	}
	var images []v1.Image
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return err
		}
		for _, d := range im.Manifests {
			img, err := idx.Image(d.Digest)
			if err != nil {
				return registryErr(err, fmt.Sprintf("verifying %s@%s", ref.Context(), d.Digest))
			}
			images = append(images, img)
		}
	} else {
		img, err := desc.Image()
		if err != nil {
			return err
		}
		images = append(images, img)
	}
	var blobs []v1.Hash
	for _, img := range images {
		mf, err := img.Manifest()
		if err != nil {
			return registryErr(err, "verifying "+ref.String())
		}
		blobs = append(blobs, mf.Config.Digest)
		for _, l := range mf.Layers {
			blobs = append(blobs, l.Digest)
		}
	}
	return headBlobs(ctx, o, ref.Context(), blobs)
}

// headBlobs checks that repo holds every blob, o.jobs HEADs at once
// through the retrying registry client.
func headBlobs(ctx context.Context, o *options, repo name.Repository, blobs []v1.Hash) error {
	client, err := o.registryClient(ctx, repo, nil, transport.PullScope, true)
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(o.jobs)
	for _, d := range blobs {
		g.Go(func() error {
			size, err := blobSize(ctx, client, repo, d)
			if err != nil {
				return fmt.Errorf("verifying blob %s in %s: %w", d, repo, err)
			}
			if size < 0 {
				return fmt.Errorf("verifying %s: the pushed manifest references blob %s, which the registry does not hold", repo, d)
			}
			return nil
		})
	}
	return g.Wait()
}
