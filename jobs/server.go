package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/internal/retry"
)

// ServerConfig is what the worker's configuration decides for the server.
type ServerConfig struct {
	Concurrency     int
	Queues          map[string]int
	ShutdownTimeout time.Duration
	Log             *slog.Logger
	// RetryDelay overrides asynq's exponential backoff (tests use a short one).
	RetryDelay func(retried int, err error) time.Duration
}

// Server runs the handlers on the queues.
type Server struct {
	srv *asynq.Server
	mux *asynq.ServeMux
}

// NewServer builds a server over rdb. Several servers on one Redis share
// the work.
func NewServer(rdb redis.UniversalClient, cfg ServerConfig, h *Handler) *Server {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		RetryDelayFunc: retryDelay(cfg.RetryDelay),
		// A task that found its registry busy was not failing: it is retried
		// without using up its retries.
		IsFailure:       func(err error) bool { return !errors.Is(err, ErrRegistryBusy) },
		Concurrency:     cfg.Concurrency,
		Queues:          cfg.Queues,
		ShutdownTimeout: cfg.ShutdownTimeout,
		Logger:          slogAdapter{log},
		ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
			// The logging middleware has already said why; nothing more here.
		}),
	})
	return &Server{srv: srv, mux: h.Mux()}
}

// Run processes tasks until ctx ends, then shuts down gracefully: running
// tasks get ShutdownTimeout to finish, then are requeued.
func (s *Server) Run(ctx context.Context) error {
	if err := s.srv.Start(s.mux); err != nil {
		return fmt.Errorf("starting the task server: %w", err)
	}
	<-ctx.Done()
	s.srv.Shutdown()
	return nil
}

// slogAdapter is asynq's Logger over slog.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...), "component", "asynq") }
func (a slogAdapter) Info(args ...any)  { a.l.Info(fmt.Sprint(args...), "component", "asynq") }
func (a slogAdapter) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...), "component", "asynq") }
func (a slogAdapter) Error(args ...any) { a.l.Error(fmt.Sprint(args...), "component", "asynq") }

// Fatal exits, as asynq expects of its logger (its default is log.Fatal).
func (a slogAdapter) Fatal(args ...any) {
	a.l.Error(fmt.Sprint(args...), "component", "asynq", "fatal", true)
	os.Exit(1)
}

// retryDelay is asynq's exponential backoff (or base), lengthened to the
// pause a registry asked for with Retry-After.
func retryDelay(base func(int, error) time.Duration) asynq.RetryDelayFunc {
	return func(n int, err error, t *asynq.Task) time.Duration {
		if errors.Is(err, ErrRegistryBusy) {
			return time.Second + rand.N(4*time.Second)
		}
		d := asynq.DefaultRetryDelayFunc(n, err, t)
		if base != nil {
			d = base(n, err)
		}
		if after, ok := retry.After(err); ok && after > d {
			return after
		}
		return d
	}
}
