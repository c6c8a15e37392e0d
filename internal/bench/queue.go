package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/jobs/task"
	"github.com/r8im/r8im/storage"
)

// queueParallel is how many goroutines enqueue at once in the parallel
// enqueue figure.
const queueParallel = 8

// queue measures the producer and consumer sides of the task queue on the
// real redis-server: QueueTasks zstd backfill tasks enqueued through
// jobs.Enqueuer (record lookup, asynq enqueue, record creation: three round
// trips each), one goroutine and then queueParallel at a time; and an
// asynq server with the worker's default concurrency and a handler that
// does nothing draining them, which is the per-task overhead a worker adds.
func (b *bench) queue(ctx context.Context) error {
	rdb := redis.NewClient(&redis.Options{Addr: b.svc.redisAddr, PoolSize: 4 * queueParallel})
	defer rdb.Close()
	enq := jobs.NewEnqueuer(rdb, storage.NewRecords(rdb, 24*time.Hour), config.NewEnqueue().Tasks)
	defer enq.Close()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	concurrency := config.NewWorker().Concurrency

	var processed atomic.Int64
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency: concurrency, Queues: config.DefaultQueues, TaskCheckInterval: 5 * time.Millisecond,
		LogLevel: asynq.ErrorLevel, Logger: quietLogger{},
	})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { processed.Add(1); return nil })); err != nil {
		return fmt.Errorf("starting the no-op server: %w", err)
	}
	defer srv.Shutdown()

	n := b.cfg.QueueTasks
	var seq, par, drain []float64
	batch := 0
	enqueueAll := func(workers int) (float64, error) {
		batch++
		if err := insp.PauseQueue(task.QueueBackfill); err != nil {
			return 0, err
		}
		start := time.Now()
		var g errgroup.Group
		g.SetLimit(workers)
		for i := 0; i < n; i++ {
			p := task.ZstdPayload{Source: fmt.Sprintf("%s/models/m%d@sha256:%s", b.svc.regHost, i%100, fakeDigest(batch, i)),
				Dest: fmt.Sprintf("%s/models/m%d", b.svc.regHost, i%100), BatchID: fmt.Sprintf("bench-%d", batch)}
			g.Go(func() error {
				res, err := enq.Enqueue(ctx, task.Request{Payload: p, Queue: task.QueueBackfill})
				if err == nil && res.Existing {
					err = fmt.Errorf("task %s already existed", res.ID)
				}
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return 0, err
		}
		return float64(n) / time.Since(start).Seconds(), nil
	}
	drainAll := func() (float64, error) {
		before := processed.Load()
		start := time.Now()
		if err := insp.UnpauseQueue(task.QueueBackfill); err != nil {
			return 0, err
		}
		deadline := time.Now().Add(10 * time.Minute)
		for processed.Load()-before < int64(n) {
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("only %d of %d tasks processed in 10 minutes", processed.Load()-before, n)
			}
			time.Sleep(time.Millisecond)
		}
		return float64(n) / time.Since(start).Seconds(), nil
	}
	for i := 1; i <= b.cfg.Runs; i++ {
		b.logf("queue run %d/%d: %d tasks", i, b.cfg.Runs, n)
		for _, w := range []int{1, queueParallel} {
			r, err := enqueueAll(w)
			if err != nil {
				return err
			}
			if w == 1 {
				seq = append(seq, r)
			} else {
				par = append(par, r)
			}
			d, err := drainAll()
			if err != nil {
				return err
			}
			drain = append(drain, d)
		}
	}
	b.add(Result{Case: "queue-enqueue-1", Title: fmt.Sprintf("enqueue %d zstd backfill tasks (jobs.Enqueuer, 1 at a time)", n), Unit: "tasks/s", Runs: seq,
		Note: fmt.Sprintf("%.0f µs per task", 1e6/median(seq))})
	b.add(Result{Case: "queue-enqueue-8", Title: fmt.Sprintf("enqueue %d zstd backfill tasks (%d goroutines)", n, queueParallel), Unit: "tasks/s", Runs: par,
		Note: fmt.Sprintf("%.0f µs per task", 1e6/median(par))})
	b.add(Result{Case: "queue-noop-worker", Title: fmt.Sprintf("asynq server, no-op handler, concurrency %d: tasks processed", concurrency), Unit: "tasks/s", Runs: drain,
		Note: fmt.Sprintf("%.0f µs overhead per task; 2 drains per run", 1e6/median(drain))})
	return nil
}

func fakeDigest(batch, i int) string {
	s := sha256.Sum256(fmt.Appendf(nil, "%d/%d", batch, i))
	return hex.EncodeToString(s[:])
}

// quietLogger drops asynq's logs; errors surface through the figures.
type quietLogger struct{}

var quietOnce sync.Once

func (quietLogger) Debug(...any) {}
func (quietLogger) Info(...any)  {}
func (quietLogger) Warn(...any)  {}
func (quietLogger) Error(args ...any) {
	quietOnce.Do(func() { slog.Error(fmt.Sprint(args...), "component", "asynq") })
}
func (quietLogger) Fatal(args ...any) {
	slog.Error(fmt.Sprint(args...), "component", "asynq", "fatal", true)
}
