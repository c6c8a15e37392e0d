package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServer is a running Redis and the database a test has of it: its
// own, so counting keys (KEYS, SCAN) sees only the test's keys.
type RedisServer struct {
	Addr     string // host:port
	Password string // requirepass, "" for none
	// DB is the test's database: 1 on a server of its own; on the shared
	// server at R8IM_TEST_REDIS_ADDR, one leased to the test alone.
	DB int
	// Dir is the data directory (the AOF is in Dir/appendonlydir); "" for
	// an external server.
	Dir     string
	*server // nil when R8IM_TEST_REDIS_ADDR pointed at an external server

	bin  string
	args []string // the command line, reused by Restart on the same port
}

// ownServerDB is the database of a test on a server of its own: not 0, so
// a client that drops the DB finds nothing, whichever way tests run.
const ownServerDB = 1

// URL is the REDIS_URL form of the address (with the password, if any, and
// the test's DB).
func (r *RedisServer) URL() string {
	u := url.URL{Scheme: "redis", Host: r.Addr, Path: "/" + strconv.Itoa(r.DB)}
	if r.Password != "" {
		u.User = url.UserPassword("", r.Password)
	}
	return u.String()
}

// Options are go-redis options for the test's database (address, password,
// DB), for clients a test builds itself; a fresh copy each call.
func (r *RedisServer) Options() *redis.Options {
	return &redis.Options{Addr: r.Addr, Password: r.Password, DB: r.DB}
}

// Client returns a go-redis client of the test's database, closed at test
// end.
func (r *RedisServer) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(r.Options())
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

// Redis starts redis-server on a free loopback port, or leases the test a
// database of the server at R8IM_TEST_REDIS_ADDR (see sharedRedis).
func Redis(t testing.TB, opts ...RedisOptions) *RedisServer {
	t.Helper()
	var o RedisOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	if a := os.Getenv("R8IM_TEST_REDIS_ADDR"); a != "" && o.Password == "" && !o.FsyncAlways {
		return sharedRedis(t, a)
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
	return &RedisServer{Addr: addr(port), Password: o.Password, DB: ownServerDB, Dir: data, server: s, bin: bin, args: args(port)}
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

// The shared server's leases: in its DB 0, key redisLeaseKey+n holds who
// has database n, "<host> <pid> <serial> <test>".
const redisLeaseKey = "r8im:testenv:db:"

var redisLeaseSerial atomic.Int64

// sharedRedis leases the test a database of the server at addr, one no
// other test (of this process or another) has: the first of 1 … databases-1
// whose lease key it can SETNX in DB 0. A lease held by a process of this
// host that has ended (killed before its cleanup) is taken over. When
// every database is leased, it waits for one. The database is flushed
// when leased and again, before the lease is released, at test end.
func sharedRedis(t testing.TB, addr string) *RedisServer {
	t.Helper()
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = admin.Close() })
	n := 16 // redis.conf's default, when CONFIG is not allowed
	if v, err := admin.ConfigGet(ctx, "databases").Result(); err == nil {
		if d, err := strconv.Atoi(v["databases"]); err == nil {
			n = d
		}
	}
	host, _ := os.Hostname()
	holder := fmt.Sprintf("%s %d %d %s", host, os.Getpid(), redisLeaseSerial.Add(1), t.Name())
	db := 0
	Eventually(t, 10*time.Minute, fmt.Sprintf("a free database of the Redis at %s (R8IM_TEST_REDIS_ADDR)", addr), func() (bool, string) {
		var held []string
		for i := 1; i < n; i++ {
			ok, err := takeLease(ctx, admin, redisLeaseKey+strconv.Itoa(i), holder, host)
			if err != nil {
				t.Fatalf("leasing a database of the Redis at %s (R8IM_TEST_REDIS_ADDR): %v", addr, err)
			}
			if ok {
				db = i
				return true, ""
			}
			held = append(held, strconv.Itoa(i))
		}
		return false, fmt.Sprintf("databases %s are leased (keys %s<n> in DB 0 name the tests)", strings.Join(held, " "), redisLeaseKey)
	})
	r := &RedisServer{Addr: addr, DB: db}
	c := redis.NewClient(r.Options())
	t.Cleanup(func() {
		defer c.Close()
		if err := c.FlushDB(ctx).Err(); err != nil {
			t.Errorf("flushing database %d of the Redis at %s: %v", db, addr, err)
		}
		if err := releaseLease.Run(ctx, admin, []string{redisLeaseKey + strconv.Itoa(db)}, holder).Err(); err != nil {
			t.Errorf("releasing database %d of the Redis at %s: %v", db, addr, err)
		}
	})
	if err := c.FlushDB(ctx).Err(); err != nil { // what a killed test left
		t.Fatalf("flushing database %d of the Redis at %s: %v", db, addr, err)
	}
	return r
}

// takeLease sets key to holder if it is free or held by an ended process
// of this host.
func takeLease(ctx context.Context, admin *redis.Client, key, holder, host string) (bool, error) {
	ok, err := admin.SetNX(ctx, key, holder, 0).Result()
	if err != nil || ok {
		return ok, err
	}
	old, err := admin.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil // released meanwhile: the next round takes it
	}
	if err != nil {
		return false, err
	}
	f := strings.Fields(old)
	if len(f) < 2 || f[0] != host {
		return false, nil
	}
	pid, err := strconv.Atoi(f[1])
	if err != nil || pid <= 0 || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		return false, nil
	}
	return replaceLease.Run(ctx, admin, []string{key}, old, holder).Bool()
}

// replaceLease and releaseLease change a lease only if it is still the
// one the caller saw or holds.
var (
	replaceLease = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then redis.call("SET", KEYS[1], ARGV[2]) return 1 end return 0`)
	releaseLease = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)
)
