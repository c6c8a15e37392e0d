package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/r8im/r8im/imageops"
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

// ConversionCache is the shared-layer cache of recompressions
// (storage.LayerCache); LayerCache adapts it to imageops.
type ConversionCache interface {
	Lookup(ctx context.Context, k storage.LayerKey) (storage.LayerConversion, bool, error)
	Lease(ctx context.Context, k storage.LayerKey) (release func(), err error)
	Store(ctx context.Context, k storage.LayerKey, v storage.LayerConversion) error
}

// SessionStore keeps chunked upload sessions (storage.UploadSessions);
// UploadSessions adapts it to imageops.
type SessionStore interface {
	Load(ctx context.Context, key string) ([]byte, error)
	Save(ctx context.Context, key string, v []byte) error
	Delete(ctx context.Context, key string) error
}

// DigestStore remembers the weights layers produced
// (storage.LayerDigests); LayerDigests adapts it to imageops.
type DigestStore interface {
	Lookup(ctx context.Context, key string) ([]byte, bool, error)
	Store(ctx context.Context, key string, value []byte) error
}

// BatchStore is what the handlers need of backfill batches
// (storage.Batches).
type BatchStore interface {
	// Finished records a task's final state in its batches and returns
	// those it completed.
	Finished(ctx context.Context, taskID string, state storage.State) ([]string, error)
	Status(ctx context.Context, id string) (*storage.BatchStatus, error)
}

// SlotStore bounds the tasks holding a scope at once (storage.Semaphore).
type SlotStore interface {
	TryAcquire(ctx context.Context, scope, holder string, max int, deadline time.Time) (bool, error)
	Release(ctx context.Context, scope, holder string) error
}

// TaskQueue queues tasks: an *asynq.Client.
type TaskQueue interface {
	EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// Handler processes r8im's tasks. Every handler honours ctx on all I/O, so a
// task that times out or is cancelled really stops. Its collaborators are
// interfaces; NewHandler wires the Redis ones of a worker.
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
	// Hint, when set, says how the worker's operator gets past a failure
	// (imageops.Remedies in the worker's settings: internal/cli.WorkerHint);
	// it is added to the recorded reason. The library's errors name no
	// setting of their own.
	Hint func(error) string
	// Cache, when set, is the shared-layer cache of recompressions: a layer
	// converted once on a registry is mounted by every later task.
	Cache ConversionCache
	// Uploads, when set, keeps chunked upload sessions under the task id, so
	// that a retry (after a worker was killed) resumes a big upload.
	Uploads SessionStore
	// LayerDigests, when set, remembers the digests of the weights layers
	// produced, so that publishing the same weights again reads and sends
	// nothing the registry holds.
	LayerDigests DigestStore
	// Layout is the weights layout of tasks that name none (default auto);
	// Jobs how many weights layers a task reads and uploads at once
	// (default 4).
	Layout imageops.Layout
	Jobs   int
	// Batches, when set, learns of every final outcome, so that a batch
	// knows when it completes (and fires its callback).
	Batches BatchStore
	// Callbacks sign and send result callbacks (TypeCallback tasks).
	Callbacks Callbacks
	// CallbackQueue queues the callbacks of final outcomes (an asynq
	// client on the worker's Redis). Without it, an outcome that calls
	// for a callback fails to queue it, and its task is retried.
	CallbackQueue TaskQueue
	// Slots, when set, bounds the recompression tasks pushing to one
	// registry at once to RegistryConcurrency, across all workers.
	Slots               SlotStore
	RegistryConcurrency int
	// Observe, when set, is told of every finished attempt (metrics). It
	// must not block.
	Observe func(Outcome)
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

// Mux routes the task types to their handlers, every one with logging. The
// publish tasks share their bookkeeping as middleware (registrySlots, then
// bookkeeping: records, progress, metrics, retry classification, result,
// callbacks), so that each handler only decodes its payload and does its
// operation.
func (h *Handler) Mux() *asynq.ServeMux {
	publish := asynq.NewServeMux()
	publish.Use(h.registrySlots, h.bookkeeping)
	publish.HandleFunc(task.TypeAffix, h.affix)
	publish.HandleFunc(task.TypeRemix, h.remix)
	publish.HandleFunc(task.TypeZstd, h.zstd)

	mux := asynq.NewServeMux()
	mux.Use(h.logging)
	for _, typ := range []string{task.TypeAffix, task.TypeRemix, task.TypeZstd} {
		mux.Handle(typ, publish)
	}
	mux.HandleFunc(TypeCallback, h.callback)
	return mux
}

func (h *Handler) affix(ctx context.Context, t *asynq.Task) error {
	var p task.AffixPayload
	a, err := begin(ctx, t, &p)
	if err != nil {
		return err
	}
	req, done, err := h.affixRequest(ctx, p)
	if err != nil {
		return err
	}
	defer done()
	opts := a.options(platformOpt(p.Platform))
	if h.LayerDigests != nil {
		opts = append(opts, imageops.WithLayerDigests(LayerDigests(h.LayerDigests)))
	}
	res, err := imageops.Affix(ctx, req, append(opts, imageops.WithJobs(h.jobs()))...)
	if err != nil {
		return err
	}
	layers := make([]storage.LayerRecord, len(res.Layers))
	for i, l := range res.Layers {
		layers[i] = storage.LayerRecord{Digest: l.Digest.String(), Size: l.Size, MediaType: l.MediaType, Files: l.Files, Source: l.Source, Cached: l.Cached, ReadBytes: l.ReadBytes}
	}
	return a.publish(storage.Success{
		Result: res.Ref.String(), BaseDigest: res.Base.String(), LayerDigest: res.Layer.Digest.String(), LayerDiffID: res.Layer.DiffID.String(),
		LayerSize: res.Layer.Size, UncompressedSize: res.Layer.UncompressedSize,
		UploadedBytes: res.Transfer.UploadedBytes, MountedBytes: res.Transfer.MountedBytes, SkippedBytes: res.Transfer.SkippedBytes, RefusedMountBytes: res.Transfer.RefusedMountBytes, Notes: res.Transfer.Notes,
		DownloadedBytes: res.ReadBytes, Stages: stageMap(res.Stages), Layers: layers,
	})
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
	a, err := begin(ctx, t, &p)
	if err != nil {
		return err
	}
	res, err := imageops.Remix(ctx, imageops.RemixRequest{Base: p.Base, Weights: p.Weights, Dest: p.Dest, Created: p.Created}, a.options(platformOpt(p.Platform))...)
	if err != nil {
		return err
	}
	s := storage.Success{Result: res.Ref.String(), BaseDigest: res.Base.String(), UploadedBytes: res.Transfer.UploadedBytes,
		MountedBytes: res.Transfer.MountedBytes, SkippedBytes: res.Transfer.SkippedBytes, RefusedMountBytes: res.Transfer.RefusedMountBytes, Notes: res.Transfer.Notes, Stages: stageMap(res.Stages)}
	if len(res.Added) > 0 {
		s.LayerDigest = res.Added[len(res.Added)-1].String()
	}
	return a.publish(s)
}

// zstd recompresses; registrySlots has taken its registry's slot.
func (h *Handler) zstd(ctx context.Context, t *asynq.Task) error {
	var p task.ZstdPayload
	a, err := begin(ctx, t, &p)
	if err != nil {
		return err
	}
	opts := a.options(platformOpt(p.Platform))
	if h.Cache != nil {
		opts = append(opts, imageops.WithLayerCache(LayerCache(h.Cache)))
	}
	res, err := imageops.Recompress(ctx, imageops.ZstdRequest{Source: p.Source, Dest: p.Dest, Level: p.Level, MinSize: p.MinSize}, opts...)
	if err != nil {
		return err
	}
	s := storage.Success{Result: res.Ref.String(), BaseDigest: res.Source.String(), UploadedBytes: res.Transfer.UploadedBytes,
		MountedBytes: res.Transfer.MountedBytes, SkippedBytes: res.Transfer.SkippedBytes, RefusedMountBytes: res.Transfer.RefusedMountBytes, Notes: res.Transfer.Notes, DownloadedBytes: res.Transfer.DownloadedBytes, Stages: stageMap(res.Stages)}
	for _, l := range res.Layers {
		s.LayerSize += l.NewSize
		s.SavedBytes += l.OldSize - l.NewSize
		if l.Reused {
			s.ReusedLayers++
		}
	}
	return a.publish(s)
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
