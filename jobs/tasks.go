package jobs

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/r8im/r8im/config"
)

// Task types are wire formats: never rename them.
const (
	TypeAffix = "image:affix"
	TypeRemix = "image:remix"
	TypeZstd  = "image:zstd"
)

// Queues, by priority: training events first, operators next, backfills
// with what is left (weights in config.DefaultQueues).
const (
	QueuePublish  = "publish"
	QueueOps      = "ops"
	QueueBackfill = "backfill"
)

// Policy is how long a task type may run and how often it is retried.
type Policy struct {
	Timeout  time.Duration
	MaxRetry int
}

// Policies maps each task type to its policy from the configuration.
func Policies(t config.Tasks) map[string]Policy {
	return map[string]Policy{
		TypeAffix: {Timeout: t.AffixTimeout, MaxRetry: t.AffixMaxRetry},
		TypeRemix: {Timeout: t.RemixTimeout, MaxRetry: t.RemixMaxRetry},
		TypeZstd:  {Timeout: t.ZstdTimeout, MaxRetry: t.ZstdMaxRetry},
	}
}

// Payload is a task's payload: AffixPayload, RemixPayload or ZstdPayload.
type Payload interface {
	Validate() error
	TaskID() string
	Type() string
}

// Type is the task type of an affix.
func (AffixPayload) Type() string { return TypeAffix }

// Type is the task type of a remix.
func (RemixPayload) Type() string { return TypeRemix }

// Type is the task type of a recompression.
func (ZstdPayload) Type() string { return TypeZstd }

// NewTask builds the asynq task for any payload, with its stable id.
func NewTask(p Payload) (*asynq.Task, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return newTask(p.Type(), p, p.TaskID())
}

// NewAffixTask builds the task for p; its id comes from the event id, so the
// same event is never enqueued twice.
func NewAffixTask(p AffixPayload) (*asynq.Task, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return newTask(TypeAffix, p, p.TaskID())
}

// TaskID is the task id of an affix: "affix:" and the event id.
func (p AffixPayload) TaskID() string { return "affix:" + p.EventID }

// NewRemixTask builds the task for p; its id comes from its inputs.
func NewRemixTask(p RemixPayload) (*asynq.Task, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return newTask(TypeRemix, p, p.TaskID())
}

// TaskID is the task id of a remix: a hash of its inputs.
func (p RemixPayload) TaskID() string {
	return "remix:" + InputsID(p.Base, p.Weights, p.Dest, p.Platform, p.Created.UTC().Format(time.RFC3339))
}

// NewZstdTask builds the task for p; its id comes from the source digest,
// the destination and the level, so re-running a backfill adds nothing.
func NewZstdTask(p ZstdPayload) (*asynq.Task, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return newTask(TypeZstd, p, p.TaskID())
}

// TaskID is the task id of a recompression: a hash of the source digest,
// the destination, the level, the minimum size and the platform.
func (p ZstdPayload) TaskID() string {
	return "zstd:" + InputsID(p.Source, p.Dest, fmt.Sprint(p.Level), fmt.Sprint(p.MinSize), p.Platform)
}

func newTask(typ string, payload any, id string) (*asynq.Task, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encoding the %s payload: %w", typ, err)
	}
	return asynq.NewTask(typ, b, asynq.TaskID(id)), nil
}

// InputsID is a short stable hash of a task's inputs.
func InputsID(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:16])
}
