package storage

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Semaphore bounds how many holders work on one scope (a registry) at once,
// across every worker: a sorted set per scope (<prefix>sem:<scope>) of
// holder ids scored by their deadline, so a holder that dies without
// releasing frees its slot when its deadline passes. (asynq's x/rate
// semaphore does the same, but that module still targets go-redis v8.)
type Semaphore struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewSemaphore returns the semaphores kept in rdb.
func NewSemaphore(rdb redis.UniversalClient) *Semaphore {
	return &Semaphore{rdb: rdb, prefix: defaultKeyPrefix + "sem:"}
}

// acquireScript: KEYS 1 the set; ARGV 1 holder, 2 max, 3 deadline (ms),
// 4 now (ms). Returns 1 if the holder holds a slot.
var acquireScript = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  local ttl = tonumber(ARGV[3]) - tonumber(ARGV[4])
  if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
  return 1
end
return 0
`)

// TryAcquire gives holder one of max slots of scope until deadline, if one
// is free (a holder that has one keeps it).
func (s *Semaphore) TryAcquire(ctx context.Context, scope, holder string, max int, deadline time.Time) (bool, error) {
	now := time.Now()
	if !deadline.After(now) {
		deadline = now.Add(time.Minute)
	}
	n, err := acquireScript.Run(ctx, s.rdb, []string{s.prefix + scope}, holder, max, deadline.UnixMilli(), now.UnixMilli()).Int()
	if err != nil {
		return false, fmt.Errorf("acquiring a %s slot: %w", scope, err)
	}
	return n == 1, nil
}

// Release frees holder's slot of scope.
func (s *Semaphore) Release(ctx context.Context, scope, holder string) error {
	if err := s.rdb.ZRem(ctx, s.prefix+scope, holder).Err(); err != nil {
		return fmt.Errorf("releasing a %s slot: %w", scope, err)
	}
	return nil
}

// Holders counts the live holders of scope.
func (s *Semaphore) Holders(ctx context.Context, scope string) (int64, error) {
	n, err := s.rdb.ZCount(ctx, s.prefix+scope, fmt.Sprint(time.Now().UnixMilli()), "+inf").Result()
	if err != nil {
		return 0, fmt.Errorf("counting %s holders: %w", scope, err)
	}
	return n, nil
}
