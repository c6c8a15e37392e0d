package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hibiken/asynq"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/retry"
	"github.com/r8im/r8im/internal/untrusted"
	"github.com/r8im/r8im/jobs/task"
	"github.com/r8im/r8im/storage"
)

// RecordStore is what the handlers need of the publish records
// (storage.Records).
type RecordStore interface {
	Create(ctx context.Context, rec storage.Record) (bool, error)
	Get(ctx context.Context, id string) (*storage.Record, error)
	Start(ctx context.Context, id string, attempt int) (succeeded bool, err error)
	Progress(ctx context.Context, id string, done, total int64) error
	Succeed(ctx context.Context, id string, s storage.Success) (bool, error)
	Fail(ctx context.Context, id, msg string, final bool) error
}

// WeightsSource opens a weights tarball by URL (storage.Sources).
type WeightsSource interface {
	Open(ctx context.Context, url string) (io.ReadCloser, int64, error)
	// OpenTree lists url as a tree read at random (an S3 prefix, a local
	// directory), or returns nil for a tarball; readers files are read at
	// once.
	OpenTree(ctx context.Context, url string, readers int) (*storage.Tree, error)
}

// Handler processes r8im's tasks. Every handler honours ctx on all I/O, so a
// task that times out or is cancelled really stops.
type Handler struct {
	Records RecordStore
	Sources WeightsSource
	// Options configure every image operation: registry credentials,
	// transport, default registry.
	Options []imageops.Option
	Log     *slog.Logger
	// ProgressEvery is how often a running task's record is updated
	// (default 1s).
	ProgressEvery time.Duration
	// Cache, when set, is the shared-layer cache of recompressions: a layer
	// converted once on a registry is mounted by every later task.
	Cache *storage.LayerCache
	// Uploads, when set, keeps chunked upload sessions under the task id, so
	// that a retry (after a worker was killed) resumes a big upload.
	Uploads *storage.UploadSessions
	// LayerDigests, when set, remembers the digests of the weights layers
	// produced, so that publishing the same weights again reads and sends
	// nothing the registry holds.
	LayerDigests *storage.LayerDigests
	// Layout is the weights layout of tasks that name none (default auto);
	// Jobs how many weights layers a task reads and uploads at once
	// (default 4).
	Layout imageops.Layout
	Jobs   int
	// Batches, when set, learns of every final outcome, so that a batch
	// knows when it completes (and fires its callback).
	Batches *storage.Batches
	// Callbacks sign and send result callbacks (TypeCallback tasks).
	Callbacks Callbacks
	// Slots, when set, bounds the recompression tasks pushing to one
	// registry at once to RegistryConcurrency, across all workers.
	Slots               *storage.Semaphore
	RegistryConcurrency int
	// Observe, when set, is told of every finished attempt (metrics). It
	// must not block.
	Observe func(Outcome)

	enqueuer *asynq.Client // queues callbacks; set by NewServer
}

// Outcome is how one attempt of a task ended.
type Outcome struct {
	Type, Queue string
	// Status is OutcomeSucceeded, OutcomeFailed (final), OutcomeRetry (a
	// retry follows) or OutcomeInterrupted (cancelled, timed out or shut
	// down).
	Status   string
	Duration time.Duration
	Success  storage.Success // set when Status is OutcomeSucceeded
}

// Outcome statuses.
const (
	OutcomeSucceeded   = "succeeded"
	OutcomeFailed      = "failed"
	OutcomeRetry       = "retry"
	OutcomeInterrupted = "interrupted"
)

// Mux routes the task types to their handlers, with logging.
func (h *Handler) Mux() *asynq.ServeMux {
	mux := asynq.NewServeMux()
	mux.Use(h.logging)
	mux.HandleFunc(task.TypeAffix, h.affix)
	mux.HandleFunc(task.TypeRemix, h.remix)
	mux.HandleFunc(task.TypeZstd, h.zstd)
	mux.HandleFunc(TypeCallback, h.callback)
	return mux
}

// job is the work of one task: it returns the success to record.
type job func(ctx context.Context, opts []imageops.Option) (storage.Success, error)

func (h *Handler) affix(ctx context.Context, t *asynq.Task) error {
	var p task.AffixPayload
	if err := decode(t, &p); err != nil {
		return h.run(ctx, t, nil, err)
	}
	return h.run(ctx, t, func(ctx context.Context, opts []imageops.Option) (storage.Success, error) {
		req, done, err := h.affixRequest(ctx, p)
		if err != nil {
			return storage.Success{}, err
		}
		defer done()
		if h.LayerDigests != nil {
			opts = append(opts, imageops.WithLayerDigests(LayerDigests(h.LayerDigests)))
		}
		res, err := imageops.Affix(ctx, req, append(opts, imageops.WithJobs(h.jobs()))...)
		if err != nil {
			return storage.Success{}, err
		}
		layers := make([]storage.LayerRecord, len(res.Layers))
		for i, l := range res.Layers {
			layers[i] = storage.LayerRecord{Digest: l.Digest, Size: l.Size, MediaType: l.MediaType, Files: l.Files, Source: l.Source, Cached: l.Cached, ReadBytes: l.ReadBytes}
		}
		return storage.Success{
			Result: res.Ref, BaseDigest: res.Base, LayerDigest: res.Layer.Digest, LayerDiffID: res.Layer.DiffID,
			LayerSize: res.Layer.Size, UncompressedSize: res.Layer.UncompressedSize,
			UploadedBytes: res.Transfer.UploadedBytes, MountedBytes: res.Transfer.MountedBytes, SkippedBytes: res.Transfer.SkippedBytes, RefusedMountBytes: res.Transfer.RefusedMountBytes, Notes: res.Transfer.Notes,
			DownloadedBytes: res.ReadBytes, Stages: stageMap(res.Stages), Layers: layers,
		}, nil
	}, nil, platformOpt(p.Platform))
}

// jobs is how many weights layers a task reads and uploads at once.
func (h *Handler) jobs() int {
	if h.Jobs > 0 {
		return h.Jobs
	}
	return 4
}

// affixRequest opens p's weights: a tree (an S3 prefix, a local directory)
// for a layered layout, else a stream. done releases them.
func (h *Handler) affixRequest(ctx context.Context, p task.AffixPayload) (imageops.AffixRequest, func(), error) {
	req := imageops.AffixRequest{Base: p.Base, Dest: p.Dest, Target: p.Target, Level: p.Level, Created: p.Created, Layout: h.Layout}
	if p.Layers != "" {
		req.Layout, _ = imageops.ParseLayout(p.Layers) // validated
	}
	if p.Compression != "" {
		req.Compression, _ = imageops.ParseCompression(p.Compression) // validated
	}
	tree, err := h.Sources.OpenTree(ctx, p.Weights, h.jobs())
	if err != nil {
		return req, nil, fmt.Errorf("opening the weights: %w", err)
	}
	if tree != nil && req.Layout != imageops.LayoutSingle {
		req.Tree, req.WeightsSize = weightsTree{tree}, tree.Size()
		return req, func() {}, nil
	}
	weights, size, err := h.openOnce(ctx, p.Weights)
	if err != nil {
		return req, nil, err
	}
	req.Weights, req.WeightsSize = weights.open, size
	return req, weights.close, nil
}

func (h *Handler) remix(ctx context.Context, t *asynq.Task) error {
	var p task.RemixPayload
	if err := decode(t, &p); err != nil {
		return h.run(ctx, t, nil, err)
	}
	return h.run(ctx, t, func(ctx context.Context, opts []imageops.Option) (storage.Success, error) {
		res, err := imageops.Remix(ctx, imageops.RemixRequest{Base: p.Base, Weights: p.Weights, Dest: p.Dest, Created: p.Created}, opts...)
		if err != nil {
			return storage.Success{}, err
		}
		s := storage.Success{Result: res.Ref, BaseDigest: res.Base, UploadedBytes: res.Transfer.UploadedBytes,
			MountedBytes: res.Transfer.MountedBytes, SkippedBytes: res.Transfer.SkippedBytes, RefusedMountBytes: res.Transfer.RefusedMountBytes, Notes: res.Transfer.Notes, Stages: stageMap(res.Stages)}
		if len(res.Added) > 0 {
			s.LayerDigest = res.Added[len(res.Added)-1]
		}
		return s, nil
	}, nil, platformOpt(p.Platform))
}

func (h *Handler) zstd(ctx context.Context, t *asynq.Task) error {
	var p task.ZstdPayload
	if err := decode(t, &p); err != nil {
		return h.run(ctx, t, nil, err)
	}
	release, err := h.registrySlot(ctx, p.Dest)
	if err != nil {
		return err
	}
	defer release()
	return h.run(ctx, t, func(ctx context.Context, opts []imageops.Option) (storage.Success, error) {
		if h.Cache != nil {
			opts = append(opts, imageops.WithLayerCache(LayerCache(h.Cache)))
		}
		res, err := imageops.Recompress(ctx, imageops.ZstdRequest{Source: p.Source, Dest: p.Dest, Level: p.Level, MinSize: p.MinSize}, opts...)
		if err != nil {
			return storage.Success{}, err
		}
		s := storage.Success{Result: res.Ref, BaseDigest: res.Source, UploadedBytes: res.Transfer.UploadedBytes,
			MountedBytes: res.Transfer.MountedBytes, SkippedBytes: res.Transfer.SkippedBytes, RefusedMountBytes: res.Transfer.RefusedMountBytes, Notes: res.Transfer.Notes, DownloadedBytes: res.Transfer.DownloadedBytes, Stages: stageMap(res.Stages)}
		for _, l := range res.Layers {
			s.LayerSize += l.NewSize
			s.SavedBytes += l.OldSize - l.NewSize
			if l.Reused {
				s.ReusedLayers++
			}
		}
		return s, nil
	}, nil, platformOpt(p.Platform))
}

// run records the task's life around do: running, progress about once a
// second, then success (exactly once) or the failure's reason. Permanent
// failures end the task with asynq.SkipRetry; others are retried.
func (h *Handler) run(ctx context.Context, t *asynq.Task, do job, err error, extra ...imageops.Option) error {
	id, _ := asynq.GetTaskID(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	// Records are written even when ctx has ended (timeout, shutdown):
	// the reason must not be lost with the task's context.
	bg := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	}
	rctx, cancel := bg()
	// Tasks enqueued by other means than Enqueuer get their record here
	// (Create does nothing when it exists).
	queue, _ := asynq.GetQueueName(ctx)
	rec := storage.Record{ID: id, Type: t.Type(), Queue: queue}
	if json.Valid(t.Payload()) {
		rec.Inputs = t.Payload()
	}
	if _, serr := h.Records.Create(rctx, rec); serr != nil {
		cancel()
		return fmt.Errorf("recording %s: %w", id, serr)
	}
	done, serr := h.Records.Start(rctx, id, retried+1)
	if serr != nil {
		cancel()
		return fmt.Errorf("recording the start of %s: %w", id, serr) // Redis trouble: retry later
	}
	if done {
		// A duplicate delivery of a task already published (a worker died
		// between recording and acknowledging it): nothing to redo.
		cancel()
		logger(ctx, h.Log).Info("already published")
		rctx, cancel = bg()
		defer cancel()
		return h.notify(rctx, id, storage.StateSucceeded)
	}
	cancel()

	var success storage.Success
	began := time.Now()
	outcome := Outcome{Type: t.Type(), Queue: queue}
	defer func() {
		if h.Observe != nil && outcome.Status != "" {
			outcome.Duration = time.Since(began)
			h.Observe(outcome)
		}
	}()
	if err == nil {
		progress := h.progress(ctx, id)
		opts := append(append(append([]imageops.Option{}, h.Options...), extra...), imageops.WithProgress(progress.report))
		if h.Uploads != nil {
			opts = append(opts, imageops.WithUploadSessions(UploadSessions(h.Uploads), id))
		}
		success, err = do(ctx, opts)
		progress.stop()
	}

	rctx, cancel = bg()
	defer cancel()
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			// Cancelled or timed out: asynq decides (requeue on shutdown,
			// retry on timeout); the record keeps the reason.
			_ = h.Records.Fail(rctx, id, lastError("interrupted: "+err.Error()), false)
			outcome.Status = OutcomeInterrupted
			return err
		}
		permanent := retry.IsPermanent(err)
		final := permanent || retried >= maxRetry
		// The reason is read by operators and event senders: whatever a
		// remote party wrote into it is stripped of control characters and
		// the whole is capped.
		if ferr := h.Records.Fail(rctx, id, lastError(err.Error()), final); ferr != nil {
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
	first, serr := h.Records.Succeed(rctx, id, success)
	if serr != nil {
		// The image is pushed; retrying re-pushes the same digests and
		// records the success then.
		return fmt.Errorf("recording the success of %s: %w", id, serr)
	}
	outcome.Status, outcome.Success = OutcomeSucceeded, success
	logger(ctx, h.Log).Info("published", "result", success.Result, "first_record", first)
	for _, n := range success.Notes {
		logger(ctx, h.Log).Warn("transfer note", "note", n)
	}
	if err := h.notify(rctx, id, storage.StateSucceeded); err != nil {
		// Retried: the retry finds the record succeeded and only notifies.
		return fmt.Errorf("published %s, but %w", success.Result, err)
	}
	return nil
}

// maxLastError caps a record's last_error, in bytes.
const maxLastError = 4096

// lastError is an error message fit for a record: escapes and control
// characters stripped (untrusted.Text); quoted inputs longer than 256 bytes
// shortened to their ends; and when still longer than maxLastError, its
// middle cut, so that what was being done and the reason both remain.
func lastError(msg string) string {
	s := shortenQuoted(untrusted.Text(msg, 3*len(msg)+1), 256)
	if len(s) <= maxLastError {
		return s
	}
	head, tail := s[:maxLastError/2], s[len(s)-maxLastError/2:]
	for len(head) > 0 && !utf8.ValidString(head) {
		head = head[:len(head)-1]
	}
	for len(tail) > 0 && !utf8.RuneStart(tail[0]) {
		tail = tail[1:]
	}
	return fmt.Sprintf("%s…[%d bytes cut]…%s", head, len(s)-len(head)-len(tail), tail)
}

// shortenQuoted shortens each double-quoted part of s (as %q writes them)
// longer than max to its first and last max/2 bytes.
func shortenQuoted(s string, max int) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '"')
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := i + 1
		for j < len(s) && s[j] != '"' {
			if s[j] == '\\' {
				j++
			}
			j++
		}
		if j >= len(s) { // unterminated: keep as is
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i+1])
		if q := s[i+1 : j]; len(q) > max {
			head, tail := q[:max/2], q[len(q)-max/2:]
			for len(head) > 0 && !utf8.ValidString(head) {
				head = head[:len(head)-1]
			}
			for len(tail) > 0 && !utf8.RuneStart(tail[0]) {
				tail = tail[1:]
			}
			fmt.Fprintf(&b, "%s…[%d bytes]…%s", head, len(q)-len(head)-len(tail), tail)
		} else {
			b.WriteString(q)
		}
		b.WriteByte('"')
		s = s[j+1:]
	}
}

// decode reads a payload strictly: an unknown field is refused, since a
// payload never carries more than its type defines (a credential in a
// payload is a mistake to stop, not to ignore). So add a payload field to
// the workers before the enqueuers send it.
func decode(t *asynq.Task, v interface{ Validate() error }) error {
	dec := json.NewDecoder(bytes.NewReader(t.Payload()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w (%s): not valid JSON for this task type: %v", task.ErrInvalidPayload, t.Type(), err)
	}
	if dec.More() {
		return fmt.Errorf("%w (%s): not valid JSON for this task type: data after the payload object", task.ErrInvalidPayload, t.Type())
	}
	return v.Validate()
}

// onceReader serves the reader from the first Open to the first read pass
// and opens the URL again for retries.
type onceReader struct {
	mu    sync.Mutex
	first io.ReadCloser
	again func() (io.ReadCloser, error)
}

func (h *Handler) openOnce(ctx context.Context, url string) (*onceReader, int64, error) {
	rc, size, err := h.Sources.Open(ctx, url)
	if err != nil {
		return nil, 0, fmt.Errorf("opening the weights: %w", err)
	}
	return &onceReader{first: rc, again: func() (io.ReadCloser, error) {
		rc, _, err := h.Sources.Open(ctx, url)
		return rc, err
	}}, size, nil
}

func (o *onceReader) open() (io.ReadCloser, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.first != nil {
		rc := o.first
		o.first = nil
		return rc, nil
	}
	return o.again()
}

func (o *onceReader) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.first != nil {
		_ = o.first.Close()
		o.first = nil
	}
}

// platformOpt is the task's platform: one the payload names is required of
// a single-platform base (as `r8im --platform` requires it); without one,
// linux/amd64 of an index, or a single-platform base as it is.
func platformOpt(s string) imageops.Option {
	if s == "" {
		return imageops.WithPlatform(&imageops.DefaultPlatform)
	}
	p, _ := imageops.ParsePlatform(s) // validated
	return imageops.WithExactPlatform(p)
}

func stageMap(stages []imageops.Stage) map[string]float64 {
	m := make(map[string]float64, len(stages))
	for _, s := range stages {
		m[s.Name] += s.Seconds
	}
	return m
}
