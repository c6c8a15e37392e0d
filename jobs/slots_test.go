package jobs

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/jobs/task"
	"github.com/r8im/r8im/storage"
)

// TestRegistryBusyLeavesRecordUntouched: a recompression that finds every
// slot of its registry taken goes back to the queue before its record is
// started. The record stays queued with no attempt and no error, and asynq
// does not count the attempt as a retry.
func TestRegistryBusyLeavesRecordUntouched(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t).Addr})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	records := storage.NewRecords(rdb, time.Hour)
	slots := storage.NewSemaphore(rdb)
	// Another task holds the one slot of registry.example.com for the test.
	if got, err := slots.TryAcquire(ctx, "registry:registry.example.com", "someone-else", 1, time.Now().Add(time.Hour)); err != nil || !got {
		t.Fatalf("taking the slot: %v, %v", got, err)
	}
	slotWait = 100 * time.Millisecond // before any server runs
	t.Cleanup(func() { slotWait = 30 * time.Second })

	enq := NewEnqueuer(rdb, records, config.NewEnqueue().Tasks)
	t.Cleanup(func() { enq.Close() })
	p := task.ZstdPayload{Source: "registry.example.com/m/a@sha256:" + strings.Repeat("0", 64), Dest: "registry.example.com/m/a:z"}
	res, err := enq.Enqueue(ctx, task.Request{Payload: p, Queue: task.QueueBackfill})
	if err != nil {
		t.Fatal(err)
	}
	h := &Handler{Records: records, Slots: slots, RegistryConcurrency: 1}
	srv := NewServer(rdb, ServerConfig{Concurrency: 1, Queues: config.DefaultQueues, ShutdownTimeout: time.Second}, h)
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(sctx) }()
	t.Cleanup(func() { stop(); <-done })

	insp := asynq.NewInspectorFromRedisClient(rdb)
	var info *asynq.TaskInfo
	testenv.Eventually(t, 30*time.Second, "the task to find its registry busy", func() (bool, string) {
		info, err = insp.GetTaskInfo(task.QueueBackfill, res.ID)
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(info.LastErr, "registry busy"), info.State.String() + " " + info.LastErr
	})
	if info.Retried != 0 {
		t.Errorf("asynq counted %d retries; a busy registry is not a failure", info.Retried)
	}
	rec, err := records.Get(ctx, res.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != storage.StateQueued || rec.Attempts != 0 || rec.LastError != "" || rec.StartedAt != nil {
		t.Errorf("record %+v; want it queued, never started", rec)
	}
}
