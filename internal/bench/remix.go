package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/r8im/r8im/internal/testenv"
)

// remix combines two images affixed earlier (the gzip and the zstd image of
// the smallest size: same base, different weights layers) through a
// counting proxy: the layer bytes that cross it are what remix moved.
func (b *bench) remix(ctx context.Context) error {
	size := slices.Min(b.cfg.Sizes)
	imgs := b.affixed[size]
	if imgs["gzip"] == "" || imgs["zstd"] == "" {
		return fmt.Errorf("%w: remix needs the affix case's images", errNoImage)
	}
	p, err := testenv.NewProxy(b.svc.regHost)
	if err != nil {
		return err
	}
	defer p.Close()
	a, w := withHost(imgs["gzip"], p.Host), withHost(imgs["zstd"], p.Host)
	configs, err := configDigests(ctx, imgs["gzip"], imgs["zstd"])
	if err != nil {
		return err
	}
	var secs []float64
	var moved, all int64
	for i := 1; i <= b.cfg.Runs; i++ {
		b.logf("remix run %d/%d", i, b.cfg.Runs)
		p.Reset()
		r, err := b.exec(ctx, nil, nil, b.bins.r8im, "remix", "-q", "--json", "--base", a, "--weights", w,
			"--dest", fmt.Sprintf("%s/models/remix-%d:v1", p.Host, i))
		if err != nil {
			return err
		}
		var out struct {
			Ref string `json:"ref"`
		}
		if err := json.Unmarshal(r.stdout, &out); err != nil {
			return fmt.Errorf("reading r8im remix --json: %w", err)
		}
		result, err := configDigests(ctx, withHost(out.Ref, b.svc.regHost))
		if err != nil {
			return err
		}
		maps.Copy(result, configs)
		var a, l int64
		for d, n := range p.Blobs() {
			a += n
			if !result[d] {
				l += n // not a config: a layer, or an upload never committed
			}
		}
		secs = append(secs, r.seconds)
		moved, all = max(moved, l), max(all, a)
	}
	m := median(secs)
	b.add(Result{Case: "remix-" + sizeName(size), Title: "r8im remix of two images with " + sizeName(size) + " weights", Size: size, Unit: "s", Runs: secs,
		Target: "0 B moved, < 1 s", Holds: holds(moved == 0 && m < 1), Bytes: moved,
		Note: fmt.Sprintf("bytes: layer bytes through a counting proxy (most of any run); all blobs incl. configs %d B", all)})
	return nil
}

// configDigests returns the config blob digests of the images refs.
func configDigests(ctx context.Context, refs ...string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, s := range refs {
		ref, err := name.ParseReference(s)
		if err != nil {
			return nil, err
		}
		img, err := remote.Image(ref, remote.WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", s, err)
		}
		m, err := img.Manifest()
		if err != nil {
			return nil, err
		}
		out[m.Config.Digest.String()] = true
	}
	return out, nil
}
