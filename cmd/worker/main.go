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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/internal/cli"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/storage"
)

func main() { cli.Main(newRoot(os.LookupEnv)) }

func newRoot(lookup config.LookupFunc) *cobra.Command { return newRootWith(lookup, devHooks{}) }

// newRootWith is newRoot with hooks into the dev stack (tests use them).
func newRootWith(lookup config.LookupFunc, hooks devHooks) *cobra.Command {
	cfg := config.NewWorker()
	root := cli.Root("worker",
		"Process r8im publishing tasks from Redis",
		`worker serves r8im's asynq queues (publish > ops > backfill): it fetches
weights tarballs from S3, affixes them onto base images (or remixes and
recompresses images), pushes to the registry and records each result in Redis.
Run as many workers as you like against one Redis: they share the work.

On SIGTERM, running tasks get --shutdown-timeout to finish; unfinished ones are
requeued, not failed. --http-addr serves /metrics (Prometheus), /healthz (the
process is alive) and /readyz (Redis answers and the task server is active).

--dev runs everything in this one process, with nothing installed but Go: an
embedded Redis, OCI registry and S3 endpoint plus the event receiver, all on
loopback, and prints the environment that points enqueue and r8im at them.
--dev --demo then publishes a demo image through a signed training event,
prints it and its layers, and exits.

Every flag can also be set by the environment variable named in its help.`,
		`  go run ./cmd/worker --dev --demo
  worker --dev --data-dir ~/.cache/r8im/dev  # then, in another shell: . ~/.cache/r8im/dev/env; enqueue affix …
  REDIS_URL=redis://127.0.0.1:6379/0 AWS_ENDPOINT_URL_S3=http://127.0.0.1:9000 R8IM_S3_PATH_STYLE=true worker
  worker config`)
	cfg.RegisterFlags(root.PersistentFlags())
	root.PersistentPreRunE = cli.LoadConfig(cfg, lookup)
	root.RunE = func(cmd *cobra.Command, _ []string) error {
		if _, set := lookup("R8IM_LOG_LEVEL"); cfg.Dev && !set && !cmd.Flag("log-level").Changed {
			cfg.Log.Level = "warn" // the dev stack narrates on stderr itself
		}
		log := cli.NewLogger(cfg.Log, cmd.ErrOrStderr())
		if cfg.Dev {
			return runDev(cmd.Context(), cfg, cmd, log, lookup, hooks)
		}
		return serve(cmd.Context(), cfg, log, nil)
	}
	root.AddCommand(cli.ConfigCommand("worker", cfg), probeCmd(cfg))
	return root
}

// serve runs the worker until ctx ends. started, when set, is called with
// the address of /metrics once tasks are being served.
func serve(ctx context.Context, cfg *config.Worker, log *slog.Logger, started func(httpAddr string)) error {
	rdb, err := cli.ConnectRedis(ctx, cfg.Redis)
	if err != nil {
		return err
	}
	defer rdb.Close()
	sources, err := storage.NewSources(ctx, cfg.S3, storage.WithNetwork(&cfg.Network))
	if err != nil {
		return fmt.Errorf("setting up S3: %w", err)
	}
	opts, err := cli.ImageOptions(cfg.Registry)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	metrics, err := jobs.NewMetrics(reg)
	if err != nil {
		return err
	}
	if err := reg.Register(jobs.NewQueueCollector(rdb)); err != nil {
		return fmt.Errorf("registering the queue metrics: %w", err)
	}
	h := jobs.NewHandler(rdb, cfg, sources, opts, log)
	h.Observe = metrics.Observe
	h.Hint = cli.WorkerHint
	srv := jobs.NewServer(rdb, jobs.ServerConfig{
		Concurrency: cfg.Concurrency, Queues: cfg.Queues, ShutdownTimeout: cfg.ShutdownTimeout, Log: log,
	}, h)

	httpSrv, addr, err := serveHTTP(cfg.HTTPAddr, rdb, reg, log)
	if err != nil {
		return err
	}
	defer httpSrv.Close()
	log.Info("worker started", "config", cfg, "http", addr)
	if started != nil {
		started(addr)
	}
	err = srv.Run(ctx)
	log.Info("worker stopped")
	return err
}

// serveHTTP serves /metrics (ours, then the process's and Go's), /healthz
// (alive: answers while the process serves HTTP) and /readyz (Redis answers
// and this process's task server heartbeats as active). It returns the
// address it listens on.
func serveHTTP(addr string, rdb redis.UniversalClient, reg *prometheus.Registry, log *slog.Logger) (*http.Server, string, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		ok, err := jobs.ServerActive(ctx, rdb)
		switch {
		case err != nil:
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		case !ok:
			http.Error(w, "not ready: the task server is not active yet", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ready")
		}
	})
	mux.Handle("/metrics", promhttp.HandlerFor(prometheus.Gatherers{reg, prometheus.DefaultGatherer}, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError),
	}))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("listening on %s for /metrics, /healthz and /readyz: %w (set R8IM_HTTP_ADDR or --http-addr)", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "error", err)
		}
	}()
	return srv, l.Addr().String(), nil
}
