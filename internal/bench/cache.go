package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/storage"
)

// zstdCache measures the backfill's shared-layer cache in-process (there is
// no CLI flag for it): imageops.Recompress with the Redis layer cache, as
// the worker wires it (jobs.LayerCache over storage.LayerCache), first on
// src with a cold cache, then on a second image sharing all its layers. A
// fresh key prefix per run makes each first conversion cold.
func (b *bench) zstdCache(ctx context.Context, src string) error {
	host := b.svc.regHost
	second, err := sibling(ctx, src, host+"/zsrc/sibling:v1")
	if err != nil {
		return fmt.Errorf("pushing the second image: %w", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: b.svc.redisAddr})
	defer rdb.Close()
	var first, warm []float64
	reused := 0
	for i := 1; i <= b.cfg.Runs; i++ {
		b.logf("zstd cache run %d/%d", i, b.cfg.Runs)
		cache := jobs.LayerCache(storage.NewLayerCache(rdb, storage.WithCachePrefix(fmt.Sprintf("bench%d:", i))))
		for j, in := range []string{src, second} {
			start := time.Now()
			res, err := imageops.Recompress(ctx, imageops.ZstdRequest{Source: in, Dest: fmt.Sprintf("%s/zcache/run%d-%d:v1", host, i, j)},
				imageops.WithLayerCache(cache), imageops.WithUserAgent("r8im-bench"))
			if err != nil {
				return err
			}
			s := time.Since(start).Seconds()
			if j == 0 {
				first = append(first, s)
				continue
			}
			warm = append(warm, s)
			reused = 0
			for _, l := range res.Layers {
				if l.Reused {
					reused++
				}
			}
		}
	}
	sn := sizeName(b.cfg.ZstdSize)
	f, w := median(first), median(warm)
	b.add(Result{Case: "zstd-cache-first-" + sn, Title: "zstd with the layer cache, first image (cold), in-process", Size: b.cfg.ZstdSize, Unit: "s", Runs: first})
	b.add(Result{Case: "zstd-cache-second-" + sn, Title: "zstd with the layer cache, second image sharing its layers", Size: b.cfg.ZstdSize, Unit: "s", Runs: warm,
		Ratio: f / w, RatioOf: "first ÷ this", Target: "≥ 10", Holds: holds(f/w >= 10), Note: fmt.Sprintf("%d of 3 layers from the cache", reused)})
	return nil
}
