package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/events"
	"github.com/r8im/r8im/internal/cli"
	"github.com/r8im/r8im/jobs"
)

func (a *app) serveCmd() *cobra.Command {
	return a.uses(&cobra.Command{
		Use:   "serve",
		Short: "Receive signed training-completion events over HTTP and queue their publishing",
		Long: `serve listens on --listen (R8IM_EVENTS_ADDR) for
POST /v1/events/training-completed. Each event must carry the header
R8im-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
made with one of R8IM_EVENT_SECRETS (several may be valid at once, for
rotation) within --event-tolerance of now; unsigned, badly signed or stale
events get 401 and nothing is queued. The header and its time are checked
before the body is read; at most --max-event-bodies bodies of at most 1 MiB
are read at once (more get 503 with Retry-After). Bodies are parsed strictly
and checked against R8IM_ALLOWED_SOURCES, R8IM_ALLOWED_DESTINATIONS,
R8IM_ALLOWED_CALLBACK_HOSTS, R8IM_ALLOWED_BASES and R8IM_ALLOWED_TARGETS; a
bad event gets 400 listing every problem. A new event gets 202 with its task
id; the same event again gets 200 with the same id.

GET /v1/events/{id} returns the event's record to holders of an event
secret: sign "<t>.GET /v1/events/{id}" (method and path, no body) the same
way. Its URLs come without query strings or user info, its last error
filtered. /healthz and /metrics need no signature.`,
		Example: `  R8IM_EVENT_SECRETS=$(openssl rand -hex 32) R8IM_ALLOWED_SOURCES='s3://weights/*' \
  R8IM_ALLOWED_DESTINATIONS='r8.im/acme/*' R8IM_ALLOWED_BASES='r8.im/acme/*' enqueue serve --listen 0.0.0.0:8080`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.cfg.ValidateServe(); err != nil {
				return err
			}
			ev := a.cfg.Events
			allow, err := events.NewAllowlists(events.AllowlistSettings{
				Sources: ev.AllowedSources, Destinations: ev.AllowedDestinations, CallbackHosts: ev.AllowedCallbackHosts,
				Bases: ev.AllowedBases, Targets: ev.AllowedTargets,
			})
			if err != nil {
				return err
			}
			rdb, records, err := a.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer rdb.Close()
			e := jobs.NewEnqueuer(rdb, records, a.cfg.Tasks)
			defer e.Close()
			log := cli.NewLogger(a.cfg.Log, cmd.ErrOrStderr())
			for env, list := range map[string][]string{
				events.EnvAllowedSources: allow.Sources, events.EnvAllowedDestinations: allow.Destinations, events.EnvAllowedBases: allow.Bases,
			} {
				if len(list) == 0 {
					log.Warn(env + " is empty: every event will be refused until it is set")
				}
			}
			rc := &events.Receiver{
				Verifier: events.Verifier{Secrets: a.cfg.Events.SecretList(), Tolerance: a.cfg.Events.Tolerance},
				Allow:    allow, Enqueuer: e, Records: records, Log: log, MaxBodies: ev.MaxBodies,
				Ping: func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
			}
			// The receiver's own gauge, next to the process's default metrics.
			reg := prometheus.NewRegistry()
			reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "r8im_events_bodies_reading",
				Help: "Event bodies being read or handled now; at most R8IM_MAX_EVENT_BODIES, beyond which events get 503.",
			}, func() float64 { return float64(rc.BodiesReading()) }))
			rc.Metrics = promhttp.HandlerFor(prometheus.Gatherers{prometheus.DefaultGatherer, reg}, promhttp.HandlerOpts{})
			return listenAndServe(cmd.Context(), a.cfg.Events.Addr, rc.Handler(), log.Info)
		},
	}, config.SectionRedis, config.SectionLog, config.SectionTasks, config.SectionEvents, config.SectionRecords)
}

// listenAndServe serves h until ctx ends, then drains requests for 10s.
func listenAndServe(ctx context.Context, addr string, h http.Handler, logf func(string, ...any)) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w (set --listen or R8IM_EVENTS_ADDR)", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, WriteTimeout: time.Minute}
	logf("receiving events", "addr", l.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
