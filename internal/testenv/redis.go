package testenv

import (
	"context"
	"os"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"
)

// RedisServer is a running Redis.
type RedisServer struct {
	Addr    string // host:port
	*server        // nil when R8IM_TEST_REDIS_ADDR pointed at an external server
}

// URL is the REDIS_URL form of the address.
func (r *RedisServer) URL() string { return "redis://" + r.Addr + "/0" }

// Client returns a go-redis client closed at test end.
func (r *RedisServer) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// RedisOptions tune the server started by Redis.
type RedisOptions struct {
	AppendOnly bool // AOF on, as production runs it (and restart tests need)
}

// Redis starts redis-server on a free loopback port, or returns the server at
// R8IM_TEST_REDIS_ADDR.
func Redis(t testing.TB, opts ...RedisOptions) *RedisServer {
	t.Helper()
	if a := os.Getenv("R8IM_TEST_REDIS_ADDR"); a != "" {
		return &RedisServer{Addr: a}
	}
	var o RedisOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	bin := Binary(t, "redis-server")
	s, port := startServer(t, bin, nil, func(port int) []string {
		return []string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", yesNo(o.AppendOnly),
			"--maxmemory-policy", "noeviction", "--daemonize", "no",
		}
	}, func(ctx context.Context, port int) error {
		c := redis.NewClient(&redis.Options{Addr: addr(port), MaxRetries: -1})
		defer c.Close()
		return c.Ping(ctx).Err()
	})
	return &RedisServer{Addr: addr(port), server: s}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
