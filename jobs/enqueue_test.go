package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/jobs/task"
	"github.com/r8im/r8im/storage"
)

// workerFirst is the real record store with a worker's first writes (the
// handler's Create of a bare record, then Start) run just before the
// enqueuer's own Create: the interleaving in which a worker picks a task up
// before its enqueuer has recorded it.
type workerFirst struct {
	*storage.Records
	t *testing.T
}

func (w workerFirst) Create(ctx context.Context, rec storage.Record) (bool, error) {
	w.t.Helper()
	if _, err := w.Records.Create(ctx, storage.Record{ID: rec.ID, Type: rec.Type, Queue: rec.Queue, Inputs: rec.Inputs}); err != nil {
		w.t.Fatalf("the worker's Create: %v", err)
	}
	if _, err := w.Records.Start(ctx, rec.ID, 1); err != nil {
		w.t.Fatalf("the worker's Start: %v", err)
	}
	return w.Records.Create(ctx, rec)
}

// newEnqueuer is an Enqueuer on a fresh real Redis, over records wrapped
// by wrap (nil: as they are).
func newEnqueuer(t *testing.T, wrap func(*storage.Records) jobs.RecordStore) (*jobs.Enqueuer, *storage.Records, *redis.Client) {
	t.Helper()
	rdb := testenv.Redis(t).Client(t)
	records := storage.NewRecords(rdb, time.Hour)
	var rs jobs.RecordStore = records
	if wrap != nil {
		rs = wrap(records)
	}
	enq := jobs.NewEnqueuer(rdb, rs, config.NewEnqueue().Tasks)
	t.Cleanup(func() { enq.Close() })
	return enq, records, rdb
}

func affixRequest(eventID, weights string) task.Request {
	return task.Request{Queue: task.QueuePublish, EventID: eventID, Metadata: json.RawMessage(`{"run": "` + eventID + `"}`),
		CallbackURL: "https://hooks.example.com/" + eventID,
		Payload: task.AffixPayload{EventID: eventID, Base: "r8.im/acme/base:v1", Weights: weights,
			Dest: "r8.im/acme/ft:" + eventID, Created: created}}
}

// TestEnqueueKeepsTheCallbackWhenAWorkerIsFirst: the event id, metadata and
// callback URL reach the record even when a worker wrote it first.
func TestEnqueueKeepsTheCallbackWhenAWorkerIsFirst(t *testing.T) {
	enq, records, _ := newEnqueuer(t, func(r *storage.Records) jobs.RecordStore { return workerFirst{r, t} })
	if _, err := enq.Enqueue(context.Background(), affixRequest("run-1", "s3://w/run-1.tar")); err != nil {
		t.Fatal(err)
	}
	rec, err := records.Get(context.Background(), "affix:run-1")
	if err != nil {
		t.Fatal(err)
	}
	if rec.EventID != "run-1" || rec.CallbackURL != "https://hooks.example.com/run-1" || string(rec.Metadata) != `{"run":"run-1"}` ||
		rec.Type != task.TypeAffix || rec.State != storage.StateRunning {
		t.Fatalf("record %+v: want the event id, callback URL and metadata filled in, the worker's state kept", rec)
	}
}

// TestEnqueueRefusesAnIDTakenByOtherWork: the same event id with other
// inputs is refused naming the fields, and nothing more is queued; the
// same request again (metadata laid out differently) is a duplicate.
func TestEnqueueRefusesAnIDTakenByOtherWork(t *testing.T) {
	enq, _, rdb := newEnqueuer(t, nil)
	ctx := context.Background()
	if _, err := enq.Enqueue(ctx, affixRequest("run-2", "s3://w/run-2.tar")); err != nil {
		t.Fatal(err)
	}
	again := affixRequest("run-2", "s3://w/run-2.tar")
	again.Metadata = json.RawMessage(`{ "run" : "run-2" }`)
	if res, err := enq.Enqueue(ctx, again); err != nil || !res.Existing {
		t.Fatalf("the same request again = %+v, %v; want Existing", res, err)
	}
	other := affixRequest("run-2", "s3://w/other.tar")
	other.CallbackURL = "https://hooks.example.com/elsewhere"
	_, err := enq.Enqueue(ctx, other)
	var ce *task.ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, task.ErrConflict) || fmt.Sprint(ce.Fields) != "[callback_url weights]" {
		t.Fatalf("other inputs under the same id = %v; want a ConflictError naming callback_url and weights", err)
	}
	if info, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo(task.QueuePublish); err != nil || info.Size != 1 {
		t.Fatalf("publish queue %+v, %v; want exactly one task", info, err)
	}
}

// TestEnqueueRefusesWhatTheWorkerWould: a payload imageops would refuse is
// refused at enqueue, with the rule's own message.
func TestEnqueueRefusesWhatTheWorkerWould(t *testing.T) {
	enq, _, _ := newEnqueuer(t, nil)
	for _, tc := range []struct {
		name   string
		change func(*task.AffixPayload)
		want   string
	}{
		{"gzip level -1", func(p *task.AffixPayload) { p.Compression, p.Level = "gzip", -1 }, "gzip level -1: use 1 (fastest) to 9"},
		{"level without compression", func(p *task.AffixPayload) { p.Compression, p.Level = "none", 3 }, "level 3 makes no sense"},
		{"target with ..", func(p *task.AffixPayload) { p.Target = "/src/../etc" }, "target"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := affixRequest("run-3-"+strings.ReplaceAll(tc.name, " ", "-"), "s3://w/run-3.tar")
			p := r.Payload.(task.AffixPayload)
			tc.change(&p)
			r.Payload = p
			_, err := enq.Enqueue(context.Background(), r)
			if !errors.Is(err, task.ErrInvalidPayload) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Enqueue = %v; want an invalid payload error saying %q", err, tc.want)
			}
		})
	}
}
