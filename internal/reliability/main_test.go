package reliability

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/internal/cli"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/storage"
)

// childEnv, when set to "worker", makes the test binary a worker process
// (the self-exec pattern): the fault tests start, kill and stop real worker
// processes without depending on cmd/worker's wiring.
const childEnv = "R8IM_RELIABILITY_CHILD"

// retryDelayEnv sets the child's retry delay (asynq's backoff is minutes).
const retryDelayEnv = "R8IM_TEST_RETRY_DELAY"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "worker" {
		os.Exit(workerMain())
	}
	os.Exit(m.Run())
}

// workerMain is a worker process configured the way cmd/worker is: the
// config loaded from the environment (REDIS_URL, AWS_*, DOCKER_CONFIG,
// R8IM_*), logged once at start, the same handler and server, stopped
// gracefully on SIGTERM.
func workerMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg := config.NewWorker()
	cfg.Load(os.LookupEnv)
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log := cli.NewLogger(cfg.Log, os.Stderr)
	rdb, err := cli.ConnectRedis(ctx, cfg.Redis)
	if err != nil {
		log.Error("connecting to Redis", "error", err)
		return 1
	}
	defer rdb.Close()
	sources, err := storage.NewSources(ctx, cfg.S3, storage.WithNetwork(&cfg.Network))
	if err != nil {
		log.Error("setting up S3", "error", err)
		return 1
	}
	opts, err := cli.ImageOptions(cfg.Registry)
	if err != nil {
		log.Error("registry options", "error", err)
		return 1
	}
	retry := 200 * time.Millisecond
	if v, err := time.ParseDuration(os.Getenv(retryDelayEnv)); err == nil {
		retry = v
	}
	h := jobs.NewHandler(rdb, cfg, sources, opts, log) // as cmd/worker builds it
	h.Hint = cli.WorkerHint
	h.ProgressEvery = 100 * time.Millisecond
	srv := jobs.NewServer(rdb, jobs.ServerConfig{
		Concurrency: cfg.Concurrency, Queues: cfg.Queues, ShutdownTimeout: cfg.ShutdownTimeout, Log: log,
		RetryDelay: func(int, error) time.Duration { return retry },
	}, h)
	log.Info("worker started", "config", cfg, "pid", strconv.Itoa(os.Getpid()))
	err = srv.Run(ctx)
	log.Info("worker stopped")
	if err != nil {
		log.Error("worker", "error", err)
		return 1
	}
	return 0
}
