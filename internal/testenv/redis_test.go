package testenv_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/internal/testenv"
)

// Tests sharing one server (R8IM_TEST_REDIS_ADDR) each have a database of
// their own: neither sees the other's keys, URL, Client and Options all
// carry it, and it is empty and free again when the test ends.
func TestRedisSharedServerGivesEachTestItsDB(t *testing.T) {
	t.Setenv("R8IM_TEST_REDIS_ADDR", "")
	shared := testenv.Redis(t) // a server of this test's own, then shared
	t.Setenv("R8IM_TEST_REDIS_ADDR", shared.Addr)
	ctx := context.Background()
	leases := redis.NewClient(&redis.Options{Addr: shared.Addr}) // DB 0
	defer leases.Close()

	var a, b *testenv.RedisServer
	t.Run("two tests", func(t *testing.T) {
		a, b = testenv.Redis(t), testenv.Redis(t)
		if a.DB == b.DB || a.DB == 0 || b.DB == 0 || a.Addr != shared.Addr || b.Addr != shared.Addr {
			t.Fatalf("databases %s/%d and %s/%d; want two different ones, not 0, of %s", a.Addr, a.DB, b.Addr, b.DB, shared.Addr)
		}
		for _, r := range []*testenv.RedisServer{a, b} {
			if o, err := redis.ParseURL(r.URL()); err != nil || o.DB != r.DB || o.Addr != r.Addr {
				t.Errorf("URL %s parses to %+v, %v; want DB %d", r.URL(), o, err, r.DB)
			}
			if o := r.Options(); o.DB != r.DB {
				t.Errorf("Options().DB = %d, want %d", o.DB, r.DB)
			}
			if err := r.Client(t).Set(ctx, "r8im:key", "db "+strconv.Itoa(r.DB), 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		for _, r := range []*testenv.RedisServer{a, b} {
			c := r.Client(t)
			keys, err := c.Keys(ctx, "*").Result()
			v, _ := c.Get(ctx, "r8im:key").Result()
			if err != nil || !slices.Equal(keys, []string{"r8im:key"}) || v != "db "+strconv.Itoa(r.DB) {
				t.Errorf("DB %d holds %v (%v), r8im:key=%q; want only its own key", r.DB, keys, err, v)
			}
		}
		if n := len(leases.Keys(ctx, "r8im:testenv:db:*").Val()); n != 2 {
			t.Errorf("%d leases while two tests run, want 2", n)
		}
	})
	for _, r := range []*testenv.RedisServer{a, b} {
		c := redis.NewClient(r.Options())
		if n, err := c.DBSize(ctx).Result(); err != nil || n != 0 {
			t.Errorf("DB %d holds %d keys (%v) after its test; want it flushed", r.DB, n, err)
		}
		c.Close()
	}
	if l := leases.Keys(ctx, "r8im:testenv:db:*").Val(); len(l) != 0 {
		t.Errorf("leases %v outlive their tests", l)
	}
}

// A lease of a process that has ended (killed before its cleanup) is taken
// over, with what it left flushed; one of a live process is not.
func TestRedisSharedServerTakesOverEndedLeases(t *testing.T) {
	t.Setenv("R8IM_TEST_REDIS_ADDR", "")
	shared := testenv.Redis(t) // of its own: the test writes leases
	t.Setenv("R8IM_TEST_REDIS_ADDR", shared.Addr)
	ctx := context.Background()
	leases := redis.NewClient(&redis.Options{Addr: shared.Addr})
	defer leases.Close()
	ended := exec.Command("true")
	if err := ended.Run(); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	live := fmt.Sprintf("%s %d 0 another-test", host, os.Getpid())
	leases.Set(ctx, "r8im:testenv:db:1", live, 0)
	for i := 2; i < 16; i++ {
		leases.Set(ctx, "r8im:testenv:db:"+strconv.Itoa(i), fmt.Sprintf("%s %d 0 killed-test", host, ended.Process.Pid), 0)
	}
	left := redis.NewClient(&redis.Options{Addr: shared.Addr, DB: 2})
	defer left.Close()
	left.Set(ctx, "left-by-the-killed-test", "x", 0)

	t.Run("test", func(t *testing.T) {
		r := testenv.Redis(t)
		if r.DB != 2 {
			t.Fatalf("DB %d; want 2, the first one whose holder has ended", r.DB)
		}
		if n := r.Client(t).DBSize(ctx).Val(); n != 0 {
			t.Errorf("the killed test's %d keys are still there", n)
		}
	})
	if v := leases.Get(ctx, "r8im:testenv:db:1").Val(); v != live {
		t.Errorf("the live lease became %q", v)
	}
	if err := leases.Get(ctx, "r8im:testenv:db:2").Err(); err != redis.Nil {
		t.Errorf("the taken-over lease is not released: %v", err)
	}
}
