package jobs

import (
	"context"
	"encoding/json"
	"io"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/storage"
)

// UploadSessions adapts the session store (storage.UploadSessions) to
// what imageops resumes uploads from (imageops.WithUploadSessions).
func UploadSessions(s SessionStore) imageops.UploadSessions { return uploadSessions{s} }

type uploadSessions struct{ s SessionStore }

func (u uploadSessions) LoadSession(ctx context.Context, key string) (*imageops.UploadSession, error) {
	b, err := u.s.Load(ctx, key)
	if err != nil || b == nil {
		return nil, err
	}
	var s imageops.UploadSession
	if json.Unmarshal(b, &s) != nil {
		return nil, nil // unreadable: the upload starts again
	}
	return &s, nil
}

func (u uploadSessions) SaveSession(ctx context.Context, key string, s imageops.UploadSession) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return u.s.Save(ctx, key, b)
}

func (u uploadSessions) DeleteSession(ctx context.Context, key string) error {
	return u.s.Delete(ctx, key)
}

// LayerDigests adapts the layer-digest cache (storage.LayerDigests)
// to what Affix reuses weights layers from (imageops.WithLayerDigests).
func LayerDigests(c DigestStore) imageops.LayerDigests { return layerDigests{c} }

type layerDigests struct{ c DigestStore }

func (l layerDigests) LookupLayer(ctx context.Context, key string) (imageops.CachedLayer, bool, error) {
	b, ok, err := l.c.Lookup(ctx, key)
	if err != nil || !ok {
		return imageops.CachedLayer{}, false, err
	}
	var c imageops.CachedLayer
	if json.Unmarshal(b, &c) != nil {
		return imageops.CachedLayer{}, false, nil // unreadable: produce the layer
	}
	return c, true, nil
}

func (l layerDigests) StoreLayer(ctx context.Context, key string, c imageops.CachedLayer) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return l.c.Store(ctx, key, b)
}

// weightsTree adapts a storage.Tree (an S3 prefix, a local directory) to
// imageops.WeightsTree.
type weightsTree struct{ t *storage.Tree }

func (w weightsTree) Entries(context.Context) ([]imageops.TreeEntry, error) {
	src := w.t.Entries()
	out := make([]imageops.TreeEntry, len(src))
	for i, e := range src {
		out[i] = imageops.TreeEntry{Header: e.Header, ID: e.ID, Ref: e}
	}
	return out, nil
}

func (w weightsTree) Open(ctx context.Context, e imageops.TreeEntry) (io.ReadCloser, error) {
	return w.t.Open(ctx, e.Ref.(storage.TreeEntry))
}
