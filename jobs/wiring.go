package jobs

import (
	"log/slog"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/storage"
)

// NewHandler is the handler a worker process runs, everything in Redis rdb
// and set from cfg: records, the shared-layer cache, batches, callback
// signing and queueing, the per-registry bound and the tarball limits.
// opts give registry access. Callers may set Observe and ProgressEvery
// after.
//
// cfg.Network applies to registries (CA file, manifest cap, idle timeout)
// and callbacks (and the private networks they may reach); cfg.Validate
// has checked it, so a CA file that no longer reads is logged and the
// system's CAs used.
func NewHandler(rdb redis.UniversalClient, cfg *config.Worker, sources WeightsSource, opts []imageops.Option, log *slog.Logger) *Handler {
	records := storage.NewRecords(rdb, cfg.RecordTTL)
	l := cfg.Limits
	roots, err := cfg.Network.RootCAs()
	if err != nil && log != nil {
		log.Error("R8IM_CA_FILE cannot be used; the system's CAs are", "error", err)
	}
	callbacks, err := CallbackClient(&cfg.Network)
	if err != nil {
		callbacks = nil // the default client: system CAs
	}
	return &Handler{
		Records: records,
		Sources: sources,
		Options: append(append([]imageops.Option{}, opts...),
			imageops.WithUserAgent("r8im-worker"),
			imageops.WithRootCAs(roots),
			imageops.WithMaxManifestSize(cfg.Network.MaxManifestSize),
			imageops.WithIdleTimeout(cfg.Network.IdleTimeout),
			imageops.WithTarLimits(imageops.TarLimits{MaxEntries: l.MaxTarEntries, MaxNameLength: l.MaxNameLength, MaxBytes: l.MaxWeightsSize})),
		Log:                 log,
		Cache:               storage.NewLayerCache(rdb),
		Uploads:             storage.NewUploadSessions(rdb, 0),
		LayerDigests:        storage.NewLayerDigests(rdb, 0),
		Layout:              imageops.Layout(cfg.WeightsLayers),
		Jobs:                cfg.UploadJobs,
		Batches:             storage.NewBatches(records, cfg.RecordTTL),
		Callbacks:           Callbacks{Keys: cfg.Callbacks.SecretKeys(), MaxRetry: cfg.Callbacks.MaxRetry, Client: callbacks},
		CallbackQueue:       asynq.NewClientFromRedisClient(rdb),
		Slots:               storage.NewSemaphore(rdb),
		RegistryConcurrency: cfg.Callbacks.RegistryConcurrency,
	}
}
