package jobs

import (
	"context"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/storage"
)

// LayerCache adapts the shared-layer cache (storage.LayerCache) to what
// imageops.Recompress uses (imageops.WithLayerCache); storage and imageops
// do not know each other.
func LayerCache(c ConversionCache) imageops.LayerCache { return layerCache{c} }

type layerCache struct{ c ConversionCache }

func key(k imageops.ConversionKey) storage.LayerKey {
	return storage.LayerKey{Registry: k.Registry, Source: k.Source, Level: k.Level}
}

func (l layerCache) Lookup(ctx context.Context, k imageops.ConversionKey) (imageops.Conversion, bool, error) {
	v, ok, err := l.c.Lookup(ctx, key(k))
	return imageops.Conversion{Digest: v.Digest, Size: v.Size, DiffID: v.DiffID, Repository: v.Repository}, ok, err
}

func (l layerCache) Lease(ctx context.Context, k imageops.ConversionKey) (func(), error) {
	return l.c.Lease(ctx, key(k))
}

func (l layerCache) Store(ctx context.Context, k imageops.ConversionKey, v imageops.Conversion) error {
	return l.c.Store(ctx, key(k), storage.LayerConversion{Digest: v.Digest, Size: v.Size, DiffID: v.DiffID, Repository: v.Repository})
}
