package imageops

import (
	"context"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
)

// readLayers hands the layers of img named by digests to read, one after
// another in that order, while downloading up to jobs of them at once.
//
// read always gets the layers in order, so what extract writes does not
// depend on jobs. The first layer is streamed from the registry as read
// takes it, as with one job; the later ones are downloaded ahead into files
// of a temp dir made under tempDir ("" for os.TempDir()), each blob's
// digest and size checked as its download ends (by go-containerregistry's
// verifying reader), and read hands over each file once read is done with
// the layers before it; the file is removed when read returns. A layer
// being streamed, downloading, or downloaded but not yet read holds one of
// jobs slots, so at most jobs blobs are on the wire and at most jobs
// compressed layers sit on disk; memory does not grow with layer size.
// The first error (a download, a digest mismatch, or read's) stops the
// others and is returned; the temp dir is removed in any case.
func readLayers(ctx context.Context, img v1.Image, digests []v1.Hash, jobs int, tempDir string, tick func(bool),
	read func(ctx context.Context, digest v1.Hash, l v1.Layer) error) error {
	if jobs <= 1 || len(digests) < 2 {
		for _, d := range digests {
			l, err := img.LayerByDigest(d)
			if err != nil {
				return fmt.Errorf("reading layer %s: %w", d, err)
			}
			if err := read(ctx, d, l); err != nil {
				return err
			}
		}
		return nil
	}

	tmp, err := os.MkdirTemp(tempDir, ".r8im-layers-*")
	if err != nil {
		return fmt.Errorf("creating a temp dir for the layers downloaded ahead: %w", err)
	}
	defer os.RemoveAll(tmp)

	type ahead struct {
		done  chan struct{} // closed when the download ended
		layer v1.Layer      // the downloaded file, when err is nil
		path  string
		err   error
	}
	pending := make([]*ahead, len(digests))
	for i := 1; i < len(digests); i++ {
		pending[i] = &ahead{done: make(chan struct{})}
	}
	slots := semaphore.NewWeighted(int64(jobs))
	slots.TryAcquire(1) // the first layer's; always free (jobs > 1)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { // start downloads in layer order as slots free up
		for i := 1; i < len(digests); i++ {
			if slots.Acquire(gctx, 1) != nil {
				return nil // stopped: the error that stopped it is the group's
			}
			a, d := pending[i], digests[i]
			g.Go(func() error {
				defer close(a.done)
				a.layer, a.path, a.err = downloadLayer(gctx, img, d, tmp, tick)
				return a.err
			})
		}
		return nil
	})
	g.Go(func() error { // read the layers in order
		for i, d := range digests {
			var l v1.Layer
			if i == 0 {
				var err error
				if l, err = img.LayerByDigest(d); err != nil {
					return fmt.Errorf("reading layer %s: %w", d, err)
				}
			} else {
				a := pending[i]
				select {
				case <-a.done:
				case <-gctx.Done():
					return gctx.Err()
				}
				if a.err != nil {
					return a.err
				}
				l = a.layer
			}
			err := read(gctx, d, l)
			if i > 0 {
				_ = os.Remove(pending[i].path)
			}
			slots.Release(1)
			if err != nil {
				return err
			}
		}
		return nil
	})
	return g.Wait()
}

// downloadLayer copies the blob of layer digest into a new file under dir
// and returns it as a layer that decompresses as the registry's would.
// The copy reads the blob to its end, so its digest and size are checked.
func downloadLayer(ctx context.Context, img v1.Image, digest v1.Hash, dir string, tick func(bool)) (v1.Layer, string, error) {
	l, err := img.LayerByDigest(digest)
	if err != nil {
		return nil, "", fmt.Errorf("reading layer %s: %w", digest, err)
	}
	mt, err := l.MediaType()
	if err != nil {
		return nil, "", registryErr(err, "reading layer "+digest.String())
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, "", registryErr(err, "downloading layer "+digest.String())
	}
	defer rc.Close()
	f, err := os.CreateTemp(dir, "layer-*")
	if err != nil {
		return nil, "", fmt.Errorf("downloading layer %s: %w", digest, err)
	}
	n, err := io.Copy(f, &ctxReader{ctx: ctx, r: rc, tick: tick})
	if cerr := f.Close(); err == nil && cerr != nil {
		return nil, "", fmt.Errorf("downloading layer %s into %s: %w", digest, f.Name(), cerr)
	}
	if err != nil {
		return nil, "", registryErr(err, "downloading layer "+digest.String())
	}
	fl, err := partial.CompressedToLayer(&fileLayer{path: f.Name(), digest: digest, size: n, mediaType: mt})
	if err != nil {
		return nil, "", err
	}
	return fl, f.Name(), nil
}

// fileLayer is a blob already downloaded and checked, read back from disk.
type fileLayer struct {
	path      string
	digest    v1.Hash
	size      int64
	mediaType types.MediaType
}

func (f *fileLayer) Digest() (v1.Hash, error)            { return f.digest, nil }
func (f *fileLayer) Size() (int64, error)                { return f.size, nil }
func (f *fileLayer) MediaType() (types.MediaType, error) { return f.mediaType, nil }
func (f *fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(f.path) }
