package jobs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/jobs/task"
	"github.com/r8im/r8im/storage"
)

// Backfill enqueues the recompression of many images as one batch.
type Backfill struct {
	Enqueuer *Enqueuer
	Batches  *storage.Batches
	// Options give registry access to resolve and plan each image.
	Options []imageops.Option
	// Rate bounds enqueues per second (0: no bound).
	Rate float64
	// Jobs is how many images are resolved at once (default 8).
	Jobs int
	// Progress, when set, hears of every image as it is decided.
	Progress func(done, total int, item BackfillItem)
}

// BackfillRequest is one backfill run.
type BackfillRequest struct {
	Images []string // source references, by tag or digest
	// Where results go: by default the source repository under
	// "<tag><TagSuffix>" (TagSuffix defaults to "-zstd"); InPlace moves the
	// source tag itself; RepoSuffix writes to "<repo><RepoSuffix>:<tag>".
	// A source named by digest only is pushed by digest.
	TagSuffix  string
	InPlace    bool
	RepoSuffix string

	Level    int
	MinSize  int64
	Platform string

	BatchID     string
	Description string
	CallbackURL string // POSTed the batch status when every task has ended
	DryRun      bool   // decide and report; enqueue nothing, record no batch
}

// Actions of a BackfillItem.
const (
	ActionEnqueued = "enqueued"      // a new task
	ActionExisting = "existing"      // its task was already queued or done
	ActionSkipped  = "skipped"       // nothing to do: already zstd
	ActionFailed   = "failed"        // could not be resolved or enqueued
	ActionPlanned  = "would enqueue" // dry run
)

// BackfillItem is what became of one image.
type BackfillItem struct {
	Image        string        `json:"image"`
	Source       string        `json:"source,omitempty"` // resolved repo@sha256:…
	Dest         string        `json:"dest,omitempty"`
	Action       string        `json:"action"`
	Reason       string        `json:"reason,omitempty"`
	TaskID       string        `json:"task_id,omitempty"`
	State        storage.State `json:"state,omitempty"`
	ConvertBytes int64         `json:"convert_bytes"` // compressed bytes to recompress
}

// BackfillSummary is a backfill run's outcome.
type BackfillSummary struct {
	BatchID      string         `json:"batch_id"`
	DryRun       bool           `json:"dry_run,omitempty"`
	Items        []BackfillItem `json:"items"`
	Enqueued     int            `json:"enqueued"`
	Existing     int            `json:"existing"`
	Skipped      int            `json:"skipped"`
	Failed       int            `json:"failed"`
	ConvertBytes int64          `json:"convert_bytes"` // of enqueued (or planned) images
	// Completed is true when the batch ended as it was sealed (every task
	// was already done); its callback is then queued by Run.
	Completed bool `json:"completed"`
}

// DefaultTagSuffix is appended to a source tag for its zstd form.
const DefaultTagSuffix = "-zstd"

// Run resolves and plans every image (Jobs at a time), skips those already
// zstd, and enqueues a recompression task per remaining image on the
// backfill queue, at most Rate a second. Task ids depend on the source
// digest, destination and options, not on the batch, so running the same
// backfill again enqueues nothing new. Images that fail to resolve are
// reported, not fatal; a Redis failure is.
func (b *Backfill) Run(ctx context.Context, req BackfillRequest) (*BackfillSummary, error) {
	if !task.EventIDPattern.MatchString(req.BatchID) {
		return nil, fmt.Errorf("%w: batch id %q must be 1-128 characters of letters, digits, '.', '_', ':' or '-'", task.ErrInvalidPayload, req.BatchID)
	}
	if len(req.Images) == 0 {
		return nil, fmt.Errorf("%w: no images to backfill", task.ErrInvalidPayload)
	}
	if req.InPlace && req.RepoSuffix != "" {
		return nil, fmt.Errorf("%w: --in-place and --dest-repo-suffix exclude each other", task.ErrInvalidPayload)
	}
	if req.TagSuffix == "" {
		req.TagSuffix = DefaultTagSuffix
	}
	sum := &BackfillSummary{BatchID: req.BatchID, DryRun: req.DryRun, Items: make([]BackfillItem, len(req.Images))}
	if !req.DryRun {
		err := b.Batches.Create(ctx, storage.Batch{ID: req.BatchID, Description: req.Description, CallbackURL: req.CallbackURL})
		if err != nil {
			return nil, err
		}
	}
	limit := rate.NewLimiter(rate.Inf, 1)
	if b.Rate > 0 {
		limit = rate.NewLimiter(rate.Limit(b.Rate), 1)
	}
	jobs := b.Jobs
	if jobs <= 0 {
		jobs = 8
	}
	var mu sync.Mutex
	done := 0
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for i, img := range req.Images {
		g.Go(func() error {
			item, err := b.one(gctx, req, img, limit)
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			sum.Items[i] = item
			done++
			if b.Progress != nil {
				b.Progress(done, len(req.Images), item)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return sum, err
	}
	for _, it := range sum.Items {
		switch it.Action {
		case ActionEnqueued, ActionPlanned:
			sum.Enqueued++
			sum.ConvertBytes += it.ConvertBytes
		case ActionExisting:
			sum.Existing++
		case ActionSkipped:
			sum.Skipped++
		case ActionFailed:
			sum.Failed++
		}
	}
	if req.DryRun {
		return sum, nil
	}
	if err := b.Batches.Skip(ctx, req.BatchID, int64(sum.Skipped)); err != nil {
		return sum, err
	}
	completed, err := b.Batches.Seal(ctx, req.BatchID)
	if err != nil {
		return sum, err
	}
	sum.Completed = completed
	if completed && req.CallbackURL != "" {
		err := EnqueueCallback(ctx, b.Enqueuer.client, CallbackPayload{Batch: req.BatchID}, task.QueueBackfill, DefaultCallbackMaxRetry)
		if err != nil {
			return sum, err
		}
	}
	return sum, nil
}

// one decides and enqueues one image. Only Redis errors and the end of
// ctx are returned; anything wrong with the image is the item's reason.
func (b *Backfill) one(ctx context.Context, req BackfillRequest, img string, limit *rate.Limiter) (BackfillItem, error) {
	item := BackfillItem{Image: img}
	fail := func(err error) (BackfillItem, error) {
		item.Action, item.Reason = ActionFailed, err.Error()
		return item, nil
	}
	dest, err := ZstdDest(img, req)
	if errors.Is(err, errBackfillResult) {
		item.Action, item.Reason = ActionSkipped, err.Error()
		return item, nil
	}
	if err != nil {
		return fail(err)
	}
	item.Dest = dest
	opts := append(append([]imageops.Option{}, b.Options...), platformOpt(req.Platform))
	plan, err := imageops.PlanRecompress(ctx, imageops.ZstdRequest{Source: img, Level: req.Level, MinSize: req.MinSize}, opts...)
	if err != nil {
		if ctx.Err() != nil {
			return item, ctx.Err()
		}
		return fail(err)
	}
	item.Source = plan.Source.String()
	if !plan.NeedsWork {
		item.Action, item.Reason = ActionSkipped, "already zstd"
		return item, nil
	}
	item.ConvertBytes = plan.ConvertBytes
	p := task.ZstdPayload{Source: plan.Source.String(), Dest: dest, Level: req.Level, MinSize: req.MinSize, Platform: req.Platform, BatchID: req.BatchID}
	if err := p.Validate(); err != nil {
		return fail(err)
	}
	item.TaskID = p.TaskID()
	if req.DryRun {
		item.Action = ActionPlanned
		return item, nil
	}
	if err := limit.Wait(ctx); err != nil {
		return item, err
	}
	// In the batch before it can run, so its end is never missed.
	if err := b.Batches.Add(ctx, req.BatchID, item.TaskID); err != nil {
		return item, err
	}
	enq, err := b.Enqueuer.Enqueue(ctx, task.Request{Payload: p, Queue: task.QueueBackfill, Incidental: []string{"batch_id"}})
	if err != nil {
		if rerr := b.Batches.Remove(context.WithoutCancel(ctx), req.BatchID, item.TaskID); rerr != nil {
			return item, errors.Join(err, rerr)
		}
		if ctx.Err() != nil || !errors.Is(err, task.ErrInvalidPayload) {
			return item, err
		}
		return fail(err)
	}
	item.Action, item.State = ActionEnqueued, storage.State(enq.State)
	if enq.Existing {
		item.Action = ActionExisting
		if item.State == storage.StateSucceeded || item.State == storage.StateFailed {
			// Already over: it will not end again, so count it now.
			if _, err := b.Batches.Finished(ctx, item.TaskID, item.State); err != nil {
				return item, err
			}
		}
	}
	return item, nil
}

// errBackfillResult: the image is the output of a backfill; it is skipped.
var errBackfillResult = errors.New("a backfill result")

// ZstdDest is where the zstd form of image goes under req's rules.
func ZstdDest(image string, req BackfillRequest) (string, error) {
	ref, err := name.ParseReference(image, name.StrictValidation)
	if err != nil {
		return "", fmt.Errorf("%q is not a full image reference (%v); use host/repo:tag or host/repo@sha256:…", image, err)
	}
	repo := ref.Context().Name()
	if req.RepoSuffix != "" {
		repo += req.RepoSuffix
	}
	tag, ok := ref.(name.Tag)
	switch {
	case !ok:
		return repo, nil // by digest only: pushed by digest
	case req.InPlace || req.RepoSuffix != "":
		return repo + ":" + tag.TagStr(), nil
	}
	suffix := req.TagSuffix
	if suffix == "" {
		suffix = DefaultTagSuffix
	}
	if strings.HasSuffix(tag.TagStr(), suffix) {
		return "", fmt.Errorf("%w: its tag ends in %q", errBackfillResult, suffix)
	}
	t := tag.TagStr() + suffix
	if len(t) > 128 {
		return "", fmt.Errorf("%s: the tag %q would be longer than the 128 characters a tag may have; use --in-place or --dest-repo-suffix", image, t)
	}
	return repo + ":" + t, nil
}
