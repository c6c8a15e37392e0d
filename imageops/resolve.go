package imageops

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// source is a resolved image reference: the digest it pointed at, and the
// image(s) an operation applies to.
type source struct {
	ref    name.Digest     // repo@digest of the manifest or index the reference named
	index  v1.ImageIndex   // the index, when the reference named one
	images []platformImage // one, or one per platform with WithPlatform(nil)
	// attestations counts the index's manifests that are no runnable
	// image (unknown/unknown attestations), left out of a new index.
	attestations int
}

type platformImage struct {
	platform *v1.Platform // nil for a single-platform reference
	image    v1.Image
}

// resolveName parses the reference s and resolves it (resolve), its
// registry reads metered by m (nil: unmetered).
func (o *options) resolveName(ctx context.Context, s, what string, m *meter) (*source, error) {
	r, err := o.parseRef(s, what)
	if err != nil {
		return nil, err
	}
	return o.resolve(ctx, r, o.remoteOptions(ctx, m), what)
}

// resolve fetches ref's manifest (never a layer) and selects the image(s)
// per the platform option: one platform of an index, or all of them.
func (o *options) resolve(ctx context.Context, ref name.Reference, ropts []remote.Option, what string) (*source, error) {
	desc, err := remote.Get(ref, ropts...)
	if err != nil {
		return nil, registryErr(err, fmt.Sprintf("fetching %s %s", what, ref))
	}
	src := &source{ref: ref.Context().Digest(desc.Digest.String())}
	if !desc.MediaType.IsIndex() {
		img, err := desc.Image()
		if err != nil {
			return nil, fmt.Errorf("reading %s %s: %w", what, ref, err)
		}
		if err := o.checkConfigSize(img, what, ref); err != nil {
			return nil, err
		}
		if err := o.checkSinglePlatform(img, what, ref); err != nil {
			return nil, err
		}
		src.images = []platformImage{{image: img}}
		return src, nil
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("reading %s index %s: %w", what, ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading %s index %s: %w", what, ref, err)
	}
	src.index = idx
	var have []string
	for _, d := range im.Manifests {
		if d.Platform == nil || d.Platform.OS == "unknown" || !d.MediaType.IsImage() {
			if d.Platform != nil && d.Platform.OS == "unknown" {
				src.attestations++
			}
			continue // attestations and nested indexes are not runnable images
		}
		have = append(have, d.Platform.String())
		if o.platform != nil && !platformMatches(*d.Platform, *o.platform) {
			continue
		}
		if d.Size > o.maxManifest {
			return nil, registryErr(&TooLargeError{What: fmt.Sprintf("the %s manifest %s", d.Platform, d.Digest), Size: d.Size, Limit: o.maxManifest},
				fmt.Sprintf("reading %s %s", what, ref))
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, registryErr(err, fmt.Sprintf("reading %s %s for %s", what, ref, d.Platform))
		}
		if err := o.checkConfigSize(img, what, ref); err != nil {
			return nil, err
		}
		p := *d.Platform
		src.images = append(src.images, platformImage{platform: &p, image: img})
		if o.platform != nil {
			break
		}
	}
	if len(src.images) == 0 {
		return nil, withRemedy(invalidf("%s %s has no %s image; it has %s",
			what, ref, o.platform, strings.Join(have, ", ")), RemedyPlatform)
	}
	if o.platform != nil {
		src.index = nil // one platform chosen: the result is a single image
	}
	return src, nil
}

// checkSinglePlatform refuses a single-platform image whose config names
// another platform than the one chosen with WithExactPlatform: taking it
// anyway would publish an image for a platform nobody asked for.
func (o *options) checkSinglePlatform(img v1.Image, what string, ref name.Reference) error {
	if !o.exactPlatform || o.platform == nil {
		return nil
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return registryErr(err, fmt.Sprintf("reading the config of %s %s", what, ref))
	}
	have := v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}
	if have.OS == "" && have.Architecture == "" {
		return nil // the config does not say: nothing to compare
	}
	if !platformMatches(have, *o.platform) {
		return invalidf("%s %s is a single-platform %s image; it has no %s image (choose %s, or a base that has %s)",
			what, ref, have.String(), o.platform, have.String(), o.platform)
	}
	return nil
}

// checkConfigSize refuses an image whose manifest declares a config larger
// than the cap, before the config is fetched: go-containerregistry reads a
// config whole, bounded only by the size its descriptor declares.
func (o *options) checkConfigSize(img v1.Image, what string, ref name.Reference) error {
	mf, err := img.Manifest()
	if err != nil {
		return registryErr(err, fmt.Sprintf("reading %s %s", what, ref))
	}
	if mf.Config.Size > o.maxManifest {
		return registryErr(&TooLargeError{What: "its config " + mf.Config.Digest.String(), Size: mf.Config.Size, Limit: o.maxManifest},
			fmt.Sprintf("reading %s %s", what, ref))
	}
	return nil
}

// platformMatches is OS/architecture equality, with the variant compared
// only when the wanted platform names one.
func platformMatches(have, want v1.Platform) bool {
	return have.OS == want.OS && have.Architecture == want.Architecture &&
		(want.Variant == "" || have.Variant == want.Variant)
}

// isDocker reports whether a manifest media type is Docker's schema2 family.
func isDocker(mt types.MediaType) bool {
	return mt == types.DockerManifestSchema2 || mt == types.DockerManifestList
}

// docker reports whether the source is in Docker's manifest family.
func (s *source) docker() bool {
	if s.index != nil {
		mt, err := s.index.MediaType()
		return err == nil && isDocker(mt)
	}
	mt, err := s.images[0].image.MediaType()
	return err == nil && isDocker(mt)
}

// blobSizes maps the layer digests of the selected images to their sizes.
func (s *source) blobSizes() map[string]int64 {
	sizes := map[string]int64{}
	for _, pi := range s.images {
		if mf, err := pi.image.Manifest(); err == nil {
			for _, l := range mf.Layers {
				sizes[l.Digest.String()] = l.Size
			}
		}
	}
	return sizes
}

// Resolve returns the digest reference (host/repo@sha256:…) that ref names
// now, reading only the manifest's headers.
func Resolve(ctx context.Context, ref string, opts ...Option) (name.Digest, error) {
	o := makeOptions(opts)
	r, err := o.parseRef(ref, "image")
	if err != nil {
		return name.Digest{}, err
	}
	desc, err := remote.Head(r, o.remoteOptions(ctx, nil)...)
	if err != nil {
		return name.Digest{}, registryErr(err, "resolving "+ref)
	}
	return r.Context().Digest(desc.Digest.String()), nil
}
