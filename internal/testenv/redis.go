package testenv

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"
)

// RedisServer is a running Redis.
type RedisServer struct {
	Addr     string // host:port
	Password string // requirepass, "" for none
	// Dir is the data directory (the AOF is in Dir/appendonlydir); "" for
	// an external server.
	Dir     string
	*server // nil when R8IM_TEST_REDIS_ADDR pointed at an external server

	bin  string
	args []string // the command line, reused by Restart on the same port
}

// URL is the REDIS_URL form of the address (with the password, if any).
func (r *RedisServer) URL() string {
	if r.Password != "" {
		return "redis://:" + url.PathEscape(r.Password) + "@" + r.Addr + "/0"
	}
	return "redis://" + r.Addr + "/0"
}

// Client returns a go-redis client closed at test end.
func (r *RedisServer) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr, Password: r.Password})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// RedisOptions tune the server started by Redis.
type RedisOptions struct {
	AppendOnly bool // AOF on, as production runs it (and restart tests need)
	// FsyncAlways makes the AOF fsync every write (appendfsync always), so
	// even a SIGKILL loses no acknowledged write. Implies AppendOnly.
	FsyncAlways bool
	// Password turns on requirepass; URL and Client carry it.
	Password string
}

// Redis starts redis-server on a free loopback port, or returns the server at
// R8IM_TEST_REDIS_ADDR.
func Redis(t testing.TB, opts ...RedisOptions) *RedisServer {
	t.Helper()
	var o RedisOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	if a := os.Getenv("R8IM_TEST_REDIS_ADDR"); a != "" && o.Password == "" && !o.FsyncAlways {
		return &RedisServer{Addr: a}
	}
	bin := Binary(t, "redis-server")
	data := t.TempDir() // the AOF lives here, across restarts
	args := func(port int) []string {
		a := []string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", data,
			"--save", "", "--appendonly", yesNo(o.AppendOnly || o.FsyncAlways),
			"--maxmemory-policy", "noeviction", "--daemonize", "no",
		}
		if o.FsyncAlways {
			a = append(a, "--appendfsync", "always")
		}
		if o.Password != "" {
			a = append(a, "--requirepass", o.Password)
		}
		return a
	}
	s, port := startServer(t, bin, nil, args, redisReady(o.Password))
	return &RedisServer{Addr: addr(port), Password: o.Password, Dir: data, server: s, bin: bin, args: args(port)}
}

func redisReady(password string) func(ctx context.Context, port int) error {
	return func(ctx context.Context, port int) error {
		c := redis.NewClient(&redis.Options{Addr: addr(port), Password: password, MaxRetries: -1})
		defer c.Close()
		return c.Ping(ctx).Err()
	}
}

// Restart stops the server (gracefully, with SIGTERM, unless it has already
// exited, for example after Kill) and starts it again on the same port with
// the same data directory: with AppendOnly, the data comes back from the AOF.
// Clients reconnect on their own.
func (r *RedisServer) Restart(t testing.TB) {
	t.Helper()
	if r.server == nil {
		t.Fatal("Restart: Redis at R8IM_TEST_REDIS_ADDR is not ours to restart")
	}
	r.server.stop()
	port, err := strconv.Atoi(r.Addr[len("127.0.0.1:"):])
	if err != nil {
		t.Fatal(err)
	}
	var lastErr error
	for attempt := 0; attempt < 20; attempt++ { // the port may linger a moment
		s, err := spawn(t, r.bin, nil, r.args)
		if err != nil {
			t.Fatal(err)
		}
		if err = s.waitReady(port, redisReady(r.Password)); err == nil {
			r.server = s
			return
		}
		lastErr = fmt.Errorf("%w\n--- %s output ---\n%s", err, filepath.Base(r.bin), s.logTail())
		s.stop()
	}
	t.Fatalf("restarting redis-server on %s: %v", r.Addr, lastErr)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
