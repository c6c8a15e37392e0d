package jobs_test

import (
	"context"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/jobs/task"
	"github.com/r8im/r8im/storage"
)

// gather returns every series of g as "name{label=value,…}" → value;
// histograms give name_count{…} and name_sum{…}.
func gather(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(labels)
			key := func(suffix string) string { return mf.GetName() + suffix + "{" + strings.Join(labels, ",") + "}" }
			switch {
			case m.GetCounter() != nil:
				out[key("")] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key("")] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				out[key("_count")] = float64(m.GetHistogram().GetSampleCount())
				out[key("_sum")] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}

// mismatches lists the series of got that differ from want (by more than
// a microsecond's worth, for float sums) or are missing.
func mismatches(got, want map[string]float64) []string {
	var bad []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			bad = append(bad, k+" missing")
		case math.Abs(g-w) > 1e-6:
			bad = append(bad, k+" = "+ftoa(g)+", want "+ftoa(w))
		}
	}
	sort.Strings(bad)
	return bad
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func TestMetricsObserveOutcomes(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := jobs.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.Observe(jobs.Outcome{Type: task.TypeAffix, Queue: "publish", Status: jobs.OutcomeSucceeded, Duration: 3 * time.Second, Success: storage.Success{
		DownloadedBytes: 1000, UploadedBytes: 900, MountedBytes: 5000, SkippedBytes: 700, RefusedMountBytes: 300, Stages: map[string]float64{"resolve": 0.5, "upload": 2, "push": 0.25},
		Layers: []storage.LayerRecord{{Source: "uploaded", Size: 600}, {Source: "mounted", Size: 5000}, {Source: "uploaded", Size: 200}},
	}})
	m.Observe(jobs.Outcome{Type: task.TypeZstd, Queue: "backfill", Status: jobs.OutcomeSucceeded, Duration: time.Second, Success: storage.Success{
		DownloadedBytes: 70, UploadedBytes: 40, ReusedLayers: 2, Stages: map[string]float64{"recompress": 0.75},
	}})
	m.Observe(jobs.Outcome{Type: task.TypeAffix, Queue: "publish", Status: jobs.OutcomeRetry, Duration: 500 * time.Millisecond})
	m.Observe(jobs.Outcome{Type: task.TypeAffix, Queue: "publish", Status: jobs.OutcomeFailed, Duration: 250 * time.Millisecond,
		Success: storage.Success{UploadedBytes: 123}}) // figures of a failure are not counted

	got := gather(t, reg)
	want := map[string]float64{
		`r8im_task_duration_seconds_count{status=succeeded,type=image:affix}`: 1,
		`r8im_task_duration_seconds_sum{status=succeeded,type=image:affix}`:   3,
		`r8im_task_duration_seconds_count{status=retry,type=image:affix}`:     1,
		`r8im_task_duration_seconds_count{status=failed,type=image:affix}`:    1,
		`r8im_task_duration_seconds_sum{status=failed,type=image:affix}`:      0.25,
		`r8im_task_duration_seconds_count{status=succeeded,type=image:zstd}`:  1,
		`r8im_downloaded_bytes_total{type=image:affix}`:                       1000,
		`r8im_uploaded_bytes_total{type=image:affix}`:                         900,
		`r8im_mounted_bytes_total{type=image:affix}`:                          5700, // mounted or already there
		`r8im_refused_mount_bytes_total{type=image:affix}`:                    300,
		`r8im_reused_layers_total{type=image:affix}`:                          0,
		`r8im_downloaded_bytes_total{type=image:zstd}`:                        70,
		`r8im_uploaded_bytes_total{type=image:zstd}`:                          40,
		`r8im_reused_layers_total{type=image:zstd}`:                           2,
		`r8im_stage_duration_seconds_count{stage=resolve,type=image:affix}`:   1,
		`r8im_stage_duration_seconds_sum{stage=upload,type=image:affix}`:      2,
		`r8im_stage_duration_seconds_sum{stage=push,type=image:affix}`:        0.25,
		`r8im_stage_duration_seconds_sum{stage=recompress,type=image:zstd}`:   0.75,
		`r8im_stage_duration_seconds_count{stage=recompress,type=image:zstd}`: 1,
		`r8im_weights_layers_total{source=uploaded}`:                          2,
		`r8im_weights_layers_total{source=mounted}`:                           1,
		`r8im_weights_layer_bytes_total{source=uploaded}`:                     800,
		`r8im_weights_layer_bytes_total{source=mounted}`:                      5000,
	}
	for _, bad := range mismatches(got, want) {
		t.Error(bad)
	}
	if _, ok := got[`r8im_task_duration_seconds_count{status=interrupted,type=image:affix}`]; ok {
		t.Error("a status that never happened has a series")
	}
	if _, err := jobs.NewMetrics(reg); err == nil {
		t.Error("registering the metrics twice on one registry succeeded; want an error")
	}
}

// TestMetricsAfterRealTasks runs a worker with the metrics on real Redis and
// a real registry: one affix that succeeds and one that fails for good, then
// checks the task series against the records and the queue series against
// what asynq holds.
func TestMetricsAfterRealTasks(t *testing.T) {
	forEachReg(t, func(t *testing.T, regEnv testenv.RegistryEnv) {
		ctx := context.Background()
		rs, regsrv := testenv.Redis(t), regEnv.RegistryServer
		rdb := rs.Client(t)
		base := regEnv.SeedBase(t, "metrics", testenv.OCI).String()
		tarPath, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 2, FileSize: 1 << 20, Seed: 71})
		records := storage.NewRecords(rdb, time.Hour)

		reg := prometheus.NewRegistry()
		m, err := jobs.NewMetrics(reg)
		if err != nil {
			t.Fatal(err)
		}
		reg.MustRegister(jobs.NewQueueCollector(rdb))
		sources, err := storage.NewSources(ctx, config.NewWorker().S3)
		if err != nil {
			t.Fatal(err)
		}
		if active, err := jobs.ServerActive(ctx, rdb); err != nil || active {
			t.Fatalf("ServerActive before the server runs = %v, %v; want false, nil", active, err)
		}
		log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
		srv := jobs.NewServer(rdb, jobs.ServerConfig{Concurrency: 2, Queues: config.DefaultQueues, ShutdownTimeout: 5 * time.Second, Log: log},
			&jobs.Handler{Records: records, Sources: sources, Log: log, Observe: m.Observe,
				Options: []imageops.Option{imageops.WithTransport(regsrv.Transport()), imageops.WithKeychain(regEnv.User.Keychain())}})
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = srv.Run(runCtx) }()
		t.Cleanup(func() { stop(); <-done })

		enq := jobs.NewEnqueuer(rdb, records, config.NewEnqueue().Tasks)
		t.Cleanup(func() { enq.Close() })
		for _, p := range []task.AffixPayload{
			{EventID: "m-ok", Base: base, Weights: "file://" + tarPath, Dest: regEnv.User.Repo("models/metrics:ok"), Created: created},
			{EventID: "m-nobase", Base: regsrv.Host + "/" + testenv.BaseNamespace + "/missing:v1", Weights: "file://" + tarPath, Dest: regEnv.User.Repo("models/metrics:no"), Created: created},
		} {
			if _, err := enq.Enqueue(ctx, task.Request{Queue: task.QueuePublish, EventID: p.EventID, Payload: p}); err != nil {
				t.Fatalf("enqueueing %s: %v", p.EventID, err)
			}
		}
		final := func(id string) *storage.Record {
			return waitRecord(t, records, id, time.Minute, storage.StateSucceeded, storage.StateFailed)
		}
		ok, failed := final("affix:m-ok"), final("affix:m-nobase")
		if ok.State != storage.StateSucceeded || failed.State != storage.StateFailed {
			t.Fatalf("records: %s %s (%s), %s %s; want one success and one failure", ok.ID, ok.State, ok.LastError, failed.ID, failed.State)
		}

		want := map[string]float64{
			`r8im_task_duration_seconds_count{status=succeeded,type=image:affix}`: 1,
			`r8im_task_duration_seconds_count{status=failed,type=image:affix}`:    1,
			`r8im_downloaded_bytes_total{type=image:affix}`:                       float64(ok.DownloadedBytes),
			`r8im_uploaded_bytes_total{type=image:affix}`:                         float64(ok.UploadedBytes),
			`r8im_mounted_bytes_total{type=image:affix}`:                          float64(ok.MountedBytes),
			`r8im_reused_layers_total{type=image:affix}`:                          0,
			`r8im_queue_metrics_up{}`:                                             1,
			`asynq_tasks_enqueued_total{queue=publish,state=completed}`:           1,
			`asynq_tasks_enqueued_total{queue=publish,state=archived}`:            1,
			`asynq_tasks_enqueued_total{queue=publish,state=pending}`:             0,
			`asynq_tasks_enqueued_total{queue=publish,state=active}`:              0,
			`asynq_tasks_enqueued_total{queue=publish,state=retry}`:               0,
			`asynq_queue_size{queue=publish}`:                                     2,
			`asynq_queue_latency_seconds{queue=publish}`:                          0,
			`asynq_tasks_processed_total{queue=publish}`:                          2,
			`asynq_tasks_failed_total{queue=publish}`:                             1,
			`asynq_queue_paused_total{queue=publish}`:                             0,
		}
		if len(ok.Stages) == 0 {
			t.Fatalf("the record has no stage timings: %+v", ok)
		}
		for stage, secs := range ok.Stages {
			want[`r8im_stage_duration_seconds_count{stage=`+stage+`,type=image:affix}`] = 1
			want[`r8im_stage_duration_seconds_sum{stage=`+stage+`,type=image:affix}`] = secs
		}
		if ok.DownloadedBytes <= 0 || ok.UploadedBytes < ok.LayerSize {
			t.Fatalf("the record's figures are implausible: %+v", ok)
		}
		// The attempt is observed, and asynq marks the task done, just after
		// the record is written: poll briefly.
		testenv.Eventually(t, 10*time.Second, "the metrics of both tasks", func() (bool, string) {
			bad := mismatches(gather(t, reg), want)
			return len(bad) == 0, strings.Join(bad, "; ")
		})

		if active, err := jobs.ServerActive(ctx, rdb); err != nil || !active {
			t.Errorf("ServerActive while the server runs = %v, %v; want true", active, err)
		}
		stop()
		<-done
		if active, _ := jobs.ServerActive(ctx, rdb); active {
			t.Error("ServerActive after shutdown = true")
		}
	})
}

// TestQueueMetricsWithoutRedis keeps the scrape working when Redis is down.
func TestQueueMetricsWithoutRedis(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	reg := prometheus.NewRegistry()
	reg.MustRegister(jobs.NewQueueCollector(rdb))
	got := gather(t, reg)
	if v, ok := got[`r8im_queue_metrics_up{}`]; !ok || v != 0 {
		t.Fatalf("r8im_queue_metrics_up = %v (present %v); want 0 when Redis does not answer", v, ok)
	}
	if len(got) != 1 {
		t.Errorf("series without Redis: %v; want only r8im_queue_metrics_up", got)
	}
	if _, err := jobs.ServerActive(context.Background(), rdb); err == nil || !strings.Contains(err.Error(), "reaching Redis") {
		t.Errorf("ServerActive without Redis = %v; want an error about reaching Redis", err)
	}
}
