package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/jobs/task"
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

// Enqueue writes the task's record (state queued), then adds the task,
// unless its record has succeeded or the task is already queued: a
// duplicate is reported as Existing with the current state, not as an
// error. The record comes first so that a worker that picks the task up
// at once finds the event id, metadata and callback URL; if it got there
// first anyway (a task queued by other means), the record's missing
// fields are filled in. A request whose id is taken by a record with
// other inputs, metadata or callback URL is refused with a
// *task.ConflictError naming them, and nothing is queued.
func (e *Enqueuer) Enqueue(ctx context.Context, r task.Request) (task.Enqueued, error) {
	t, err := NewTask(r.Payload)
	if err != nil {
		return task.Enqueued{}, err
	}
	id := r.Payload.TaskID()
	out := task.Enqueued{ID: id, Queue: r.Queue, State: string(storage.StateQueued)}
	if _, known := config.DefaultQueues[r.Queue]; !known {
		return out, fmt.Errorf("unknown queue %q: use publish, ops or backfill", r.Queue)
	}
	meta, err := canonicalJSON(r.Metadata)
	if err != nil {
		return out, fmt.Errorf("metadata of %s: %w", id, err)
	}
	created, err := e.records.Create(ctx, storage.Record{
		ID: id, Type: t.Type(), Queue: r.Queue, EventID: r.EventID, Inputs: t.Payload(), Metadata: meta,
		CallbackURL: r.CallbackURL,
	})
	var ce *storage.ConflictError
	switch {
	case errors.As(err, &ce):
		if err := e.conflict(ctx, id, ce.Fields, t.Payload(), r.Incidental); err != nil {
			return out, err
		}
	case err != nil:
		return out, fmt.Errorf("recording %s: %w", id, err)
	}
	if !created {
		if rec, err := e.records.Get(ctx, id); err == nil && rec.State == storage.StateSucceeded {
			out.Existing, out.State, out.Queue = true, string(rec.State), rec.Queue
			return out, nil
		}
	}
	pol := e.policies[t.Type()]
	_, err = e.client.EnqueueContext(ctx, t, asynq.Queue(r.Queue), asynq.Timeout(pol.Timeout),
		asynq.MaxRetry(pol.MaxRetry), asynq.Retention(24*time.Hour))
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		out.Existing = true
		if rec, err := e.records.Get(ctx, id); err == nil {
			out.State, out.Queue = string(rec.State), rec.Queue
		}
		return out, nil
	case err != nil:
		return out, fmt.Errorf("enqueueing %s (its record is written; enqueue it again): %w", id, err)
	}
	return out, nil
}

// conflict names the fields that differ (for inputs, the payload fields
// that do), or returns nil when only incidental payload fields do.
func (e *Enqueuer) conflict(ctx context.Context, id string, fields []string, inputs []byte, incidental []string) error {
	ce := &task.ConflictError{ID: id}
	for _, f := range fields {
		if f != "inputs" {
			ce.Fields = append(ce.Fields, f)
			continue
		}
		rec, err := e.records.Get(ctx, id)
		if err != nil {
			ce.Fields = append(ce.Fields, f)
			continue
		}
		for _, k := range diffKeys(rec.Inputs, inputs) {
			if !slices.Contains(incidental, k) {
				ce.Fields = append(ce.Fields, k)
			}
		}
	}
	if len(ce.Fields) == 0 {
		return nil
	}
	return ce
}

// diffKeys lists the top-level members in which two JSON objects differ,
// sorted; "inputs" when either is not an object.
func diffKeys(a, b []byte) []string {
	var ma, mb map[string]json.RawMessage
	if json.Unmarshal(a, &ma) != nil || json.Unmarshal(b, &mb) != nil {
		return []string{"inputs"}
	}
	var out []string
	for k, v := range ma {
		if w, ok := mb[k]; !ok || !bytes.Equal(v, w) {
			out = append(out, k)
		}
	}
	for k := range mb {
		if _, ok := ma[k]; !ok {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return []string{"inputs"}
	}
	sort.Strings(out)
	return out
}

// canonicalJSON re-encodes a JSON value with sorted keys and no spaces
// (numbers kept as written), so a resent event whose metadata differs only
// in layout is the same request.
func canonicalJSON(raw json.RawMessage) (json.RawMessage, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding: %w", err)
	}
	return b, nil
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

// IDForms says what the ids the operator commands take look like.
const IDForms = "a task id (affix:<event id>, remix:<hash>, zstd:<hash>, as enqueue prints it) or the event id of an affix (run-42)"

// ErrUnknownID marks an id that names no record and no queued task.
var ErrUnknownID = errors.New("no task or record")

// ResolveID returns the task id that id names: id itself when a record or
// a queued task has that id, else the affix task of event id
// (affix:<id>) when that exists. Operators know event ids; the task id
// of an event is affix:<event id>. An id that names nothing is
// ErrUnknownID, with a message saying what ids look like.
func (e *Enqueuer) ResolveID(ctx context.Context, id string) (string, error) {
	candidates := []string{id}
	if task.EventIDPattern.MatchString(id) {
		candidates = append(candidates, task.AffixPayload{EventID: id}.TaskID())
	}
	for _, c := range candidates {
		_, err := e.records.Get(ctx, c)
		switch {
		case err == nil:
			return c, nil
		case !errors.Is(err, storage.ErrNoRecord):
			return "", err
		}
		if _, _, err := e.find(c); err == nil {
			return c, nil
		}
	}
	return "", fmt.Errorf("%w with id %q in this Redis: give %s", ErrUnknownID, id, IDForms)
}

// TaskStates are asynq's names for where a task is, as asynqmon shows
// them; TaskIDs lists the tasks in one of them.
var TaskStates = []string{"pending", "active", "scheduled", "retry", "archived", "completed"}

// TaskIDs returns the ids of up to limit tasks in state (one of
// TaskStates) in queue (every queue when ""), queue by queue.
func (e *Enqueuer) TaskIDs(state, queue string, limit int) ([]string, error) {
	list := map[string]func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		"pending": e.inspector.ListPendingTasks, "active": e.inspector.ListActiveTasks,
		"scheduled": e.inspector.ListScheduledTasks, "retry": e.inspector.ListRetryTasks,
		"archived": e.inspector.ListArchivedTasks, "completed": e.inspector.ListCompletedTasks,
	}[state]
	if list == nil {
		return nil, fmt.Errorf("unknown task state %q: use one of %s", state, strings.Join(TaskStates, ", "))
	}
	queues := []string{queue}
	if queue == "" {
		queues = slices.Sorted(maps.Keys(config.DefaultQueues))
	}
	var ids []string
	for _, q := range queues {
		infos, err := list(q, asynq.PageSize(limit))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("listing %s tasks of queue %s: %w", state, q, err)
		}
		for _, ti := range infos {
			ids = append(ids, ti.ID)
		}
	}
	return ids, nil
}
