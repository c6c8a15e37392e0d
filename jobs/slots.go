package jobs

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/hibiken/asynq"

	"github.com/r8im/r8im/jobs/task"
)

// ErrRegistryBusy means every slot of a registry stayed taken while a task
// waited: the task is retried soon, and that does not count as a failure.
var ErrRegistryBusy = errors.New("registry busy: every recompression slot is taken (R8IM_REGISTRY_CONCURRENCY)")

// slotWait is how long a task waits for a registry slot before giving its
// worker back (it is then retried without counting as a failure).
var slotWait = 30 * time.Second

// registrySlots holds a recompression until its destination registry has
// a free slot, before its record is started: a task that waited too long
// returns ErrRegistryBusy, which asynq retries soon without counting it a
// failure, and which leaves the record as it was. Other task types, and
// payloads that do not decode (the handler reports them), pass through.
func (h *Handler) registrySlots(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		var p task.ZstdPayload
		if t.Type() != task.TypeZstd || decode(t, &p) != nil {
			return next.ProcessTask(ctx, t)
		}
		release, err := h.registrySlot(ctx, p.Dest)
		if err != nil {
			return err
		}
		defer release()
		return next.ProcessTask(ctx, t)
	})
}

// registrySlot takes one of the destination registry's slots for the
// task, waiting up to slotWait, and returns its release.
func (h *Handler) registrySlot(ctx context.Context, dest string) (release func(), err error) {
	nop := func() {}
	if h.Slots == nil || h.RegistryConcurrency <= 0 {
		return nop, nil
	}
	ref, err := name.ParseReference(dest, name.WeakValidation)
	if err != nil {
		return nop, nil // the handler reports the bad destination
	}
	scope := "registry:" + ref.Context().RegistryStr()
	holder, _ := asynq.GetTaskID(ctx)
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Hour)
	}
	give := time.Now().Add(slotWait)
	for {
		got, err := h.Slots.TryAcquire(ctx, scope, holder, h.RegistryConcurrency, deadline)
		if err != nil {
			return nil, err
		}
		if got {
			return func() {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				_ = h.Slots.Release(rctx, scope, holder) // else it frees at the deadline
			}, nil
		}
		if time.Now().After(give) {
			return nil, fmt.Errorf("waiting for %s: %w", scope, ErrRegistryBusy)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200*time.Millisecond + rand.N(300*time.Millisecond)):
		}
	}
}
