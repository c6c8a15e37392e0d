package storage

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/config"
)

// ErrNoBatch means no batch has the given id (never created, or expired).
var ErrNoBatch = errors.New("no such batch")

// ErrBatchExists means a batch id is taken.
var ErrBatchExists = errors.New("batch already exists")

// Batch groups the tasks of one backfill run.
type Batch struct {
	ID          string     `json:"id"`
	Description string     `json:"description,omitempty"` // what was run, for people
	CallbackURL string     `json:"callback_url,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	Sealed      bool       `json:"sealed"`                 // every task has been added
	CompletedAt *time.Time `json:"completed_at,omitempty"` // sealed and every task final
	Skipped     int64      `json:"skipped"`                // images that needed no work
}

// BatchStatus is a batch and where its tasks stand, from their records.
type BatchStatus struct {
	Batch
	Total      int64 `json:"total"`
	Pending    int64 `json:"pending"` // queued, or retrying
	Running    int64 `json:"running"`
	Succeeded  int64 `json:"succeeded"`
	Failed     int64 `json:"failed"`
	SavedBytes int64 `json:"saved_bytes"`
}

// Batches keeps backfill batches in Redis: per batch a hash
// (<prefix>batch:<id>), the set of its task ids (…:tasks) and a hash of
// its finished tasks' final states (…:done); per task the set of batches it
// belongs to (<prefix>task-batches:<task id>), since a re-run backfill adds
// tasks that an earlier batch already holds. Keys expire with the record
// TTL.
type Batches struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
	recs   *Records
}

// NewBatches returns the batches of the tasks whose records are recs, kept
// in the same Redis for ttl after their last change.
func NewBatches(recs *Records, ttl time.Duration) *Batches {
	if ttl <= 0 {
		ttl = config.DefaultRecordTTL
	}
	return &Batches{rdb: recs.rdb, prefix: recs.prefix, ttl: ttl, recs: recs}
}

func (b *Batches) key(id string) string { return b.prefix + "batch:" + id }

// Create records a new batch; ErrBatchExists if the id is taken.
func (b *Batches) Create(ctx context.Context, batch Batch) error {
	if batch.CreatedAt.IsZero() {
		batch.CreatedAt = time.Now()
	}
	key := b.key(batch.ID)
	ok, err := b.rdb.HSetNX(ctx, key, "id", batch.ID).Result()
	if err != nil {
		return fmt.Errorf("creating batch %s: %w", batch.ID, err)
	}
	if !ok {
		return fmt.Errorf("creating batch %s: %w", batch.ID, ErrBatchExists)
	}
	_, err = b.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, "description", batch.Description, "callback_url", batch.CallbackURL,
			"created_at", batch.CreatedAt.UTC().Format(time.RFC3339Nano), "skipped", 0)
		p.PExpire(ctx, key, b.ttl)
		return nil
	})
	if err != nil {
		return fmt.Errorf("creating batch %s: %w", batch.ID, err)
	}
	return nil
}

// Add puts task ids in batch id.
func (b *Batches) Add(ctx context.Context, id string, taskIDs ...string) error {
	if len(taskIDs) == 0 {
		return nil
	}
	members := make([]any, len(taskIDs))
	for i, t := range taskIDs {
		members[i] = t
	}
	_, err := b.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, b.key(id)+":tasks", members...)
		p.PExpire(ctx, b.key(id)+":tasks", b.ttl)
		for _, t := range taskIDs {
			k := b.prefix + "task-batches:" + t
			p.SAdd(ctx, k, id)
			p.PExpire(ctx, k, b.ttl)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("adding tasks to batch %s: %w", id, err)
	}
	return nil
}

// Remove takes task ids out of batch id (their enqueue failed).
func (b *Batches) Remove(ctx context.Context, id string, taskIDs ...string) error {
	_, err := b.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, t := range taskIDs {
			p.SRem(ctx, b.key(id)+":tasks", t)
			p.SRem(ctx, b.prefix+"task-batches:"+t, id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("removing tasks from batch %s: %w", id, err)
	}
	return nil
}

// Skip counts n images of batch id that needed no work.
func (b *Batches) Skip(ctx context.Context, id string, n int64) error {
	if err := b.rdb.HIncrBy(ctx, b.key(id), "skipped", n).Err(); err != nil {
		return fmt.Errorf("counting skipped images of batch %s: %w", id, err)
	}
	return nil
}

// finishScript records that task ARGV[2] of each batch in KEYS[1] ended in
// state ARGV[3] and completes, once, every sealed batch whose tasks have all
// ended. It returns the ids of the batches it completed.
// ARGV: 1 key prefix, 2 task id ("" when sealing), 3 state, 4 now, 5 TTL (ms).
var finishScript = redis.NewScript(`
local prefix, task, state, now, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local batches = {}
if task == '' then
  batches = {KEYS[1]}
else
  batches = redis.call('SMEMBERS', KEYS[1])
end
local completed = {}
for _, id in ipairs(batches) do
  local meta = prefix .. 'batch:' .. id
  if redis.call('EXISTS', meta) == 1 then
    if task ~= '' then
      redis.call('HSET', meta .. ':done', task, state)
      redis.call('PEXPIRE', meta .. ':done', ttl)
    else
      redis.call('HSET', meta, 'sealed', '1')
    end
    if redis.call('HGET', meta, 'sealed') == '1' and
       redis.call('HLEN', meta .. ':done') >= redis.call('SCARD', meta .. ':tasks') and
       redis.call('HSETNX', meta, 'completed_at', now) == 1 then
      table.insert(completed, id)
    end
  end
end
return completed
`)

// Finished records that taskID reached final state (succeeded or failed)
// in every batch holding it. It returns the batches this completed (sealed,
// every task final); each batch completes once.
func (b *Batches) Finished(ctx context.Context, taskID string, state State) ([]string, error) {
	return b.finish(ctx, b.prefix+"task-batches:"+taskID, taskID, string(state))
}

// Seal marks batch id as holding all its tasks; it reports whether that
// completed it (every task had already ended).
func (b *Batches) Seal(ctx context.Context, id string) (completed bool, err error) {
	done, err := b.finish(ctx, id, "", "")
	return len(done) == 1, err
}

func (b *Batches) finish(ctx context.Context, key, task, state string) ([]string, error) {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	ids, err := finishScript.Run(ctx, b.rdb, []string{key}, b.prefix, task, state, now, b.ttl.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("recording the end of %s%s in its batches: %w", task, key, err)
	}
	return ids, nil
}

// Get returns batch id.
func (b *Batches) Get(ctx context.Context, id string) (*Batch, error) {
	h, err := b.rdb.HGetAll(ctx, b.key(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("getting batch %s: %w", id, err)
	}
	if len(h) == 0 {
		return nil, fmt.Errorf("getting batch %s: %w", id, ErrNoBatch)
	}
	batch := &Batch{ID: id, Description: h["description"], CallbackURL: h["callback_url"], Sealed: h["sealed"] == "1"}
	batch.CreatedAt, _ = time.Parse(time.RFC3339Nano, h["created_at"])
	if t, err := time.Parse(time.RFC3339Nano, h["completed_at"]); err == nil {
		batch.CompletedAt = &t
	}
	batch.Skipped, _ = strconv.ParseInt(h["skipped"], 10, 64)
	return batch, nil
}

// Tasks returns the task ids of batch id.
func (b *Batches) Tasks(ctx context.Context, id string) ([]string, error) {
	ids, err := b.rdb.SMembers(ctx, b.key(id)+":tasks").Result()
	if err != nil {
		return nil, fmt.Errorf("listing the tasks of batch %s: %w", id, err)
	}
	return ids, nil
}

// Status returns batch id with its tasks counted by the state of their
// records (a task with no record yet is pending).
func (b *Batches) Status(ctx context.Context, id string) (*BatchStatus, error) {
	batch, err := b.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	ids, err := b.Tasks(ctx, id)
	if err != nil {
		return nil, err
	}
	st := &BatchStatus{Batch: *batch, Total: int64(len(ids))}
	const chunk = 500
	for start := 0; start < len(ids); start += chunk {
		part := ids[start:min(start+chunk, len(ids))]
		cmds := make([]*redis.SliceCmd, len(part))
		_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, t := range part {
				cmds[i] = p.HMGet(ctx, b.recs.Key(t), "state", "saved_bytes")
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("reading the records of batch %s: %w", id, err)
		}
		for _, c := range cmds {
			v := c.Val()
			state, _ := v[0].(string)
			switch State(state) {
			case StateRunning:
				st.Running++
			case StateSucceeded:
				st.Succeeded++
				if s, ok := v[1].(string); ok {
					n, _ := strconv.ParseInt(s, 10, 64)
					st.SavedBytes += n
				}
			case StateFailed:
				st.Failed++
			default:
				st.Pending++
			}
		}
	}
	return st, nil
}
