package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/config"
)

// State is where a publish is in its life.
type State string

// The states of a record. Transitions: queued → running → succeeded or
// failed; a failed record may run again (a task re-run by an operator); a
// succeeded record never changes again.
const (
	StateQueued    State = "queued"
	StateRunning   State = "running"
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed"
)

// recordStates lists every State, in the order of the index keys the scripts get.
var recordStates = [...]State{StateQueued, StateRunning, StateSucceeded, StateFailed}

func (s State) valid() bool {
	for _, v := range recordStates {
		if s == v {
			return true
		}
	}
	return false
}

// PublishedStream is the Redis stream (with the default key prefix) that
// gets one entry per succeeded publish, exactly once per record. Entries
// carry the fields id, type, event_id (when set), result, base_digest,
// layer_digest and finished_at (RFC 3339). Consumers read it with consumer
// groups (XREADGROUP); it is trimmed to about WithStreamMaxLen entries.
const PublishedStream = "r8im:published"

// DefaultStreamMaxLen is the approximate length PublishedStream is trimmed to.
const DefaultStreamMaxLen = 100_000

// DefaultListLimit is how many records List returns when limit <= 0.
const DefaultListLimit = 100

// defaultKeyPrefix prefixes every key the store writes.
const defaultKeyPrefix = "r8im:"

// ErrNoRecord is returned by Get for an unknown (or expired) record id.
var ErrNoRecord = errors.New("no such record")

// Record is the system of record of one publish, keyed by task id (= the
// event id for events). Records never contain credentials: the payloads they
// copy carry ids and references only. Each field's `redis` tag names its
// field in the record's hash, the same as in its JSON; records_hash.go says
// how values are stored.
type Record struct {
	ID      string `json:"id" redis:"id"`
	Type    string `json:"type" redis:"type"` // "image:affix", ...
	Queue   string `json:"queue" redis:"queue"`
	EventID string `json:"event_id,omitempty" redis:"event_id"`
	// CallbackURL is where the final record is to be POSTed (from the
	// event); kept from enqueue on.
	CallbackURL string          `json:"callback_url,omitempty" redis:"callback_url"`
	State       State           `json:"state" redis:"state"`
	Inputs      json.RawMessage `json:"inputs,omitempty" redis:"inputs"`     // the task payload
	Metadata    json.RawMessage `json:"metadata,omitempty" redis:"metadata"` // free-form, from the event

	BaseDigest       string `json:"base_digest,omitempty" redis:"base_digest"` // resolved base repo@sha256:…
	Result           string `json:"result,omitempty" redis:"result"`           // repo@sha256:…
	LayerDigest      string `json:"layer_digest,omitempty" redis:"layer_digest"`
	LayerDiffID      string `json:"layer_diff_id,omitempty" redis:"layer_diff_id"`
	LayerSize        int64  `json:"layer_size,omitempty" redis:"layer_size"`
	UncompressedSize int64  `json:"uncompressed_size,omitempty" redis:"uncompressed_size"`
	UploadedBytes    int64  `json:"uploaded_bytes,omitempty" redis:"uploaded_bytes"`
	MountedBytes     int64  `json:"mounted_bytes,omitempty" redis:"mounted_bytes"`
	DownloadedBytes  int64  `json:"downloaded_bytes,omitempty" redis:"downloaded_bytes"`
	// RefusedMountBytes: base blobs the registry would not mount, copied.
	RefusedMountBytes int64 `json:"refused_mount_bytes,omitempty" redis:"refused_mount_bytes"`
	// SavedBytes is what a recompression saved: old minus new layer sizes.
	SavedBytes int64 `json:"saved_bytes,omitempty" redis:"saved_bytes"`
	// ReusedLayers counts layers whose conversion the shared-layer cache
	// already held (mounted, not recompressed).
	ReusedLayers int64              `json:"reused_layers,omitempty" redis:"reused_layers"`
	Stages       map[string]float64 `json:"stages,omitempty" redis:"stages"` // seconds per stage
	// Notes say where the transfer did not go as planned: an upload
	// resumed, started again, sent in one request after chunking was
	// refused, with smaller chunks after a 413, a mount refused.
	Notes []string `json:"notes,omitempty" redis:"notes"`
	// Layers lists the weights layers of an affix, in image order.
	Layers []LayerRecord `json:"layers,omitempty" redis:"layers"`

	Attempts      int    `json:"attempts" redis:"attempts"`
	LastError     string `json:"last_error,omitempty" redis:"last_error"`
	ProgressDone  int64  `json:"progress_done,omitempty" redis:"progress_done"`
	ProgressTotal int64  `json:"progress_total,omitempty" redis:"progress_total"`

	CreatedAt  time.Time  `json:"created_at" redis:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at" redis:"updated_at"`
	StartedAt  *time.Time `json:"started_at,omitempty" redis:"started_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty" redis:"finished_at"`
}

// Success is what a finished publish reports. Succeed stores every field
// with a `redis` tag under that name, which is the name of the Record
// field it comes back in; a field tagged "-" is not stored.
type Success struct {
	Result            string             `redis:"result"` // repo@sha256:… (required)
	BaseDigest        string             `redis:"base_digest"`
	LayerDigest       string             `redis:"layer_digest"`
	LayerDiffID       string             `redis:"layer_diff_id"`
	LayerSize         int64              `redis:"layer_size"`
	UncompressedSize  int64              `redis:"uncompressed_size"`
	UploadedBytes     int64              `redis:"uploaded_bytes"`
	MountedBytes      int64              `redis:"mounted_bytes"`
	DownloadedBytes   int64              `redis:"downloaded_bytes"`
	SkippedBytes      int64              `redis:"-"`                   // blobs the registry already had (not stored; metrics)
	RefusedMountBytes int64              `redis:"refused_mount_bytes"` // base blobs the registry would not mount, copied
	SavedBytes        int64              `redis:"saved_bytes"`         // recompression: old minus new layer sizes
	ReusedLayers      int64              `redis:"reused_layers"`       // recompression: conversions taken from the shared-layer cache
	Stages            map[string]float64 `redis:"stages"`              // seconds per stage
	Notes             []string           `redis:"notes"`               // imageops.Transfer.Notes
	Layers            []LayerRecord      `redis:"layers"`              // the weights layers of an affix
}

// LayerRecord is one weights layer of a publish: its blob, the files it
// holds, and how it got into the registry (uploaded, found, mounted; cached
// when its digest came from the layer-digest cache, nothing read).
type LayerRecord struct {
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	MediaType string `json:"media_type"`
	Files     int    `json:"files"`
	Source    string `json:"source"`
	Cached    bool   `json:"cached,omitempty"`
	ReadBytes int64  `json:"read_bytes"`
}

// Records keeps publish records in Redis: one hash per record
// (<prefix>record:<id>), a sorted set per state (<prefix>records:<state>,
// scored by the time the record entered that state) and the
// PublishedStream. Every transition is one Lua script, so it is atomic and
// never half-written. The scripts reach record keys they are not given
// (pruning the indexes), so Redis Cluster is not supported; a single server
// or Sentinel is. Times come from the writing process's clock.
type Records struct {
	rdb       redis.UniversalClient
	ttl       time.Duration
	maxLen    int64
	prefix    string
	now       func() time.Time
	recPrefix string   // <prefix>record:
	index     []string // <prefix>records:<state>, in the order of recordStates
}

// RecordsOption configures NewRecords.
type RecordsOption func(*Records)

// WithStreamMaxLen sets the approximate length (XADD MAXLEN ~) the
// published stream is trimmed to. Default DefaultStreamMaxLen; n <= 0 keeps
// the default.
func WithStreamMaxLen(n int64) RecordsOption {
	return func(r *Records) {
		if n > 0 {
			r.maxLen = n
		}
	}
}

// WithKeyPrefix replaces the "r8im:" prefix of every key (records, indexes
// and the stream, which becomes prefix+"published"); tests use it to share
// one Redis. Default "r8im:".
func WithKeyPrefix(p string) RecordsOption {
	return func(r *Records) { r.prefix = p }
}

// NewRecords returns the record store in rdb. Every write refreshes the
// record's expiry to ttl (config.DefaultRecordTTL, 30 days, when ttl <= 0).
func NewRecords(rdb redis.UniversalClient, ttl time.Duration, opts ...RecordsOption) *Records {
	if ttl <= 0 {
		ttl = config.DefaultRecordTTL
	}
	r := &Records{rdb: rdb, ttl: ttl, maxLen: DefaultStreamMaxLen, prefix: defaultKeyPrefix, now: time.Now}
	for _, o := range opts {
		o(r)
	}
	r.recPrefix = r.prefix + "record:"
	for _, s := range recordStates {
		r.index = append(r.index, r.prefix+"records:"+string(s))
	}
	return r
}

// StreamKey is the key of the published stream: PublishedStream unless
// WithKeyPrefix changed the prefix.
func (r *Records) StreamKey() string { return r.prefix + "published" }

// Key is the key of the hash holding record id.
func (r *Records) Key(id string) string { return r.recPrefix + id }

// keys are the KEYS of every transition script: the record, the four state
// indexes, the stream.
func (r *Records) keys(id string) []string {
	keys := make([]string, 0, 2+len(r.index))
	keys = append(keys, r.Key(id))
	keys = append(keys, r.index...)
	return append(keys, r.StreamKey())
}

// args starts the ARGV of every transition script: id, now (RFC 3339), now
// as the index score (µs), TTL (ms), record key prefix.
func (r *Records) args(id string, rest ...any) []any {
	now := r.now().UTC()
	return append([]any{id, now.Format(time.RFC3339Nano), now.UnixMicro(), r.ttl.Milliseconds(), r.recPrefix}, rest...)
}

// ErrRecordConflict marks a Create whose record exists with other values.
var ErrRecordConflict = errors.New("the record exists with other values")

// ConflictError is returned by Create when the record exists and some of
// the fields given hold other values in it: Fields names them (as in
// Record's JSON: type, event_id, callback_url, inputs, metadata).
type ConflictError struct {
	ID     string
	Fields []string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("record %s exists with other %s", e.ID, strings.Join(e.Fields, ", "))
}

// Unwrap makes errors.Is(err, ErrRecordConflict) hold.
func (e *ConflictError) Unwrap() error { return ErrRecordConflict }

// Create stores rec as a queued record and returns created == true, unless
// a record with its ID exists. Then it fills in, atomically, the fields
// the record lacks (a bare record made by Start or Fail has none of Type,
// EventID, CallbackURL, Inputs or Metadata) and returns false; if a field
// the record has holds another value (Queue excepted: a task keeps its
// queue), it writes nothing and returns a *ConflictError. It writes ID,
// Type, Queue, EventID, CallbackURL, Inputs and Metadata (compared byte
// for byte); the store sets State (queued), Attempts (0) and
// CreatedAt/UpdatedAt, and ignores the other fields, which only the
// transitions write.
func (r *Records) Create(ctx context.Context, rec Record) (created bool, err error) {
	if rec.ID == "" {
		return false, errors.New("creating record: empty id")
	}
	for name, raw := range map[string]json.RawMessage{"inputs": rec.Inputs, "metadata": rec.Metadata} {
		if len(raw) > 0 && !json.Valid(raw) {
			return false, fmt.Errorf("creating record %s: %s is not valid JSON", rec.ID, name)
		}
	}
	fields, err := hashFields(Record{ID: rec.ID, Type: rec.Type, Queue: rec.Queue, EventID: rec.EventID,
		CallbackURL: rec.CallbackURL, Inputs: rec.Inputs, Metadata: rec.Metadata})
	if err != nil {
		return false, fmt.Errorf("creating record %s: %w", rec.ID, err)
	}
	fields = append(fields, "attempts", 0)
	res, err := createScript.Run(ctx, r.rdb, r.keys(rec.ID), r.args(rec.ID, fields...)...).Slice()
	if err != nil {
		return false, fmt.Errorf("creating record %s: %w", rec.ID, err)
	}
	if len(res) == 0 {
		return false, fmt.Errorf("creating record %s: the script answered nothing", rec.ID)
	}
	switch n, _ := res[0].(int64); n {
	case 1:
		return true, nil
	case 0:
		return false, nil
	}
	ce := &ConflictError{ID: rec.ID}
	for _, f := range res[1:] {
		if s, ok := f.(string); ok {
			ce.Fields = append(ce.Fields, s)
		}
	}
	return false, ce
}

// Get returns record id, or ErrNoRecord.
func (r *Records) Get(ctx context.Context, id string) (*Record, error) {
	h, err := r.rdb.HGetAll(ctx, r.Key(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("getting record %s: %w", id, err)
	}
	if len(h) == 0 {
		return nil, fmt.Errorf("getting record %s: %w", id, ErrNoRecord)
	}
	rec, err := decodeRecord(h)
	if err != nil {
		return nil, fmt.Errorf("getting record %s: %w", id, err)
	}
	return rec, nil
}

// Start marks record id running its attempt-th attempt (Attempts =
// attempt, StartedAt = now; FinishedAt and progress are cleared). It does
// nothing to a succeeded record, and says so: succeeded is true when the
// record had already succeeded. A missing record is created bare (id and
// times only): to keep Type, Queue and Inputs of a task enqueued by other
// means, call Create (a no-op when the record exists) before Start.
func (r *Records) Start(ctx context.Context, id string, attempt int) (succeeded bool, err error) {
	n, err := startScript.Run(ctx, r.rdb, r.keys(id), r.args(id, attempt)...).Int()
	if err != nil {
		return false, fmt.Errorf("starting record %s: %w", id, err)
	}
	return n == 0, nil
}

// Progress records done of total bytes. It is one small script (two fields
// and updated_at), but callers should still throttle it (about once a
// second). It does nothing to a missing or succeeded record.
func (r *Records) Progress(ctx context.Context, id string, done, total int64) error {
	if err := progressScript.Run(ctx, r.rdb, []string{r.Key(id)}, r.args(id, done, total)...).Err(); err != nil {
		return fmt.Errorf("recording progress of %s: %w", id, err)
	}
	return nil
}

// Succeed records the outcome of record id exactly once: the first call
// writes s, state succeeded and FinishedAt, appends one entry to the
// published stream and returns first == true, all atomically; later calls
// (retries, duplicate deliveries, concurrent copies) write nothing and
// return false. A missing record is created. LastError of an earlier
// attempt is kept.
func (r *Records) Succeed(ctx context.Context, id string, s Success) (first bool, err error) {
	if s.Result == "" {
		return false, fmt.Errorf("succeeding record %s: empty result", id)
	}
	fields, err := hashFields(s)
	if err != nil {
		return false, fmt.Errorf("succeeding record %s: %w", id, err)
	}
	n, err := succeedScript.Run(ctx, r.rdb, r.keys(id), r.args(id, append([]any{r.maxLen}, fields...)...)...).Int()
	if err != nil {
		return false, fmt.Errorf("succeeding record %s: %w", id, err)
	}
	return n == 1, nil
}

// Fail records msg as the last error of record id. A final failure sets
// state failed and FinishedAt; otherwise (a retry follows) the state stays
// as it is (running). A succeeded record is never changed; a missing one is
// created.
func (r *Records) Fail(ctx context.Context, id string, msg string, final bool) error {
	f := 0
	if final {
		f = 1
	}
	if err := failScript.Run(ctx, r.rdb, r.keys(id), r.args(id, msg, f)...).Err(); err != nil {
		return fmt.Errorf("failing record %s: %w", id, err)
	}
	return nil
}

// List returns up to limit records in state (every state when state is
// ""), newest first: ordered by the time each record entered its state
// (created, started, finished). limit <= 0 means DefaultListLimit. Index
// entries whose record has expired are removed on the way.
func (r *Records) List(ctx context.Context, state State, limit int) ([]Record, error) {
	if limit <= 0 {
		limit = DefaultListLimit
	}
	if state != "" && !state.valid() {
		return nil, fmt.Errorf("listing records: unknown state %q", state)
	}
	var all []scoredRecord
	for i, s := range recordStates {
		if state != "" && s != state {
			continue
		}
		got, err := r.listState(ctx, r.index[i], s, limit)
		if err != nil {
			return nil, fmt.Errorf("listing %s records: %w", s, err)
		}
		all = append(all, got...)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].score > all[j].score })
	if len(all) > limit {
		all = all[:limit]
	}
	out := make([]Record, len(all))
	for i := range all {
		out[i] = *all[i].rec
	}
	return out, nil
}

type scoredRecord struct {
	rec   *Record
	score float64
}

// listState reads index newest first until it has limit live records of
// state, then prunes the members it found stale (record gone, or no longer
// in state) — atomically, so a record that came back meanwhile keeps its
// entry.
func (r *Records) listState(ctx context.Context, index string, state State, limit int) ([]scoredRecord, error) {
	page := int64(max(limit, 50))
	var out []scoredRecord
	var stale []any
	for off := int64(0); len(out) < limit; off += page {
		zs, err := r.rdb.ZRevRangeWithScores(ctx, index, off, off+page-1).Result()
		if err != nil {
			return nil, err
		}
		if len(zs) == 0 {
			break
		}
		pipe := r.rdb.Pipeline()
		cmds := make([]*redis.MapStringStringCmd, len(zs))
		for i, z := range zs {
			cmds[i] = pipe.HGetAll(ctx, r.Key(z.Member.(string)))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, err
		}
		for i, z := range zs {
			id := z.Member.(string)
			h := cmds[i].Val()
			if len(h) == 0 || State(h["state"]) != state {
				stale = append(stale, id)
				continue
			}
			if len(out) == limit {
				continue
			}
			rec, err := decodeRecord(h)
			if err != nil {
				return nil, fmt.Errorf("record %s: %w", id, err)
			}
			out = append(out, scoredRecord{rec, z.Score})
		}
		if int64(len(zs)) < page {
			break
		}
	}
	if len(stale) > 0 {
		if err := pruneScript.Run(ctx, r.rdb, []string{index}, append([]any{r.recPrefix, string(state)}, stale...)...).Err(); err != nil {
			return nil, fmt.Errorf("pruning: %w", err)
		}
	}
	return out, nil
}

// decodeRecord reads a record hash (see hashFields).
func decodeRecord(h map[string]string) (*Record, error) {
	rec := &Record{}
	if err := scanHash(h, rec); err != nil {
		return nil, err
	}
	return rec, nil
}
