package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultUploadSessionTTL is how long an upload session is kept after its
// last save: distribution purges abandoned uploads after a week, so a day
// leaves every retry of a task (asynq's backoff tops out in hours) its
// session.
const DefaultUploadSessionTTL = 24 * time.Hour

// UploadSessions keeps the chunked upload sessions of tasks in Redis, next
// to their records (<prefix>upload:<sha256 of the key>), as opaque values
// that expire TTL after their last save. A worker killed mid-upload leaves
// its session here; the task's retry, on any worker, resumes it.
type UploadSessions struct{ v values }

// NewUploadSessions returns the session store in rdb; ttl <= 0 means
// DefaultUploadSessionTTL.
func NewUploadSessions(rdb redis.UniversalClient, ttl time.Duration) *UploadSessions {
	if ttl <= 0 {
		ttl = DefaultUploadSessionTTL
	}
	return &UploadSessions{values{rdb: rdb, kind: "upload", what: "upload session", ttl: ttl}}
}

// Key is the Redis key holding the session saved under key.
func (u *UploadSessions) Key(key string) string { return u.v.key(key) }

// Load returns the value saved under key, or nil.
func (u *UploadSessions) Load(ctx context.Context, key string) ([]byte, error) {
	return u.v.load(ctx, key)
}

// Save stores v under key for the TTL.
func (u *UploadSessions) Save(ctx context.Context, key string, v []byte) error {
	return u.v.save(ctx, key, v)
}

// Delete removes the value saved under key.
func (u *UploadSessions) Delete(ctx context.Context, key string) error {
	return u.v.remove(ctx, key)
}

// values keeps opaque values in Redis, each under <prefix><kind>:<sha256
// of its key>, expiring ttl after its last save (and, with touch, after
// its last read too).
type values struct {
	rdb   redis.UniversalClient
	kind  string // key kind: "upload"
	what  string // for messages: "upload session"
	ttl   time.Duration
	touch bool
}

func (v values) key(key string) string {
	sum := sha256.Sum256([]byte(key))
	return defaultKeyPrefix + v.kind + ":" + hex.EncodeToString(sum[:])
}

// load returns the value saved under key, or nil.
func (v values) load(ctx context.Context, key string) ([]byte, error) {
	var b []byte
	var err error
	if v.touch {
		b, err = v.rdb.GetEx(ctx, v.key(key), v.ttl).Bytes()
	} else {
		b, err = v.rdb.Get(ctx, v.key(key)).Bytes()
	}
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the %s: %w", v.what, err)
	}
	return b, nil
}

func (v values) save(ctx context.Context, key string, b []byte) error {
	if err := v.rdb.Set(ctx, v.key(key), b, v.ttl).Err(); err != nil {
		return fmt.Errorf("saving the %s: %w", v.what, err)
	}
	return nil
}

func (v values) remove(ctx context.Context, key string) error {
	if err := v.rdb.Del(ctx, v.key(key)).Err(); err != nil {
		return fmt.Errorf("deleting the %s: %w", v.what, err)
	}
	return nil
}
