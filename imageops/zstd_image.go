package imageops

import (
	"encoding/json"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// build assembles the platform's OCI image: the source manifest with the
// recompressed layers swapped in and every type made OCI, and the source
// config unchanged. An image that needs no change keeps its manifest bytes.
func (p *zstdPlan) build() (v1.Image, error) {
	core := &zstdCore{manifest: p.raw, mediaType: p.manifest.MediaType, config: p.config, layers: map[v1.Hash]v1.Layer{}}
	for _, c := range p.conv {
		if out := c.output(); out != nil {
			d, _ := out.Digest()
			core.layers[d] = out
		} else {
			core.layers[c.desc.Digest] = c.kept
		}
	}
	if p.converted {
		raw, err := json.Marshal(p.ociManifest())
		if err != nil {
			return nil, fmt.Errorf("writing the manifest: %w", err)
		}
		core.manifest, core.mediaType = raw, types.OCIManifestSchema1
	}
	img, err := partial.CompressedToImage(core)
	if err != nil {
		return nil, err
	}
	return &zstdImage{Image: img, core: core, source: p.source}, nil
}

// ociManifest is the source manifest made OCI, each recompressed layer's
// descriptor replaced by its zstd layer's, marked with the digest it
// replaces.
func (p *zstdPlan) ociManifest() *v1.Manifest {
	mf := p.manifest.DeepCopy()
	mf.MediaType = types.OCIManifestSchema1
	mf.Config.MediaType = ociEquivalent(mf.Config.MediaType)
	for i, c := range p.conv {
		l := &mf.Layers[i]
		out := c.output()
		if out == nil {
			l.MediaType = ociLayerType(l.MediaType)
			continue
		}
		ann := make(map[string]string, len(l.Annotations)+2)
		for k, v := range l.Annotations {
			ann[k] = v
		}
		ann[AnnotationSource] = l.Digest.String()
		if p.labelled[l.Digest.String()] {
			// The config's weights label names the old digest: mark the
			// layer where readers look next.
			ann[AnnotationWeights] = "true"
		}
		digest, _ := out.Digest()
		size, _ := out.Size()
		*l = v1.Descriptor{MediaType: types.OCILayerZStd, Digest: digest, Size: size, Annotations: ann}
	}
	return mf
}

// zstdCore is the image as partial.CompressedImageCore: its manifest and
// config bytes served as they are (mutate would re-serialize the config,
// changing its digest), and its layers by digest: the source's (mountable)
// and the uploaded zstd layers. partial.CompressedToImage derives the rest
// of v1.Image (digest, size, parsed manifest and config, diffID lookup).
type zstdCore struct {
	manifest, config []byte
	mediaType        types.MediaType
	layers           map[v1.Hash]v1.Layer
}

func (c *zstdCore) RawManifest() ([]byte, error)                             { return c.manifest, nil }
func (c *zstdCore) RawConfigFile() ([]byte, error)                           { return c.config, nil }
func (c *zstdCore) MediaType() (types.MediaType, error)                      { return c.mediaType, nil }
func (c *zstdCore) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) { return c.layer(h) }

func (c *zstdCore) layer(h v1.Hash) (v1.Layer, error) {
	if l, ok := c.layers[h]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("layer %s is not in the image", h)
}

// zstdImage is partial.CompressedToImage's image, handing out the layers
// themselves where partial would wrap them (partial.CompressedToLayer):
// remote.Write mounts a kept layer only as a *remote.MountableLayer, and
// uploadLayers looks for one. Its config layer is the source's, so the
// config blob is mounted too.
type zstdImage struct {
	v1.Image
	core   *zstdCore
	source v1.Image
}

func (i *zstdImage) LayerByDigest(h v1.Hash) (v1.Layer, error) { return i.core.layer(h) }

func (i *zstdImage) Layers() ([]v1.Layer, error) {
	digests, err := partial.FSLayers(i.Image)
	if err != nil {
		return nil, err
	}
	ls := make([]v1.Layer, 0, len(digests))
	for _, d := range digests {
		l, err := i.core.layer(d)
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// ConfigLayer is the source's config blob, mountable from its repository
// (partial.ConfigLayer looks for this method).
func (i *zstdImage) ConfigLayer() (v1.Layer, error) { return partial.ConfigLayer(i.source) }
