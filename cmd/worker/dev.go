package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/events"
	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/cli"
	"github.com/r8im/r8im/internal/devstack"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/storage"
)

// devHooks let tests look at the dev stack while it runs.
type devHooks struct {
	// published is called once the demo's image is published, while the
	// stack still serves.
	published func(ctx context.Context, st *devstack.Stack, rec *storage.Record) error
}

// The demo's names: its base image, weights object and event.
const (
	demoBaseRepo  = "demo/base"
	demoModelRepo = "demo/model"
	demoWeights   = "demo/weights.tar"
	demoEventID   = "demo-1"
	envFileName   = "env"
)

// dev is a running dev stack: the embedded services, a worker and the
// event receiver.
type dev struct {
	st          *devstack.Stack
	base        name.Digest
	weights     string // s3:// URL of the demo tarball
	secret      string // the receiver's signing secret, made at start
	eventsURL   string // http://host:port of the receiver
	metricsAddr string // the worker's /metrics, /healthz, /readyz
	envFile     string
}

// runDev runs the worker and the event receiver against an embedded stack;
// with --demo it publishes the demo image and returns.
func runDev(ctx context.Context, cfg *config.Worker, cmd *cobra.Command, log *slog.Logger, lookup config.LookupFunc, hooks devHooks) (err error) {
	out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
	dataDir := cfg.DataDir
	if dataDir == "" {
		if dataDir, err = os.MkdirTemp("", "r8im-dev-"); err != nil {
			return fmt.Errorf("creating a data directory for --dev: %w (pass --data-dir)", err)
		}
		defer os.RemoveAll(dataDir)
	} else if dataDir, err = filepath.Abs(dataDir); err != nil {
		return fmt.Errorf("resolving --data-dir: %w", err)
	}
	st, err := devstack.Start(ctx, devstack.Options{DataDir: dataDir, Log: log})
	if err != nil {
		return err
	}
	defer st.Close()
	d := &dev{st: st, secret: devstack.RandomSecret(), envFile: filepath.Join(dataDir, envFileName)}

	// The worker's own settings now point at the stack.
	cfg.Redis.URL = config.SecretURL(st.RedisURL)
	cfg.Registry.Host = st.Registry
	cfg.S3.Endpoint, cfg.S3.Region, cfg.S3.PathStyle = st.S3Endpoint, st.S3Region, true
	cfg.S3.AccessKeyID, cfg.S3.SecretAccessKey, cfg.S3.SessionToken = config.Secret(st.S3AccessKey), config.Secret(st.S3SecretKey), ""
	if _, set := lookup("R8IM_HTTP_ADDR"); !set && !cmd.Flag("http-addr").Changed {
		cfg.HTTPAddr = "127.0.0.1:0" // a free port: a production worker may hold 9090
	}

	if d.base, err = devstack.PushBase(ctx, st.Registry+"/"+demoBaseRepo); err != nil {
		return err
	}
	if d.weights, err = st.PutObject(ctx, demoWeights, devstack.Tar(devstack.DemoWeights())); err != nil {
		return err
	}

	wctx, stopWorker := context.WithCancel(ctx)
	workerDone := make(chan error, 1)
	started := make(chan string, 1)
	go func() { workerDone <- serve(wctx, cfg, log, func(addr string) { started <- addr }) }()
	select {
	case d.metricsAddr = <-started:
	case err := <-workerDone:
		stopWorker()
		return err
	}
	defer func() {
		stopWorker()
		if werr := <-workerDone; err == nil {
			err = werr
		}
	}()

	stopReceiver, err := d.startReceiver(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer stopReceiver()
	if err := d.writeEnv(); err != nil {
		return err
	}
	defer os.Remove(d.envFile) // its addresses die with the stack
	d.printAddresses(errOut)

	if cfg.Demo {
		return d.demo(ctx, out, errOut, cfg, hooks)
	}
	fmt.Fprintf(out, "# r8im dev stack is running; in another shell: . %s (or paste these lines)\n", d.envFile)
	for _, kv := range d.env() {
		fmt.Fprintf(out, "export %s=%s\n", kv[0], shellQuote(kv[1]))
	}
	fmt.Fprintln(errOut, "dev: ready; Ctrl-C stops the stack")
	select {
	case <-ctx.Done():
		return nil
	case err := <-workerDone:
		workerDone <- err // for the deferred wait
		return err
	}
}

// startReceiver serves the training-event receiver on a free loopback port,
// wired as `enqueue serve` wires it, allowing the stack's bucket, and bases
// and destinations in the stack's registry.
func (d *dev) startReceiver(ctx context.Context, cfg *config.Worker, log *slog.Logger) (stop func(), err error) {
	rdb, err := cli.ConnectRedis(ctx, cfg.Redis)
	if err != nil {
		return nil, err
	}
	records := storage.NewRecords(rdb, cfg.RecordTTL)
	ecfg := config.NewEnqueue()
	enq := jobs.NewEnqueuer(rdb, records, ecfg.Tasks)
	closeAll := func() { enq.Close(); rdb.Close() }
	allow, err := events.NewAllowlists(events.AllowlistSettings{
		Sources: "s3://" + devstack.Bucket + "/*", Destinations: d.st.Registry + "/*", Bases: d.st.Registry + "/*",
		Targets: events.DefaultTarget,
	})
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("allowing the dev stack's bucket and registry: %w", err)
	}
	rc := &events.Receiver{
		Verifier: events.Verifier{Secrets: [][]byte{[]byte(d.secret)}, Tolerance: ecfg.Events.Tolerance},
		Allow:    allow, Enqueuer: enq, Records: records, Log: log,
		Ping:    func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
		Metrics: promhttp.Handler(),
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("listening for events: %w", err)
	}
	srv := &http.Server{Handler: rc.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, WriteTimeout: time.Minute}
	go func() { _ = srv.Serve(l) }()
	d.eventsURL = "http://" + l.Addr().String()
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		closeAll()
	}, nil
}

// env is what points enqueue, r8im, curl and a second worker at the stack.
func (d *dev) env() [][2]string {
	return append(d.st.Env(),
		[2]string{"R8IM_EVENT_SECRETS", d.secret},
		[2]string{"R8IM_EVENTS_URL", d.eventsURL},
		[2]string{"R8IM_DEV_BASE", d.base.String()},
		[2]string{"R8IM_DEV_WEIGHTS", d.weights},
		[2]string{"R8IM_DEV_WORKER_HTTP", "http://" + d.metricsAddr},
	)
}

// writeEnv writes the environment as a shell file only its owner reads (it
// holds the event secret). os.WriteFile would keep the mode of a file left
// by an earlier run (0644, say), so the file is written under a new name,
// created 0600 by os.CreateTemp, and renamed over the old one.
func (d *dev) writeEnv() error {
	var b strings.Builder
	b.WriteString("# r8im dev stack (worker --dev); valid while it runs. Source it: . " + d.envFile + "\n")
	for _, kv := range d.env() {
		fmt.Fprintf(&b, "export %s=%s\n", kv[0], shellQuote(kv[1]))
	}
	f, err := os.CreateTemp(filepath.Dir(d.envFile), "."+envFileName+"-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", d.envFile, err)
	}
	defer os.Remove(f.Name()) // after the rename, nothing is there
	_, err = f.WriteString(b.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), d.envFile)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", d.envFile, err)
	}
	return nil
}

func (d *dev) printAddresses(w io.Writer) {
	fmt.Fprintf(w, `dev: Redis     %s (embedded miniredis, in memory)
dev: registry  %s (blobs in %s)
dev: S3        %s (bucket %s in %s)
dev: events    %s/v1/events/training-completed
dev: worker    http://%s/metrics, /healthz, /readyz
dev: base      %s
dev: weights   %s
dev: env       %s
`, d.st.RedisURL, d.st.Registry, filepath.Join(d.st.DataDir, "registry"), d.st.S3Endpoint, devstack.Bucket,
		filepath.Join(d.st.DataDir, "s3"), d.eventsURL, d.metricsAddr, d.base, d.weights, d.envFile)
}

// demo publishes the demo image the way production does: a signed
// training-completion event to the receiver, then the record by polling the
// receiver. The result and its layers go to stdout.
func (d *dev) demo(ctx context.Context, out, errOut io.Writer, cfg *config.Worker, hooks devHooks) error {
	client := &http.Client{Timeout: 30 * time.Second}
	ev := events.TrainingCompleted{
		ID: demoEventID, Base: d.base.String(), Weights: d.weights,
		Destination: events.Destination{Repo: d.st.Registry + "/" + demoModelRepo, Tag: demoEventID},
		CompletedAt: time.Now().UTC().Truncate(time.Second),
		Metadata:    json.RawMessage(`{"trainer": "r8im demo"}`),
	}
	acc, err := devstack.SendEvent(ctx, client, d.eventsURL, []byte(d.secret), ev)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	fmt.Fprintf(errOut, "demo: signed event %s accepted, task %s (%s)\n", acc.EventID, acc.TaskID, acc.State)
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	rec, err := devstack.WaitEvent(wctx, client, d.eventsURL, []byte(d.secret), ev.ID, 200*time.Millisecond, func(r *storage.Record) {
		if r.LastError != "" {
			fmt.Fprintf(errOut, "demo: %s, last error: %s\n", r.State, r.LastError)
		} else {
			fmt.Fprintf(errOut, "demo: %s\n", r.State)
		}
	})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if rec.State != storage.StateSucceeded {
		return fmt.Errorf("demo: publishing failed after %d attempts: %s", rec.Attempts, rec.LastError)
	}
	fmt.Fprintf(errOut, "demo: weights layer %s: %s read from S3, %s uploaded to the registry\n",
		rec.LayerDigest, humanize.IBytes(uint64(rec.DownloadedBytes)), humanize.IBytes(uint64(rec.UploadedBytes)))
	fmt.Fprintln(out, rec.Result)
	opts, err := cli.ImageOptions(cfg.Registry)
	if err != nil {
		return err
	}
	layers, err := imageops.Layers(ctx, rec.Result, opts...)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	for _, r := range layers {
		cli.PrintLayers(out, r)
	}
	if hooks.published != nil {
		return hooks.published(ctx, d.st, rec)
	}
	return nil
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
