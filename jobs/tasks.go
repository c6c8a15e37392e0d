package jobs

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/jobs/task"
)

// Policy is how long a task type may run and how often it is retried.
type Policy struct {
	Timeout  time.Duration
	MaxRetry int
}

// Policies maps each task type to its policy from the configuration.
func Policies(t config.Tasks) map[string]Policy {
	return map[string]Policy{
		task.TypeAffix: {Timeout: t.AffixTimeout, MaxRetry: t.AffixMaxRetry},
		task.TypeRemix: {Timeout: t.RemixTimeout, MaxRetry: t.RemixMaxRetry},
		task.TypeZstd:  {Timeout: t.ZstdTimeout, MaxRetry: t.ZstdMaxRetry},
	}
}

// NewTask builds the asynq task for any payload, with its stable id
// (task.Payload's TaskID: an affix's comes from its event id, so the same
// event is never enqueued twice).
func NewTask(p task.Payload) (*asynq.Task, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return newTask(p.Type(), p, p.TaskID())
}

func newTask(typ string, payload any, id string) (*asynq.Task, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encoding the %s payload: %w", typ, err)
	}
	return asynq.NewTask(typ, b, asynq.TaskID(id)), nil
}
