package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/storage"
)

// Enqueuer puts tasks on the queues and records them.
type Enqueuer struct {
	client    *asynq.Client
	inspector *asynq.Inspector
	records   RecordStore
	policies  map[string]Policy
}

// NewEnqueuer uses rdb for the queues and tasks for each type's timeout and
// retries.
func NewEnqueuer(rdb redis.UniversalClient, records RecordStore, tasks config.Tasks) *Enqueuer {
	return &Enqueuer{
		client: asynq.NewClientFromRedisClient(rdb), inspector: asynq.NewInspectorFromRedisClient(rdb),
		records: records, policies: Policies(tasks),
	}
}

// Enqueued says what became of an enqueue.
type Enqueued struct {
	ID       string        `json:"id"`
	Queue    string        `json:"queue"`
	Existing bool          `json:"existing"` // already queued, running or done: nothing was added
	State    storage.State `json:"state"`
}

// Request is one task to enqueue with what its record keeps.
type Request struct {
	Payload  Payload
	Queue    string
	EventID  string
	Metadata json.RawMessage
	// CallbackURL is kept in the record for the result callback.
	CallbackURL string
}

// Enqueue adds the task unless a task with its id is already queued or has
// succeeded: a duplicate is reported as Existing with the current state,
// not as an error.
func (e *Enqueuer) Enqueue(ctx context.Context, r Request) (Enqueued, error) {
	task, err := NewTask(r.Payload)
	if err != nil {
		return Enqueued{}, err
	}
	id := r.Payload.TaskID()
	out := Enqueued{ID: id, Queue: r.Queue, State: storage.StateQueued}
	if _, known := config.DefaultQueues[r.Queue]; !known {
		return out, fmt.Errorf("unknown queue %q: use publish, ops or backfill", r.Queue)
	}
	if rec, err := e.records.Get(ctx, id); err == nil && rec.State == storage.StateSucceeded {
		out.Existing, out.State, out.Queue = true, rec.State, rec.Queue
		return out, nil
	}
	pol := e.policies[task.Type()]
	_, err = e.client.EnqueueContext(ctx, task, asynq.Queue(r.Queue), asynq.Timeout(pol.Timeout),
		asynq.MaxRetry(pol.MaxRetry), asynq.Retention(24*time.Hour))
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		out.Existing = true
		if rec, err := e.records.Get(ctx, id); err == nil {
			out.State, out.Queue = rec.State, rec.Queue
		}
		return out, nil
	case err != nil:
		return out, fmt.Errorf("enqueueing %s: %w", id, err)
	}
	if _, err := e.records.Create(ctx, storage.Record{
		ID: id, Type: task.Type(), Queue: r.Queue, EventID: r.EventID, Inputs: task.Payload(), Metadata: r.Metadata,
		CallbackURL: r.CallbackURL,
	}); err != nil {
		return out, fmt.Errorf("recording %s (it is queued): %w", id, err)
	}
	return out, nil
}

// Close releases the Redis connections of the client and inspector.
func (e *Enqueuer) Close() error {
	return errors.Join(e.client.Close(), e.inspector.Close())
}

// Retry moves an archived (failed) task back to pending.
func (e *Enqueuer) Retry(ctx context.Context, id string) error {
	q, info, err := e.find(id)
	if err != nil {
		return err
	}
	if info.State != asynq.TaskStateArchived && info.State != asynq.TaskStateRetry {
		return fmt.Errorf("task %s is %s; only failed (archived) or retrying tasks can be retried", id, info.State)
	}
	return e.inspector.RunTask(q, id)
}

// Cancel stops a task for good: a running one has its context cancelled
// (its handler stops all I/O) and, once it has stopped, is archived instead
// of retried; a waiting one is archived at once. `enqueue retry` can run it
// again.
func (e *Enqueuer) Cancel(ctx context.Context, id string) error {
	q, info, err := e.find(id)
	if err != nil {
		return err
	}
	if info.State == asynq.TaskStateActive {
		if err := e.inspector.CancelProcessing(id); err != nil {
			return fmt.Errorf("cancelling %s: %w", id, err)
		}
		// asynq moves a cancelled task to retry; wait for that, then archive.
		for info.State == asynq.TaskStateActive {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
			if info, err = e.inspector.GetTaskInfo(q, id); err != nil {
				return fmt.Errorf("following %s after cancelling it: %w", id, err)
			}
		}
	}
	if info.State != asynq.TaskStateArchived && info.State != asynq.TaskStateCompleted {
		if err := e.inspector.ArchiveTask(q, id); err != nil {
			return fmt.Errorf("archiving %s: %w", id, err)
		}
	}
	return e.records.Fail(ctx, id, "cancelled by an operator", true)
}

// find locates a task in any queue.
func (e *Enqueuer) find(id string) (string, *asynq.TaskInfo, error) {
	for q := range config.DefaultQueues {
		if info, err := e.inspector.GetTaskInfo(q, id); err == nil {
			return q, info, nil
		}
	}
	return "", nil, fmt.Errorf("no task %s in any queue (finished tasks are kept 24h; its record may still exist)", id)
}
