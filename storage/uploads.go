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
type UploadSessions struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
}

// NewUploadSessions returns the session store in rdb; ttl <= 0 means
// DefaultUploadSessionTTL.
func NewUploadSessions(rdb redis.UniversalClient, ttl time.Duration) *UploadSessions {
	if ttl <= 0 {
		ttl = DefaultUploadSessionTTL
	}
	return &UploadSessions{rdb: rdb, prefix: defaultKeyPrefix, ttl: ttl}
}

// Key is the Redis key holding the session saved under key.
func (u *UploadSessions) Key(key string) string {
	sum := sha256.Sum256([]byte(key))
	return u.prefix + "upload:" + hex.EncodeToString(sum[:])
}

// Load returns the value saved under key, or nil.
func (u *UploadSessions) Load(ctx context.Context, key string) ([]byte, error) {
	v, err := u.rdb.Get(ctx, u.Key(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading upload session: %w", err)
	}
	return v, nil
}

// Save stores v under key for the TTL.
func (u *UploadSessions) Save(ctx context.Context, key string, v []byte) error {
	if err := u.rdb.Set(ctx, u.Key(key), v, u.ttl).Err(); err != nil {
		return fmt.Errorf("saving upload session: %w", err)
	}
	return nil
}

// Delete removes the value saved under key.
func (u *UploadSessions) Delete(ctx context.Context, key string) error {
	if err := u.rdb.Del(ctx, u.Key(key)).Err(); err != nil {
		return fmt.Errorf("deleting upload session: %w", err)
	}
	return nil
}
