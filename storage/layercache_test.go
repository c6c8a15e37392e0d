package storage_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/storage"
)

func TestLayerCacheLookupStore(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	ctx := context.Background()
	c := storage.NewLayerCache(rdb, storage.WithCacheTTL(time.Hour))
	k := storage.LayerKey{Registry: "127.0.0.1:5000", Source: "sha256:" + fmt.Sprintf("%064x", 1), Level: 3}
	if _, ok, err := c.Lookup(ctx, k); err != nil || ok {
		t.Fatalf("Lookup of an unknown layer = %v, %v; want a miss", ok, err)
	}
	want := storage.LayerConversion{Digest: "sha256:" + fmt.Sprintf("%064x", 2), Size: 1234, DiffID: "sha256:" + fmt.Sprintf("%064x", 3), Repository: "127.0.0.1:5000/a/b"}
	if err := c.Store(ctx, k, want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := c.Lookup(ctx, k)
	if err != nil || !ok || got != want {
		t.Fatalf("Lookup = %+v, %v, %v; want %+v", got, ok, err, want)
	}
	// Keyed by registry and level too.
	for _, other := range []storage.LayerKey{{Registry: "other:5000", Source: k.Source, Level: 3}, {Registry: k.Registry, Source: k.Source, Level: 19}} {
		if _, ok, _ := c.Lookup(ctx, other); ok {
			t.Errorf("Lookup(%+v) hit the entry of %+v", other, k)
		}
	}
	if ttl := rdb.PTTL(ctx, c.Key(k)).Val(); ttl <= 0 || ttl > time.Hour {
		t.Errorf("entry TTL = %s, want (0, 1h]", ttl)
	}
	// A foreign value at the key is a miss, not an error or a panic.
	rdb.HSet(ctx, c.Key(k), "size", "not a number")
	if _, ok, err := c.Lookup(ctx, k); ok || err != nil {
		t.Errorf("Lookup of a damaged entry = %v, %v; want a miss", ok, err)
	}
}

func TestLayerCacheLeaseIsExclusive(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	ctx := context.Background()
	c := storage.NewLayerCache(rdb, storage.WithLeaseTTL(600*time.Millisecond))
	k := storage.LayerKey{Registry: "r", Source: "sha256:" + fmt.Sprintf("%064x", 9), Level: 3}

	// Ten claimants at once: exactly one wins.
	var won atomic.Int32
	var releases sync.Map
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			release, err := c.Lease(ctx, k)
			if err != nil {
				t.Error(err)
				return
			}
			if release != nil {
				won.Add(1)
				releases.Store(i, release)
			}
		}()
	}
	wg.Wait()
	if won.Load() != 1 {
		t.Fatalf("%d claimants won the lease, want 1", won.Load())
	}
	// Renewed while held: still held well past its TTL.
	time.Sleep(1500 * time.Millisecond)
	if r, _ := c.Lease(ctx, k); r != nil {
		t.Fatal("a held lease was taken after its TTL: it is not renewed")
	}
	releases.Range(func(_, v any) bool { v.(func())(); v.(func())(); return true }) // release twice: harmless
	r, err := c.Lease(ctx, k)
	if err != nil || r == nil {
		t.Fatalf("Lease after release = %v, %v; want it claimed", r != nil, err)
	}
	r()

	// A holder that dies (never releases, never renews) frees it within the TTL.
	key := c.Key(k) + ":lease"
	rdb.Set(ctx, key, "someone-dead", 600*time.Millisecond)
	if r, _ := c.Lease(ctx, k); r != nil {
		t.Fatal("took a lease another holds")
	}
	testenv.Eventually(t, 5*time.Second, "the dead holder's lease to expire", func() (bool, string) {
		r, err := c.Lease(ctx, k)
		if r == nil {
			return false, fmt.Sprintf("not leased (%v); %s holds it for %s", err, rdb.Get(ctx, key).Val(), rdb.PTTL(ctx, key).Val())
		}
		r()
		return true, ""
	})
	// Release never deletes a lease it no longer holds.
	r, _ = c.Lease(ctx, k)
	rdb.Set(ctx, key, "next-holder", time.Minute)
	r()
	if v := rdb.Get(ctx, key).Val(); v != "next-holder" {
		t.Errorf("release deleted another holder's lease (now %q)", v)
	}
}

func TestSemaphoreBoundsHolders(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	ctx := context.Background()
	s := storage.NewSemaphore(rdb)
	until := time.Now().Add(time.Minute)
	for i := range 3 {
		ok, err := s.TryAcquire(ctx, "registry:r", fmt.Sprint("task-", i), 2, until)
		if err != nil {
			t.Fatal(err)
		}
		if want := i < 2; ok != want {
			t.Errorf("holder %d: acquired = %v, want %v", i, ok, want)
		}
	}
	// A holder asking again keeps its slot; another scope is separate.
	if ok, _ := s.TryAcquire(ctx, "registry:r", "task-0", 2, until); !ok {
		t.Error("a holder lost its own slot by asking again")
	}
	if ok, _ := s.TryAcquire(ctx, "registry:other", "task-2", 2, until); !ok {
		t.Error("scopes are not separate")
	}
	if err := s.Release(ctx, "registry:r", "task-0"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.TryAcquire(ctx, "registry:r", "task-2", 2, until); !ok {
		t.Error("a released slot was not free")
	}
	// A holder past its deadline (it died) frees its slot.
	if ok, _ := s.TryAcquire(ctx, "registry:d", "dead", 1, time.Now().Add(300*time.Millisecond)); !ok {
		t.Fatal("first holder of an empty scope refused")
	}
	if ok, _ := s.TryAcquire(ctx, "registry:d", "live", 1, until); ok {
		t.Fatal("scope of one held twice")
	}
	time.Sleep(400 * time.Millisecond)
	if ok, _ := s.TryAcquire(ctx, "registry:d", "live", 1, until); !ok {
		t.Error("a dead holder's slot was not freed at its deadline")
	}
	if n, _ := s.Holders(ctx, "registry:d"); n != 1 {
		t.Errorf("Holders = %d, want 1", n)
	}
}

func TestBatchesCompleteOnce(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	ctx := context.Background()
	recs := storage.NewRecords(rdb, time.Hour)
	b := storage.NewBatches(recs, time.Hour)
	if err := b.Create(ctx, storage.Batch{ID: "b1", CallbackURL: "https://hooks.example/x"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Create(ctx, storage.Batch{ID: "b1"}); err == nil {
		t.Fatal("a batch id was taken twice")
	}
	mustRecord(t, recs, "t1", "t2", "t3")
	if err := b.Add(ctx, "b1", "t1", "t2", "t3"); err != nil {
		t.Fatal(err)
	}
	// t3 is also in a second batch (a re-run backfill).
	if err := b.Create(ctx, storage.Batch{ID: "b2"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(ctx, "b2", "t3"); err != nil {
		t.Fatal(err)
	}
	if done, _ := b.Seal(ctx, "b2"); done {
		t.Fatal("b2 completed with a task still running")
	}
	finish := func(id string, st storage.State) []string {
		t.Helper()
		done, err := b.Finished(ctx, id, st)
		if err != nil {
			t.Fatal(err)
		}
		return done
	}
	if done := finish("t1", storage.StateSucceeded); len(done) != 0 {
		t.Fatalf("completed %v before b1 was sealed", done)
	}
	if done := finish("t3", storage.StateFailed); fmt.Sprint(done) != "[b2]" {
		t.Fatalf("t3's end completed %v, want [b2]", done)
	}
	finish("t2", storage.StateSucceeded)
	if done, _ := b.Seal(ctx, "b1"); !done {
		t.Fatal("sealing b1 with every task over did not complete it")
	}
	if done := finish("t2", storage.StateSucceeded); len(done) != 0 {
		t.Fatalf("a repeated end completed %v again", done)
	}
	if done, _ := b.Seal(ctx, "b1"); done {
		t.Fatal("b1 completed twice")
	}

	// Status reads the records.
	if _, err := recs.Succeed(ctx, "t1", storage.Success{Result: "r/a@sha256:" + fmt.Sprintf("%064x", 1), SavedBytes: 100}); err != nil {
		t.Fatal(err)
	}
	if _, err := recs.Start(ctx, "t2", 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Skip(ctx, "b1", 4); err != nil {
		t.Fatal(err)
	}
	st, err := b.Status(ctx, "b1")
	if err != nil {
		t.Fatal(err)
	}
	if st.Total != 3 || st.Succeeded != 1 || st.Running != 1 || st.Pending != 1 || st.Skipped != 4 || st.SavedBytes != 100 ||
		st.CompletedAt == nil || !st.Sealed || st.CallbackURL != "https://hooks.example/x" {
		t.Errorf("Status = %+v", st)
	}
	if _, err := b.Status(ctx, "nope"); err == nil {
		t.Error("Status of an unknown batch succeeded")
	}
}

func mustRecord(t *testing.T, recs *storage.Records, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if _, err := recs.Create(context.Background(), storage.Record{ID: id, Type: "image:zstd", Queue: "backfill"}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLayerDigests: values round-trip; a lookup keeps an entry for another
// TTL (a layer in use stays known); an unknown key is a miss.
func TestLayerDigests(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	ctx := context.Background()
	c := storage.NewLayerDigests(rdb, time.Hour)
	if _, ok, err := c.Lookup(ctx, "weights-layer:unknown"); err != nil || ok {
		t.Fatalf("Lookup of an unknown key = %v, %v; want a miss", ok, err)
	}
	if err := c.Store(ctx, "weights-layer:a", []byte(`{"digest":"sha256:x"}`)); err != nil {
		t.Fatal(err)
	}
	keys := rdb.Keys(ctx, "r8im:weights-layer:*").Val() // the test's own DB (testenv.Redis)
	if len(keys) != 1 {
		t.Fatalf("keys %v, want one entry", keys)
	}
	if err := rdb.Expire(ctx, keys[0], time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	b, ok, err := c.Lookup(ctx, "weights-layer:a")
	if err != nil || !ok || string(b) != `{"digest":"sha256:x"}` {
		t.Fatalf("Lookup = %q, %v, %v", b, ok, err)
	}
	if ttl := rdb.PTTL(ctx, keys[0]).Val(); ttl <= 59*time.Minute {
		t.Errorf("after a lookup the entry expires in %s, want another hour", ttl)
	}
}
