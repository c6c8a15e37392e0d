package imageops

import (
	"context"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ConversionKey names one layer conversion: a source layer, by digest, on
// one registry, recompressed to zstd at one level. Blobs can only be mounted
// within a registry, so the registry is part of the key.
type ConversionKey struct {
	Registry string // registry host, as in the destination reference
	Source   string // source layer digest, sha256:…
	Level    int    // zstd level
}

// Conversion is a finished conversion: the zstd blob and where it lives.
type Conversion struct {
	Digest     string `json:"digest"`     // the zstd blob, sha256:…
	Size       int64  `json:"size"`       // its size in bytes
	DiffID     string `json:"diff_id"`    // the uncompressed content's digest
	Repository string `json:"repository"` // host/repo holding the blob, to mount from
}

// LayerCache remembers layer conversions so that images sharing base layers
// convert each layer once (WithLayerCache; storage.LayerCache keeps it in
// Redis). Lease keeps two tasks from converting the same layer at once.
type LayerCache interface {
	// Lookup returns the conversion recorded for key, if any.
	Lookup(ctx context.Context, key ConversionKey) (Conversion, bool, error)
	// Lease claims the conversion of key for the caller. It returns a
	// non-nil release when claimed (the claim lasts until release, or
	// expires if the holder dies), and nil when another holds it.
	Lease(ctx context.Context, key ConversionKey) (release func(), err error)
	// Store records a finished conversion.
	Store(ctx context.Context, key ConversionKey, c Conversion) error
}

// WithLayerCache makes Recompress reuse conversions recorded in c and record
// its own: a layer already converted on the destination registry is mounted
// from where it was pushed instead of being recompressed.
func WithLayerCache(c LayerCache) Option { return func(o *options) { o.cache = c } }

// leaseWait is how often a task waiting for another's conversion looks again.
var leaseWait = 250 * time.Millisecond

// fromCache returns the cached zstd layer for c, converting it with convert
// when nobody has: the first task to lease a layer converts it, others wait
// for its result (or take over if its lease expires). reused tells whether
// the layer came from the cache.
func (c *zstdConv) fromCache(ctx context.Context, cache LayerCache, key ConversionKey, ropts []remote.Option, convert func() error) (reused bool, err error) {
	for {
		l, ok, err := c.lookup(ctx, cache, key, ropts)
		if err != nil {
			return false, err
		}
		if ok {
			c.reused = l
			return true, nil
		}
		release, err := cache.Lease(ctx, key)
		if err != nil {
			return false, fmt.Errorf("leasing the conversion of layer %s: %w", key.Source, err)
		}
		if release != nil {
			defer release()
			// Someone may have finished between the lookup and the lease.
			if l, ok, err := c.lookup(ctx, cache, key, ropts); err != nil || ok {
				c.reused = l
				return ok, err
			}
			if err := convert(); err != nil {
				return false, err
			}
			// The cache only saves work: failing to record the conversion
			// must not fail an image whose layer is uploaded.
			_ = c.store(ctx, cache, key)
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(leaseWait):
		}
	}
}

// lookup returns the cached layer for key when the cache has one that fits
// c and its blob is still in the registry (a garbage-collected blob, or an
// entry that does not match the source's diffID, counts as a miss).
func (c *zstdConv) lookup(ctx context.Context, cache LayerCache, key ConversionKey, ropts []remote.Option) (v1.Layer, bool, error) {
	conv, ok, err := cache.Lookup(ctx, key)
	if err != nil {
		return nil, false, fmt.Errorf("looking up the conversion of layer %s: %w", key.Source, err)
	}
	if !ok || conv.DiffID != c.diffID.String() {
		return nil, false, nil
	}
	repo, err := name.NewRepository(conv.Repository, name.WeakValidation)
	if err != nil || repo.RegistryStr() != key.Registry {
		return nil, false, nil
	}
	digest, err := v1.NewHash(conv.Digest)
	if err != nil {
		return nil, false, nil
	}
	ref := repo.Digest(digest.String())
	from, err := remote.Layer(ref, ropts...)
	if err != nil {
		return nil, false, fmt.Errorf("reading the cached conversion %s: %w", ref, err)
	}
	if size, err := from.Size(); err != nil || size != conv.Size {
		return nil, false, nil // gone from the registry (or not what was recorded)
	}
	known := &knownLayer{Layer: from, diffID: c.diffID, size: conv.Size, mediaType: types.OCILayerZStd}
	return &remote.MountableLayer{Layer: known, Reference: ref}, true, nil
}

// store records c's finished conversion, pushed to repo.
func (c *zstdConv) store(ctx context.Context, cache LayerCache, key ConversionKey) error {
	d, _ := c.out.Digest()
	n, _ := c.out.Size()
	conv := Conversion{Digest: d.String(), Size: n, DiffID: c.diffID.String(), Repository: c.repo}
	if err := cache.Store(ctx, key, conv); err != nil {
		return fmt.Errorf("recording the conversion of layer %s: %w", key.Source, err)
	}
	return nil
}

// knownLayer is a registry blob whose diffID and media type are known, so
// nothing downloads it to find them.
type knownLayer struct {
	v1.Layer
	diffID    v1.Hash
	size      int64
	mediaType types.MediaType
}

func (l *knownLayer) Size() (int64, error)                { return l.size, nil }
func (l *knownLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *knownLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }
