package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/r8im/r8im/internal/testenv"
)

// zstdSource builds the image the zstd cases convert: exactly 3 gzip
// layers of fp16-like weights, ZstdSize in all, each added by r8im affix
// from a tar streamed on stdin onto an image without layers.
func (b *bench) zstdSource(ctx context.Context) (string, error) {
	ref, err := pushBase(ctx, b.svc.regHost+"/base/empty:v1", 0)
	if err != nil {
		return "", err
	}
	for n := 1; n <= 3; n++ {
		pr, pw := io.Pipe()
		go func(n int) {
			_, err := testenv.WriteWeights(pw, testenv.WeightsSpec{Files: 2, FileSize: b.cfg.ZstdSize / 6, Seed: uint64(200 + n)})
			pw.CloseWithError(err)
		}(n)
		r, err := b.exec(ctx, nil, pr, b.bins.r8im, "affix", "-q", "--json", "--base", ref, "--dest", fmt.Sprintf("%s/zsrc/three:layer%d", b.svc.regHost, n),
			"--tar", "-", "--target", fmt.Sprintf("/src/weights/part%d", n), "--compression", "gzip", "--created", created)
		pr.Close()
		if err != nil {
			return "", err
		}
		var out affixOut
		if err := json.Unmarshal(r.stdout, &out); err != nil {
			return "", fmt.Errorf("reading r8im affix --json: %w", err)
		}
		ref = out.Ref
	}
	return ref, nil
}

// zstd measures r8im zstd against regctl on the same 3-layer image,
// interleaved run by run, then the shared-layer cache case.
func (b *bench) zstd(ctx context.Context) error {
	b.logf("building the 3-layer %s image for zstd", sizeName(b.cfg.ZstdSize))
	src, err := b.zstdSource(ctx)
	if err != nil {
		return err
	}
	host := b.svc.regHost
	var ours, regctl []float64
	var saved, theirs int64
	for i := 1; i <= b.cfg.Runs; i++ {
		if b.cfg.has(CaseZstd) || b.cfg.has(CaseRegctl) {
			b.logf("zstd run %d/%d: r8im zstd", i, b.cfg.Runs)
			r, err := b.exec(ctx, nil, nil, b.bins.r8im, "zstd", src, "-q", "--json", "--dest", fmt.Sprintf("%s/zstd/ours-%d:v1", host, i))
			if err != nil {
				return err
			}
			var out struct {
				Layers []struct {
					OldSize int64 `json:"old_size"`
					NewSize int64 `json:"new_size"`
				} `json:"layers"`
			}
			if err := json.Unmarshal(r.stdout, &out); err != nil {
				return fmt.Errorf("reading r8im zstd --json: %w", err)
			}
			saved = 0
			for _, l := range out.Layers {
				saved += l.NewSize
			}
			ours = append(ours, r.seconds)
		}
		if b.cfg.has(CaseRegctl) {
			b.logf("zstd run %d/%d: regctl image mod --layer-compress zstd", i, b.cfg.Runs)
			dest := fmt.Sprintf("%s/zstd/regctl-%d:v1", host, i)
			r, err := b.exec(ctx, nil, nil, b.bins.regctl, "--host", "reg="+host+",tls=disabled", "image", "mod", src,
				"--to-oci", "--layer-compress", "zstd", "--create", dest)
			if err != nil {
				return err
			}
			regctl = append(regctl, r.seconds)
			if theirs, err = layerBytes(ctx, dest); err != nil {
				return err
			}
		}
	}
	sn := sizeName(b.cfg.ZstdSize)
	if len(ours) > 0 {
		b.add(Result{Case: "zstd-ours-" + sn, Title: "r8im zstd of a 3-layer " + sn + " gzip image", Size: b.cfg.ZstdSize, Unit: "s", Runs: ours, Bytes: saved,
			Note: "bytes: zstd layers"})
	}
	if len(regctl) > 0 {
		m, o := median(regctl), median(ours)
		b.add(Result{Case: "zstd-regctl-" + sn, Title: "regctl image mod --layer-compress zstd --to-oci, same image", Size: b.cfg.ZstdSize, Unit: "s", Runs: regctl,
			Ratio: m / o, RatioOf: "÷ r8im zstd", Target: "≥ 2.0", Holds: holds(m/o >= 2), Bytes: theirs, Note: "bytes: its layers"})
	}
	if b.cfg.has(CaseCache) {
		return b.zstdCache(ctx, src)
	}
	return nil
}

// sibling pushes a second image with src's layers and another config (a
// label), as a rebuild of the same model would be: it shares every layer.
func sibling(ctx context.Context, src, dest string) (string, error) {
	ref, err := name.ParseReference(src)
	if err != nil {
		return "", err
	}
	img, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		return "", err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cfg = cfg.DeepCopy()
	if cfg.Config.Labels == nil {
		cfg.Config.Labels = map[string]string{}
	}
	cfg.Config.Labels["bench.sibling"] = dest
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return "", err
	}
	d, err := name.ParseReference(dest)
	if err != nil {
		return "", err
	}
	if err := remote.Write(d, img, remote.WithContext(ctx)); err != nil {
		return "", err
	}
	dg, err := img.Digest()
	if err != nil {
		return "", err
	}
	return d.Context().Digest(dg.String()).String(), nil
}

// layerBytes is the total size of the layers of the image at ref.
func layerBytes(ctx context.Context, ref string) (int64, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return 0, err
	}
	img, err := remote.Image(r, remote.WithContext(ctx))
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", ref, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	var n int64
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, nil
}
