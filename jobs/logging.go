package jobs

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
)

type loggerKey struct{}

func logger(ctx context.Context, fallback *slog.Logger) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	if fallback != nil {
		return fallback
	}
	return slog.Default()
}

// logging puts task_id, type, queue, attempt and event_id on every line a
// task logs, and logs how it ended.
func (h *Handler) logging(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		queue, _ := asynq.GetQueueName(ctx)
		retried, _ := asynq.GetRetryCount(ctx)
		var peek struct {
			EventID string `json:"event_id"`
		}
		_ = json.Unmarshal(t.Payload(), &peek)
		log := logger(ctx, h.Log).With("task_id", id, "type", t.Type(), "queue", queue, "attempt", retried+1)
		if peek.EventID != "" {
			log = log.With("event_id", peek.EventID)
		}
		ctx = context.WithValue(ctx, loggerKey{}, log)
		start := time.Now()
		log.Info("task started")
		err := next.ProcessTask(ctx, t)
		if err != nil {
			log.Warn("task failed", "error", err, "seconds", time.Since(start).Seconds())
		} else {
			log.Info("task done", "seconds", time.Since(start).Seconds())
		}
		return err
	})
}
