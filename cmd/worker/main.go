// Command worker runs r8im's asynq task handlers: it fetches weights, affixes,
// remixes or recompresses images, pushes them and records the results.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/cli"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/storage"
)

func main() { cli.Main(newRoot(os.LookupEnv)) }

func newRoot(lookup config.LookupFunc) *cobra.Command {
	cfg := config.NewWorker()
	root := cli.Root("worker",
		"Process r8im publishing tasks from Redis",
		`worker serves r8im's asynq queues (publish > ops > backfill): it fetches
weights tarballs from S3, affixes them onto base images (or remixes and
recompresses images), pushes to the registry and records each result in Redis.
Run as many workers as you like against one Redis: they share the work.

On SIGTERM, running tasks get --shutdown-timeout to finish; unfinished ones are
requeued, not failed. /healthz and /metrics are served on --http-addr.

Every flag can also be set by the environment variable named in its help.`,
		"  REDIS_URL=redis://127.0.0.1:6379/0 AWS_ENDPOINT_URL_S3=http://127.0.0.1:9000 R8IM_S3_PATH_STYLE=true worker\n  worker config")
	cfg.RegisterFlags(root.PersistentFlags())
	root.PersistentPreRunE = cli.LoadConfig(cfg, lookup)
	root.RunE = func(cmd *cobra.Command, _ []string) error { return run(cmd.Context(), cfg, cmd) }
	root.AddCommand(cli.ConfigCommand("worker", cfg))
	return root
}

func run(ctx context.Context, cfg *config.Worker, cmd *cobra.Command) error {
	log := cli.NewLogger(cfg.Log, cmd.ErrOrStderr())
	rdb, err := cli.ConnectRedis(ctx, cfg.Redis)
	if err != nil {
		return err
	}
	defer rdb.Close()
	sources, err := storage.NewSources(ctx, cfg.S3)
	if err != nil {
		return fmt.Errorf("setting up S3: %w", err)
	}
	opts, err := cli.ImageOptions(cfg.Registry)
	if err != nil {
		return err
	}
	h := &jobs.Handler{
		Records: storage.NewRecords(rdb, cfg.RecordTTL),
		Sources: sources,
		Options: append(opts, imageops.WithUserAgent("r8im-worker")),
		Log:     log,
	}
	srv := jobs.NewServer(rdb, jobs.ServerConfig{
		Concurrency: cfg.Concurrency, Queues: cfg.Queues, ShutdownTimeout: cfg.ShutdownTimeout, Log: log,
	}, h)

	httpSrv, err := serveHTTP(cfg.HTTPAddr, rdb)
	if err != nil {
		return err
	}
	defer httpSrv.Close()
	log.Info("worker started", "config", cfg, "http", cfg.HTTPAddr)
	err = srv.Run(ctx)
	log.Info("worker stopped")
	return err
}

// serveHTTP serves /healthz (Redis reachable) and /metrics.
func serveHTTP(addr string, rdb redis.UniversalClient) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := rdb.Ping(ctx).Err(); err != nil {
			http.Error(w, "redis: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/metrics", promhttp.Handler())
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s for /metrics and /healthz: %w (set R8IM_HTTP_ADDR or --http-addr)", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("http server", "error", err)
		}
	}()
	return srv, nil
}
