package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// LayerKey names one layer conversion: a source layer digest on one
// registry, recompressed at one zstd level.
type LayerKey struct {
	Registry string
	Source   string
	Level    int
}

// LayerConversion is a recorded conversion: the zstd blob, its size and
// uncompressed digest, and the repository it was pushed to.
type LayerConversion struct {
	Digest     string
	Size       int64
	DiffID     string
	Repository string
}

// Defaults of a LayerCache.
const (
	DefaultLayerCacheTTL = 30 * 24 * time.Hour
	DefaultLeaseTTL      = 30 * time.Second
)

// LayerCache is the backfill's shared-layer cache in Redis: one hash per
// conversion (<prefix>zstd:<registry>:<level>:<digest>), kept for the cache
// TTL after its last use, and a lease key per layer being converted. A lease
// is renewed while its holder works and expires within the lease TTL if the
// holder dies, so another task takes over.
type LayerCache struct {
	rdb      redis.UniversalClient
	prefix   string
	ttl      time.Duration
	leaseTTL time.Duration
}

// LayerCacheOption configures a LayerCache.
type LayerCacheOption func(*LayerCache)

// WithCacheTTL sets how long an unused conversion is remembered (default
// DefaultLayerCacheTTL).
func WithCacheTTL(d time.Duration) LayerCacheOption {
	return func(c *LayerCache) {
		if d > 0 {
			c.ttl = d
		}
	}
}

// WithLeaseTTL sets how long a dead holder's lease blocks others (default
// DefaultLeaseTTL).
func WithLeaseTTL(d time.Duration) LayerCacheOption {
	return func(c *LayerCache) {
		if d > 0 {
			c.leaseTTL = d
		}
	}
}

// WithCachePrefix sets the key prefix (default "r8im:").
func WithCachePrefix(p string) LayerCacheOption { return func(c *LayerCache) { c.prefix = p } }

// NewLayerCache returns the layer cache kept in rdb.
func NewLayerCache(rdb redis.UniversalClient, opts ...LayerCacheOption) *LayerCache {
	c := &LayerCache{rdb: rdb, prefix: defaultKeyPrefix, ttl: DefaultLayerCacheTTL, leaseTTL: DefaultLeaseTTL}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Key is the key of the hash holding k's conversion.
func (c *LayerCache) Key(k LayerKey) string {
	return c.prefix + "zstd:" + k.Registry + ":" + strconv.Itoa(k.Level) + ":" + k.Source
}

// Lookup returns k's conversion, if recorded, and keeps it for another TTL.
func (c *LayerCache) Lookup(ctx context.Context, k LayerKey) (LayerConversion, bool, error) {
	key := c.Key(k)
	h, err := c.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return LayerConversion{}, false, fmt.Errorf("reading %s: %w", key, err)
	}
	size, err := strconv.ParseInt(h["size"], 10, 64)
	if len(h) == 0 || err != nil || h["digest"] == "" {
		return LayerConversion{}, false, nil // absent, or not ours: a miss
	}
	c.rdb.PExpire(ctx, key, c.ttl) // best effort: a miss later only costs a conversion
	return LayerConversion{Digest: h["digest"], Size: size, DiffID: h["diff_id"], Repository: h["repository"]}, true, nil
}

// Store records k's conversion.
func (c *LayerCache) Store(ctx context.Context, k LayerKey, v LayerConversion) error {
	key := c.Key(k)
	_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, "digest", v.Digest, "size", v.Size, "diff_id", v.DiffID, "repository", v.Repository,
			"stored_at", time.Now().UTC().Format(time.RFC3339))
		p.PExpire(ctx, key, c.ttl)
		return nil
	})
	if err != nil {
		return fmt.Errorf("writing %s: %w", key, err)
	}
	return nil
}

// renewLease and releaseLease touch a lease only while it holds the
// caller's token.
var (
	renewLease = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)
	releaseLease = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)
)

// Lease claims the conversion of k. It returns nil when another holds it.
// Otherwise the claim is renewed in the background until release is
// called; release is safe to call more than once.
func (c *LayerCache) Lease(ctx context.Context, k LayerKey) (release func(), err error) {
	key := c.Key(k) + ":lease"
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	token := hex.EncodeToString(tok)
	ok, err := c.rdb.SetNX(ctx, key, token, c.leaseTTL).Result()
	if err != nil {
		return nil, fmt.Errorf("leasing %s: %w", key, err)
	}
	if !ok {
		return nil, nil
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(c.leaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				rctx, cancel := context.WithTimeout(context.Background(), c.leaseTTL/3)
				_ = renewLease.Run(rctx, c.rdb, []string{key}, token, c.leaseTTL.Milliseconds()).Err()
				cancel()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			<-done
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			// On error the lease simply expires within the lease TTL.
			_ = releaseLease.Run(rctx, c.rdb, []string{key}, token).Err()
		})
	}, nil
}

// LayerDigests is the layer-digest cache of workers in Redis: the digests
// of the weights layers produced from S3 objects and local files, one JSON
// value per layer (<prefix>weights-layer:<key>), kept for the cache TTL
// after its last use. Its keys name the layer's content (the objects'
// bucket, key, ETag and size, and the layout), so publishing the same
// weights again, from any worker, reads and sends nothing.
type LayerDigests struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
}

// NewLayerDigests returns the layer-digest cache in rdb, entries kept for
// ttl after their last use (DefaultLayerCacheTTL when 0).
func NewLayerDigests(rdb redis.UniversalClient, ttl time.Duration) *LayerDigests {
	if ttl <= 0 {
		ttl = DefaultLayerCacheTTL
	}
	return &LayerDigests{rdb: rdb, prefix: defaultKeyPrefix, ttl: ttl}
}

// Lookup returns the value recorded under key, if any, and keeps it for
// another TTL.
func (c *LayerDigests) Lookup(ctx context.Context, key string) ([]byte, bool, error) {
	b, err := c.rdb.GetEx(ctx, c.prefix+key, c.ttl).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading the layer-digest cache: %w", err)
	}
	return b, true, nil
}

// Store records value under key.
func (c *LayerDigests) Store(ctx context.Context, key string, value []byte) error {
	if err := c.rdb.Set(ctx, c.prefix+key, value, c.ttl).Err(); err != nil {
		return fmt.Errorf("writing the layer-digest cache: %w", err)
	}
	return nil
}
