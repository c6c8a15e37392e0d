package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/retry"
	"github.com/r8im/r8im/internal/untrusted"
	"github.com/r8im/r8im/storage"
)

// attempt is one run of a publish task, shared through its context by the
// bookkeeping middleware and the task's handler: the middleware gives the
// image options (the Handler's, progress, upload sessions), the handler
// gives back what it published.
type attempt struct {
	opts      []imageops.Option
	success   storage.Success
	published bool
}

type attemptKey struct{}

// begin decodes t's payload into p (an invalid one is a permanent
// task.ErrInvalidPayload) and returns the attempt the bookkeeping
// middleware put in ctx.
func begin(ctx context.Context, t *asynq.Task, p interface{ Validate() error }) (*attempt, error) {
	if err := decode(t, p); err != nil {
		return nil, err
	}
	a, ok := ctx.Value(attemptKey{}).(*attempt)
	if !ok {
		return nil, fmt.Errorf("running %s: a publish handler runs inside the bookkeeping middleware of Handler.Mux", t.Type())
	}
	return a, nil
}

// options are the attempt's image options, then extra.
func (a *attempt) options(extra ...imageops.Option) []imageops.Option {
	return append(slices.Clip(a.opts), extra...)
}

// publish hands the middleware what the task published, to record.
func (a *attempt) publish(s storage.Success) error {
	a.success, a.published = s, true
	return nil
}

// bookkeeping is the life of a publish task's record around its handler:
// the record created (for tasks enqueued by other means) and started; a
// duplicate delivery of a task already published only notified; progress
// written about once a second from a ticker off the data path; then
// exactly one of success (recorded exactly once, written as the task's
// asynq result, callbacks queued) or failure (final when permanent or out
// of retries: callbacks queued). Permanent failures end the task with
// asynq.SkipRetry; others are retried. Each attempt that ran is observed
// (Observe). Records are written with a context detached from the task's,
// so a timeout's reason is not lost with it.
func (h *Handler) bookkeeping(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		published, err := h.start(ctx, t, id)
		if err != nil || published {
			return err
		}
		outcome := Outcome{Type: t.Type()}
		outcome.Queue, _ = asynq.GetQueueName(ctx)
		defer h.observe(&outcome, time.Now())

		progress := h.progress(ctx, id)
		a := &attempt{opts: append(slices.Clip(h.Options), imageops.WithProgress(progress.report))}
		if h.Uploads != nil {
			a.opts = append(a.opts, imageops.WithUploadSessions(UploadSessions(h.Uploads), id))
		}
		err = next.ProcessTask(context.WithValue(ctx, attemptKey{}, a), t)
		progress.stop()
		if err == nil && !a.published {
			err = fmt.Errorf("running %s: the handler returned no result", t.Type())
		}

		rctx, cancel := detached(ctx)
		defer cancel()
		if err != nil {
			return h.failed(ctx, rctx, id, err, &outcome)
		}
		return h.succeeded(ctx, rctx, t, id, a.success, &outcome)
	})
}

// detached is ctx without its end, for record writes, bounded on its own.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

// start creates the task's record (Create does nothing when it exists) and
// records the attempt's start. published is true for a duplicate delivery
// of a task already published (a worker died between recording and
// acknowledging it): there is nothing to redo, its callbacks are queued
// again (they are not sent twice).
func (h *Handler) start(ctx context.Context, t *asynq.Task, id string) (published bool, err error) {
	retried, _ := asynq.GetRetryCount(ctx)
	queue, _ := asynq.GetQueueName(ctx)
	rec := storage.Record{ID: id, Type: t.Type(), Queue: queue}
	if json.Valid(t.Payload()) {
		rec.Inputs = t.Payload()
	}
	rctx, cancel := detached(ctx)
	defer cancel()
	if _, err := h.Records.Create(rctx, rec); err != nil {
		return false, fmt.Errorf("recording %s: %w", id, err)
	}
	done, err := h.Records.Start(rctx, id, retried+1)
	if err != nil {
		return false, fmt.Errorf("recording the start of %s: %w", id, err) // Redis trouble: retry later
	}
	if !done {
		return false, nil
	}
	logger(ctx, h.Log).Info("already published")
	nctx, ncancel := detached(ctx)
	defer ncancel()
	return true, h.notify(nctx, id, storage.StateSucceeded)
}

// failed records err as the attempt's end: interrupted when ctx ended
// (asynq decides: requeue on shutdown, retry on timeout), else a failure,
// final when permanent or out of retries. The error returned carries
// asynq.SkipRetry when permanent.
func (h *Handler) failed(ctx, rctx context.Context, id string, err error, outcome *Outcome) error {
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		_ = h.Records.Fail(rctx, id, lastError("interrupted: "+err.Error()), false)
		outcome.Status = OutcomeInterrupted
		return err
	}
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	permanent := retry.IsPermanent(err)
	final := permanent || retried >= maxRetry
	// The reason is read by operators and event senders: whatever a remote
	// party wrote into it is stripped of control characters and the whole
	// is capped.
	msg := err.Error()
	if h.Hint != nil {
		if hint := h.Hint(err); hint != "" {
			msg += "; hint: " + hint
		}
	}
	if ferr := h.Records.Fail(rctx, id, lastError(msg), final); ferr != nil {
		logger(ctx, h.Log).Error("recording a failure", "error", ferr)
	}
	outcome.Status = OutcomeRetry
	if final {
		outcome.Status = OutcomeFailed
		if nerr := h.notify(rctx, id, storage.StateFailed); nerr != nil {
			logger(ctx, h.Log).Error("queueing the failure's callbacks", "error", nerr)
		}
	}
	err = untrusted.Err(err, maxLastError) // asynq keeps it too (its last_err)
	if permanent {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	return err
}

// succeeded records s (exactly once), writes it as the task's result and
// queues the callbacks.
func (h *Handler) succeeded(ctx, rctx context.Context, t *asynq.Task, id string, s storage.Success, outcome *Outcome) error {
	first, err := h.Records.Succeed(rctx, id, s)
	if err != nil {
		// The image is pushed; retrying re-pushes the same digests and
		// records the success then.
		return fmt.Errorf("recording the success of %s: %w", id, err)
	}
	outcome.Status, outcome.Success = OutcomeSucceeded, s
	log := logger(ctx, h.Log)
	log.Info("published", "result", s.Result, "first_record", first)
	for _, n := range s.Notes {
		log.Warn("transfer note", "note", n)
	}
	writeResult(t, s, log)
	if err := h.notify(rctx, id, storage.StateSucceeded); err != nil {
		// Retried: the retry finds the record succeeded and only notifies.
		return fmt.Errorf("published %s, but %w", s.Result, err)
	}
	return nil
}

// observe tells Observe how an attempt that began at began ended (not when
// it has no status: its success could not be recorded).
func (h *Handler) observe(o *Outcome, began time.Time) {
	if h.Observe != nil && o.Status != "" {
		o.Duration = time.Since(began)
		h.Observe(*o)
	}
}

// TaskResult is what a publish task writes as its asynq result
// (asynq.TaskInfo.Result, shown by asynqmon): the image it published.
type TaskResult struct {
	Ref         string `json:"ref"`    // host/repo@sha256:…
	Digest      string `json:"digest"` // the manifest's
	BaseDigest  string `json:"base_digest,omitempty"`
	LayerDigest string `json:"layer_digest,omitempty"`
}

// writeResult writes s as t's result. The record holds it already, so a
// failure is only logged.
func writeResult(t *asynq.Task, s storage.Success, log *slog.Logger) {
	w := t.ResultWriter()
	if w == nil {
		return // not run by an asynq server
	}
	_, digest, _ := strings.Cut(s.Result, "@")
	b, err := json.Marshal(TaskResult{Ref: s.Result, Digest: digest, BaseDigest: s.BaseDigest, LayerDigest: s.LayerDigest})
	if err == nil {
		_, err = w.Write(b)
	}
	if err != nil {
		log.Warn("writing the task result", "error", err)
	}
}
