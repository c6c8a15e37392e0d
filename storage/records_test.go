package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/storage"
)

const recTTL = 30 * 24 * time.Hour

// newRecords starts a Redis and returns a store on it under a key prefix of
// the test's own (R8IM_TEST_REDIS_ADDR may point every test at one server).
func newRecords(t *testing.T, opts ...storage.RecordsOption) (*storage.Records, *redis.Client, *testenv.RedisServer) {
	t.Helper()
	srv := testenv.Redis(t)
	rdb := srv.Client(t)
	prefix := fmt.Sprintf("test:%s:%d:", t.Name(), time.Now().UnixNano())
	recPrefixes.Store(t, prefix)
	t.Cleanup(func() { recPrefixes.Delete(t) })
	return storage.NewRecords(rdb, recTTL, append([]storage.RecordsOption{storage.WithKeyPrefix(prefix)}, opts...)...), rdb, srv
}

// recPrefixes holds each test's key prefix.
var recPrefixes sync.Map

// recPrefix is the key prefix of the test's store.
func recPrefix(t *testing.T) string {
	p, ok := recPrefixes.Load(t)
	if !ok {
		t.Fatal("recPrefix before newRecords")
	}
	return p.(string)
}

func recGet(t *testing.T, rs *storage.Records, id string) *storage.Record {
	t.Helper()
	rec, err := rs.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return rec
}

func recCreate(t *testing.T, rs *storage.Records, rec storage.Record) {
	t.Helper()
	created, err := rs.Create(context.Background(), rec)
	if err != nil || !created {
		t.Fatalf("Create(%s) = %v, %v; want true, nil", rec.ID, created, err)
	}
}

// recStart starts record id's attempt-th attempt; it returns whether the
// record had already succeeded.
func recStart(t *testing.T, rs *storage.Records, id string, attempt int) bool {
	t.Helper()
	succeeded, err := rs.Start(context.Background(), id, attempt)
	recCheck(t, err)
	return succeeded
}

func recCheck(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// recStreamEntries returns the published stream's entries for id.
func recStreamEntries(t *testing.T, rdb *redis.Client, rs *storage.Records, id string) []redis.XMessage {
	t.Helper()
	all, err := rdb.XRange(context.Background(), rs.StreamKey(), "-", "+").Result()
	recCheck(t, err)
	var out []redis.XMessage
	for _, m := range all {
		if m.Values["id"] == id {
			out = append(out, m)
		}
	}
	return out
}

func recSuccess(n int) storage.Success {
	return storage.Success{
		Result:           fmt.Sprintf("registry.example/model@sha256:%064d", n),
		BaseDigest:       "registry.example/base@sha256:" + fmt.Sprintf("%064x", 0xba5e),
		LayerDigest:      fmt.Sprintf("sha256:%064x", n+1),
		LayerDiffID:      fmt.Sprintf("sha256:%064x", n+2),
		LayerSize:        int64(1000 + n),
		UncompressedSize: int64(2000 + n),
		UploadedBytes:    int64(3000 + n),
		MountedBytes:     int64(4000 + n),
		Stages:           map[string]float64{"upload": float64(n) + 0.5, "verify": 0.25},
	}
}

func TestRecordStreamKeyDefault(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{})
	defer rdb.Close()
	rs := storage.NewRecords(rdb, 0)
	if rs.StreamKey() != storage.PublishedStream {
		t.Errorf("StreamKey() = %q, want %q", rs.StreamKey(), storage.PublishedStream)
	}
	if got := rs.Key("e1"); got != "r8im:record:e1" {
		t.Errorf("Key(e1) = %q", got)
	}
}

func TestRecordCreateIsIdempotent(t *testing.T) {
	ctx := context.Background()
	rs, rdb, _ := newRecords(t)
	first := storage.Record{ID: "evt-1", Type: "image:affix", Queue: "publish", EventID: "evt-1",
		Inputs: json.RawMessage(`{"dest":"r/m:v1"}`), Metadata: json.RawMessage(`{"run":7}`)}
	recCreate(t, rs, first)
	before := recGet(t, rs, "evt-1")

	created, err := rs.Create(ctx, first)
	if err != nil || created {
		t.Fatalf("second Create = %v, %v; want false, nil", created, err)
	}
	// Other values: refused, naming them, and nothing written.
	created, err = rs.Create(ctx, storage.Record{ID: "evt-1", Type: "image:zstd", Queue: "backfill",
		Inputs: json.RawMessage(`{"dest":"other"}`), CallbackURL: "https://hooks.example.com/x"})
	var ce *storage.ConflictError
	if created || !errors.As(err, &ce) || !errors.Is(err, storage.ErrRecordConflict) || fmt.Sprint(ce.Fields) != "[type inputs]" {
		t.Fatalf("conflicting Create = %v, %v; want a ConflictError naming type and inputs", created, err)
	}
	after := recGet(t, rs, "evt-1")
	if after.Type != "image:affix" || after.Queue != "publish" || string(after.Inputs) != `{"dest":"r/m:v1"}` ||
		after.CallbackURL != "" || !after.UpdatedAt.Equal(before.UpdatedAt) {
		t.Errorf("second Create overwrote the record: %+v", after)
	}
	if after.State != storage.StateQueued || after.Attempts != 0 {
		t.Errorf("state, attempts = %s, %d; want queued, 0", after.State, after.Attempts)
	}
	if since := time.Since(after.CreatedAt); since < 0 || since > time.Minute || !after.UpdatedAt.Equal(after.CreatedAt) {
		t.Errorf("CreatedAt, UpdatedAt = %v, %v; want now", after.CreatedAt, after.UpdatedAt)
	}
	if ttl := rdb.TTL(ctx, rs.Key("evt-1")).Val(); ttl < 29*24*time.Hour {
		t.Errorf("TTL = %v, want about 30 days", ttl)
	}

	for _, bad := range []storage.Record{
		{},
		{ID: "x", Inputs: json.RawMessage(`{"dest":`)},
		{ID: "x", Metadata: json.RawMessage(`nope`)},
	} {
		if created, err := rs.Create(ctx, bad); err == nil || created {
			t.Errorf("Create(%+v) = %v, %v; want an error", bad, created, err)
		}
	}
	if _, err := rs.Get(ctx, "x"); !errors.Is(err, storage.ErrNoRecord) {
		t.Errorf("rejected Create stored something: Get = %v", err)
	}
}

// TestRecordCreateFillsABareRecord: a worker's Start may make the record
// before its enqueuer's Create; the Create then fills in what the bare
// record lacks, keeping the state Start set.
func TestRecordCreateFillsABareRecord(t *testing.T) {
	ctx := context.Background()
	rs, _, _ := newRecords(t)
	if _, err := rs.Start(ctx, "affix:run-1", 1); err != nil {
		t.Fatal(err)
	}
	created, err := rs.Create(ctx, storage.Record{ID: "affix:run-1", Type: "image:affix", Queue: "publish", EventID: "run-1",
		CallbackURL: "https://hooks.example.com/run-1", Inputs: json.RawMessage(`{"dest":"r/m"}`), Metadata: json.RawMessage(`{"run":1}`)})
	if err != nil || created {
		t.Fatalf("Create over a bare record = %v, %v; want false, nil", created, err)
	}
	rec := recGet(t, rs, "affix:run-1")
	if rec.State != storage.StateRunning || rec.Attempts != 1 || rec.Type != "image:affix" || rec.EventID != "run-1" ||
		rec.CallbackURL != "https://hooks.example.com/run-1" || string(rec.Metadata) != `{"run":1}` || string(rec.Inputs) != `{"dest":"r/m"}` {
		t.Fatalf("record after the fill: %+v", rec)
	}
}

func TestRecordGetMissing(t *testing.T) {
	rs, _, _ := newRecords(t)
	if _, err := rs.Get(context.Background(), "nope"); !errors.Is(err, storage.ErrNoRecord) {
		t.Fatalf("Get(missing) = %v, want ErrNoRecord", err)
	}
}

func TestRecordRoundTripsEveryField(t *testing.T) {
	ctx := context.Background()
	rs, _, _ := newRecords(t)
	t0 := time.Now()
	in := storage.Record{ID: "evt-rt", Type: "image:affix", Queue: "publish", EventID: "evt-rt",
		Inputs: json.RawMessage(`{"weights":"s3://b/k.tar","dest":"r.example/m:v1"}`), Metadata: json.RawMessage(`{"run":"abc","n":[1,2]}`)}
	recCreate(t, rs, in)
	recStart(t, rs, in.ID, 1)
	recCheck(t, rs.Fail(ctx, in.ID, "pushing: 503", false))
	recStart(t, rs, in.ID, 2)
	recCheck(t, rs.Progress(ctx, in.ID, 512, 1024))
	s := recSuccess(3)
	first, err := rs.Succeed(ctx, in.ID, s)
	if err != nil || !first {
		t.Fatalf("Succeed = %v, %v", first, err)
	}
	got := recGet(t, rs, in.ID)

	if got.StartedAt == nil || got.FinishedAt == nil {
		t.Fatalf("StartedAt, FinishedAt = %v, %v; want both set", got.StartedAt, got.FinishedAt)
	}
	for name, tm := range map[string]time.Time{"CreatedAt": got.CreatedAt, "UpdatedAt": got.UpdatedAt,
		"StartedAt": *got.StartedAt, "FinishedAt": *got.FinishedAt} {
		if tm.Before(t0.Add(-time.Second)) || tm.After(time.Now().Add(time.Second)) {
			t.Errorf("%s = %v, want between %v and now", name, tm, t0)
		}
	}
	if got.CreatedAt.After(*got.StartedAt) || got.StartedAt.After(*got.FinishedAt) || !got.UpdatedAt.Equal(*got.FinishedAt) {
		t.Errorf("times out of order: created %v started %v finished %v updated %v",
			got.CreatedAt, *got.StartedAt, *got.FinishedAt, got.UpdatedAt)
	}

	want := storage.Record{
		ID: in.ID, Type: in.Type, Queue: in.Queue, EventID: in.EventID, State: storage.StateSucceeded,
		Inputs: in.Inputs, Metadata: in.Metadata,
		BaseDigest: s.BaseDigest, Result: s.Result, LayerDigest: s.LayerDigest, LayerDiffID: s.LayerDiffID,
		LayerSize: s.LayerSize, UncompressedSize: s.UncompressedSize, UploadedBytes: s.UploadedBytes,
		MountedBytes: s.MountedBytes, Stages: s.Stages,
		Attempts: 2, LastError: "pushing: 503", ProgressDone: 512, ProgressTotal: 1024,
		CreatedAt: got.CreatedAt, UpdatedAt: got.UpdatedAt, StartedAt: got.StartedAt, FinishedAt: got.FinishedAt,
	}
	wantJSON, _ := json.Marshal(want)
	gotJSON, err := json.Marshal(got)
	recCheck(t, err)
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("record:\n got %s\nwant %s", gotJSON, wantJSON)
	}
	// The JSON form is what `enqueue status --json` prints: decodable back.
	var back storage.Record
	recCheck(t, json.Unmarshal(gotJSON, &back))
	if back.Result != s.Result || back.Stages["upload"] != 3.5 || !back.FinishedAt.Equal(*got.FinishedAt) {
		t.Errorf("JSON round trip lost fields: %+v", back)
	}
}

func TestRecordTTLRefreshedOnEveryWrite(t *testing.T) {
	ctx := context.Background()
	rs, rdb, _ := newRecords(t)
	key := rs.Key("evt-ttl")
	recCreate(t, rs, storage.Record{ID: "evt-ttl", Type: "image:affix"})
	for _, step := range []struct {
		name string
		do   func() error
	}{
		{"Start", func() error { _, err := rs.Start(ctx, "evt-ttl", 1); return err }},
		{"Progress", func() error { return rs.Progress(ctx, "evt-ttl", 1, 2) }},
		{"Fail", func() error { return rs.Fail(ctx, "evt-ttl", "retrying", false) }},
		{"Succeed", func() error { _, err := rs.Succeed(ctx, "evt-ttl", recSuccess(1)); return err }},
	} {
		recCheck(t, rdb.Expire(ctx, key, time.Hour).Err())
		recCheck(t, step.do())
		if ttl := rdb.TTL(ctx, key).Val(); ttl < 29*24*time.Hour {
			t.Errorf("after %s TTL = %v, want refreshed to about 30 days", step.name, ttl)
		}
	}
}

func TestRecordStateMachine(t *testing.T) {
	ctx := context.Background()
	rs, _, _ := newRecords(t)

	t.Run("queued running succeeded", func(t *testing.T) {
		recCreate(t, rs, storage.Record{ID: "a", Type: "image:affix"})
		recStart(t, rs, "a", 1)
		if r := recGet(t, rs, "a"); r.State != storage.StateRunning || r.Attempts != 1 || r.StartedAt == nil || r.FinishedAt != nil {
			t.Fatalf("after Start: %+v", r)
		}
		if first, err := rs.Succeed(ctx, "a", recSuccess(1)); err != nil || !first {
			t.Fatalf("Succeed = %v, %v", first, err)
		}
		if r := recGet(t, rs, "a"); r.State != storage.StateSucceeded || r.FinishedAt == nil {
			t.Fatalf("after Succeed: %+v", r)
		}
	})

	t.Run("non-final failure keeps running", func(t *testing.T) {
		recCreate(t, rs, storage.Record{ID: "b"})
		recStart(t, rs, "b", 1)
		recCheck(t, rs.Progress(ctx, "b", 10, 100))
		recCheck(t, rs.Fail(ctx, "b", "dial tcp: connection refused", false))
		r := recGet(t, rs, "b")
		if r.State != storage.StateRunning || r.LastError != "dial tcp: connection refused" || r.FinishedAt != nil {
			t.Fatalf("after non-final Fail: %+v", r)
		}
		recStart(t, rs, "b", 2)
		r = recGet(t, rs, "b")
		if r.Attempts != 2 || r.ProgressDone != 0 || r.ProgressTotal != 0 || r.LastError == "" {
			t.Errorf("second Start: attempts %d, progress %d/%d, last error %q; want 2, reset, kept",
				r.Attempts, r.ProgressDone, r.ProgressTotal, r.LastError)
		}
	})

	t.Run("final failure", func(t *testing.T) {
		recCreate(t, rs, storage.Record{ID: "c"})
		recStart(t, rs, "c", 1)
		recCheck(t, rs.Fail(ctx, "c", "policy: ../etc/passwd escapes /src/weights", true))
		r := recGet(t, rs, "c")
		if r.State != storage.StateFailed || r.FinishedAt == nil || r.LastError == "" {
			t.Fatalf("after final Fail: %+v", r)
		}
		// An operator re-runs the task: it runs again.
		recStart(t, rs, "c", 1)
		if r := recGet(t, rs, "c"); r.State != storage.StateRunning || r.FinishedAt != nil {
			t.Errorf("Start after failed: %+v", r)
		}
	})

	t.Run("nothing changes a succeeded record", func(t *testing.T) {
		recCreate(t, rs, storage.Record{ID: "d"})
		recStart(t, rs, "d", 1)
		recCheck(t, rs.Progress(ctx, "d", 100, 100))
		if _, err := rs.Succeed(ctx, "d", recSuccess(4)); err != nil {
			t.Fatal(err)
		}
		before := recGet(t, rs, "d")
		recCheck(t, rs.Fail(ctx, "d", "late failure", false))
		recCheck(t, rs.Fail(ctx, "d", "late final failure", true))
		if !recStart(t, rs, "d", 5) {
			t.Error("Start of a succeeded record did not say it had succeeded")
		}
		recCheck(t, rs.Progress(ctx, "d", 1, 2))
		if first, err := rs.Succeed(ctx, "d", recSuccess(9)); err != nil || first {
			t.Errorf("second Succeed = %v, %v; want false, nil", first, err)
		}
		if created, err := rs.Create(ctx, storage.Record{ID: "d"}); err != nil || created {
			t.Errorf("Create = %v, %v; want false, nil", created, err)
		}
		after := recGet(t, rs, "d")
		b, _ := json.Marshal(before)
		a, _ := json.Marshal(after)
		if string(a) != string(b) {
			t.Errorf("succeeded record changed:\n was %s\n now %s", b, a)
		}
	})

	t.Run("transitions on a missing record", func(t *testing.T) {
		recCheck(t, rs.Progress(ctx, "ghost", 1, 2))
		if _, err := rs.Get(ctx, "ghost"); !errors.Is(err, storage.ErrNoRecord) {
			t.Errorf("Progress created a record: %v", err)
		}
		recStart(t, rs, "other-means", 3)
		if r := recGet(t, rs, "other-means"); r.ID != "other-means" || r.State != storage.StateRunning || r.Attempts != 3 || r.CreatedAt.IsZero() {
			t.Errorf("Start on missing: %+v", r)
		}
		recCheck(t, rs.Fail(ctx, "lost", "boom", true))
		if r := recGet(t, rs, "lost"); r.State != storage.StateFailed || r.LastError != "boom" {
			t.Errorf("Fail on missing: %+v", r)
		}
		if first, err := rs.Succeed(ctx, "expired", recSuccess(2)); err != nil || !first {
			t.Errorf("Succeed on missing = %v, %v", first, err)
		}
		if r := recGet(t, rs, "expired"); r.State != storage.StateSucceeded || r.Result != recSuccess(2).Result {
			t.Errorf("Succeed on missing: %+v", r)
		}
	})

	t.Run("succeed needs a result", func(t *testing.T) {
		recCreate(t, rs, storage.Record{ID: "e"})
		if _, err := rs.Succeed(ctx, "e", storage.Success{LayerDigest: "sha256:x"}); err == nil {
			t.Error("Succeed without a result: no error")
		}
		if r := recGet(t, rs, "e"); r.State != storage.StateQueued {
			t.Errorf("state = %s, want queued", r.State)
		}
	})
}

// A transition that fails in Redis leaves the record as it was.
func TestRecordFailedWriteLeavesPreviousState(t *testing.T) {
	ctx := context.Background()
	rs, rdb, _ := newRecords(t)
	recCreate(t, rs, storage.Record{ID: "w", Type: "image:affix"})
	recStart(t, rs, "w", 1)
	before := recGet(t, rs, "w")

	recCheck(t, rdb.Set(ctx, rs.StreamKey(), "not a stream", 0).Err())
	if first, err := rs.Succeed(ctx, "w", recSuccess(1)); err == nil || first {
		t.Fatalf("Succeed with a broken stream key = %v, %v; want an error", first, err)
	}
	after := recGet(t, rs, "w")
	b, _ := json.Marshal(before)
	a, _ := json.Marshal(after)
	if string(a) != string(b) {
		t.Errorf("failed Succeed changed the record:\n was %s\n now %s", b, a)
	}
	if list, err := rs.List(ctx, storage.StateSucceeded, 10); err != nil || len(list) != 0 {
		t.Errorf("List(succeeded) = %d records, %v; want none", len(list), err)
	}

	recCheck(t, rdb.Del(ctx, rs.StreamKey()).Err())
	if first, err := rs.Succeed(ctx, "w", recSuccess(1)); err != nil || !first {
		t.Fatalf("Succeed after repair = %v, %v; want true", first, err)
	}
	if n := len(recStreamEntries(t, rdb, rs, "w")); n != 1 {
		t.Errorf("stream entries for w = %d, want 1", n)
	}
}

func TestSucceedExactlyOnce(t *testing.T) {
	ctx := context.Background()
	rs, rdb, srv := newRecords(t)
	// A second client (a second worker process) on the same keys.
	rs2 := storage.NewRecords(srv.Client(t), recTTL, storage.WithKeyPrefix(recPrefix(t)))
	if rs2.Key("x") != rs.Key("x") {
		t.Fatalf("second store keys %s, first %s", rs2.Key("x"), rs.Key("x"))
	}

	for round := range 5 {
		id := "race-" + strconv.Itoa(round)
		recCreate(t, rs, storage.Record{ID: id, Type: "image:affix", Queue: "publish"})
		recStart(t, rs, id, 1)

		const n = 20
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			winners []int
			start   = make(chan struct{})
		)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				store := rs
				if i%2 == 1 {
					store = rs2
				}
				<-start
				first, err := store.Succeed(ctx, id, recSuccess(i))
				if err != nil {
					t.Error(err)
					return
				}
				if first {
					mu.Lock()
					winners = append(winners, i)
					mu.Unlock()
				}
			}()
		}
		close(start)
		wg.Wait()

		if len(winners) != 1 {
			t.Fatalf("round %d: %d callers got first == true (%v), want exactly 1", round, len(winners), winners)
		}
		w := recSuccess(winners[0])
		entries := recStreamEntries(t, rdb, rs, id)
		if len(entries) != 1 {
			t.Fatalf("round %d: %d stream entries for %s, want 1", round, len(entries), id)
		}
		if entries[0].Values["result"] != w.Result || entries[0].Values["layer_digest"] != w.LayerDigest {
			t.Errorf("round %d: stream entry %v is not the winner's (%s)", round, entries[0].Values, w.Result)
		}
		r := recGet(t, rs, id)
		if r.Result != w.Result || r.LayerDigest != w.LayerDigest || r.LayerDiffID != w.LayerDiffID ||
			r.LayerSize != w.LayerSize || r.UploadedBytes != w.UploadedBytes || r.Stages["upload"] != w.Stages["upload"] {
			t.Errorf("round %d: record fields not all from the winner %d: %+v", round, winners[0], r)
		}
	}
	if n := rdb.XLen(ctx, rs.StreamKey()).Val(); n != 5 {
		t.Errorf("XLEN = %d, want 5 (one per record)", n)
	}
}

func TestStreamEntriesAndMaxLen(t *testing.T) {
	ctx := context.Background()
	const maxLen = 20
	rs, rdb, _ := newRecords(t, storage.WithStreamMaxLen(maxLen))
	recCreate(t, rs, storage.Record{ID: "evt-0", Type: "image:affix", EventID: "evt-0"})
	if _, err := rs.Succeed(ctx, "evt-0", recSuccess(0)); err != nil {
		t.Fatal(err)
	}
	e := recStreamEntries(t, rdb, rs, "evt-0")
	if len(e) != 1 {
		t.Fatalf("entries for evt-0: %d", len(e))
	}
	r := recGet(t, rs, "evt-0")
	s := recSuccess(0)
	want := map[string]any{"id": "evt-0", "type": "image:affix", "event_id": "evt-0", "result": s.Result,
		"base_digest": s.BaseDigest, "layer_digest": s.LayerDigest, "finished_at": r.FinishedAt.Format(time.RFC3339Nano)}
	if fmt.Sprint(e[0].Values) != fmt.Sprint(want) {
		t.Errorf("entry = %v\n want %v", e[0].Values, want)
	}

	// MAXLEN ~ trims whole stream nodes, so the stream may exceed maxLen by
	// up to one node's worth of entries, never more.
	nodeMax := int64(100)
	if v, err := rdb.ConfigGet(ctx, "stream-node-max-entries").Result(); err == nil {
		if n, err := strconv.ParseInt(v["stream-node-max-entries"], 10, 64); err == nil && n > 0 {
			nodeMax = n
		}
	}
	for i := 1; i <= 3*int(nodeMax)+maxLen; i++ {
		if _, err := rs.Succeed(ctx, "bulk-"+strconv.Itoa(i), recSuccess(i)); err != nil {
			t.Fatal(err)
		}
		if n := rdb.XLen(ctx, rs.StreamKey()).Val(); n > maxLen+nodeMax {
			t.Fatalf("after %d publishes XLEN = %d, want <= %d (MAXLEN ~ %d)", i+1, n, maxLen+nodeMax, maxLen)
		}
	}
	if n := rdb.XLen(ctx, rs.StreamKey()).Val(); n < maxLen {
		t.Errorf("XLEN = %d, want at least %d", n, maxLen)
	}
	last, err := rdb.XRevRangeN(ctx, rs.StreamKey(), "+", "-", 1).Result()
	recCheck(t, err)
	if want := "bulk-" + strconv.Itoa(3*int(nodeMax)+maxLen); len(last) != 1 || last[0].Values["id"] != want {
		t.Errorf("newest entry = %v, want id %s", last, want)
	}
}

// Downstream consumers read the stream with a consumer group.
func TestStreamConsumerGroup(t *testing.T) {
	ctx := context.Background()
	rs, rdb, _ := newRecords(t)
	recCheck(t, rdb.XGroupCreateMkStream(ctx, rs.StreamKey(), "notifier", "$").Err())

	ids := []string{"g1", "g2", "g3"}
	for i, id := range ids {
		recCreate(t, rs, storage.Record{ID: id, Type: "image:affix"})
		if _, err := rs.Succeed(ctx, id, recSuccess(i)); err != nil {
			t.Fatal(err)
		}
		// A retry's duplicate success is not delivered again.
		if first, err := rs.Succeed(ctx, id, recSuccess(i)); err != nil || first {
			t.Fatalf("duplicate Succeed = %v, %v", first, err)
		}
	}
	streams, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: "notifier", Consumer: "c1", Streams: []string{rs.StreamKey(), ">"}, Count: 10, Block: -1,
	}).Result()
	recCheck(t, err)
	if len(streams) != 1 || len(streams[0].Messages) != len(ids) {
		t.Fatalf("XREADGROUP = %+v, want %d messages", streams, len(ids))
	}
	for i, m := range streams[0].Messages {
		if m.Values["id"] != ids[i] || m.Values["result"] != recSuccess(i).Result || m.Values["layer_digest"] != recSuccess(i).LayerDigest {
			t.Errorf("message %d = %v", i, m.Values)
		}
		recCheck(t, rdb.XAck(ctx, rs.StreamKey(), "notifier", m.ID).Err())
	}
	pending, err := rdb.XPending(ctx, rs.StreamKey(), "notifier").Result()
	recCheck(t, err)
	if pending.Count != 0 {
		t.Errorf("pending after ack = %d", pending.Count)
	}
}

func TestRecordList(t *testing.T) {
	ctx := context.Background()
	rs, rdb, _ := newRecords(t)
	ids := func(recs []storage.Record) []string {
		var out []string
		for _, r := range recs {
			out = append(out, r.ID)
		}
		return out
	}
	list := func(s storage.State, limit int) []string {
		t.Helper()
		recs, err := rs.List(ctx, s, limit)
		recCheck(t, err)
		for _, r := range recs {
			if s != "" && r.State != s {
				t.Errorf("List(%s) returned %s in state %s", s, r.ID, r.State)
			}
		}
		return ids(recs)
	}
	for i := 1; i <= 6; i++ {
		recCreate(t, rs, storage.Record{ID: "r" + strconv.Itoa(i), Type: "image:affix"})
		time.Sleep(2 * time.Millisecond)
	}
	recStart(t, rs, "r2", 1)
	recStart(t, rs, "r4", 1)
	recStart(t, rs, "r1", 1)
	if _, err := rs.Succeed(ctx, "r4", recSuccess(4)); err != nil {
		t.Fatal(err)
	}
	recCheck(t, rs.Fail(ctx, "r1", "bad input", true))

	for _, tc := range []struct {
		state storage.State
		limit int
		want  string
	}{
		{storage.StateQueued, 10, "[r6 r5 r3]"},
		{storage.StateQueued, 2, "[r6 r5]"},
		{storage.StateRunning, 10, "[r2]"},
		{storage.StateSucceeded, 0, "[r4]"},
		{storage.StateFailed, 10, "[r1]"},
		{"", 10, "[r1 r4 r2 r6 r5 r3]"}, // by the time each entered its state
		{"", 3, "[r1 r4 r2]"},
	} {
		if got := fmt.Sprint(list(tc.state, tc.limit)); got != tc.want {
			t.Errorf("List(%q, %d) = %s, want %s", tc.state, tc.limit, got, tc.want)
		}
	}
	if _, err := rs.List(ctx, "paused", 10); err == nil {
		t.Error("List(unknown state): no error")
	}

	// Records expire; their index entries go with them.
	queued := recPrefix(t) + "records:queued"
	recCheck(t, rdb.Del(ctx, rs.Key("r6"), rs.Key("r3")).Err())
	if got := fmt.Sprint(list(storage.StateQueued, 1)); got != "[r5]" {
		t.Errorf("List(queued, 1) after expiry = %s, want [r5]", got)
	}
	if got := fmt.Sprint(list(storage.StateQueued, 10)); got != "[r5]" {
		t.Errorf("List(queued) after expiry = %s, want [r5]", got)
	}
	if n := rdb.ZCard(ctx, queued).Val(); n != 1 {
		t.Errorf("queued index has %d members, want 1 (expired ones pruned)", n)
	}
}

// Writes prune index members of expired records even when nobody lists.
func TestRecordIndexPrunedOnWrite(t *testing.T) {
	ctx := context.Background()
	rs, rdb, _ := newRecords(t)
	succeeded := recPrefix(t) + "records:succeeded"
	for i := range 30 {
		id := "old-" + strconv.Itoa(i)
		if _, err := rs.Succeed(ctx, id, recSuccess(i)); err != nil {
			t.Fatal(err)
		}
		recCheck(t, rdb.Del(ctx, rs.Key(id)).Err()) // expired
	}
	for i := range 5 {
		if _, err := rs.Succeed(ctx, "new-"+strconv.Itoa(i), recSuccess(i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := rdb.ZCard(ctx, succeeded).Val(); n > 10 {
		t.Errorf("succeeded index has %d members after writes, want the expired ones mostly pruned", n)
	}
}
