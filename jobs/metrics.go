package jobs

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Metrics are the worker's Prometheus collectors of finished task attempts,
// fed by Handler.Observe:
//
//	r8im_task_duration_seconds{type,status}  histogram of attempt durations (status: succeeded, failed, retry, interrupted)
//	r8im_downloaded_bytes_total{type}        weights and layer bytes read (S3, HTTP, registry)
//	r8im_uploaded_bytes_total{type}          blob bytes sent to the registry
//	r8im_mounted_bytes_total{type}           blob bytes the registry mounted or already had: not sent
//	r8im_refused_mount_bytes_total{type}     base blob bytes the registry would not mount: downloaded and uploaded again
//	r8im_stage_duration_seconds{type,stage}  histogram of seconds per stage of succeeded tasks (imageops' stage names)
//	r8im_reused_layers_total{type}           layer conversions taken from the shared-layer cache
//	r8im_weights_layers_total{source}        weights layers published, by how they got there (uploaded, found, mounted)
//	r8im_weights_layer_bytes_total{source}   their sizes
//
// Byte counters and stages count succeeded attempts only: a failed attempt
// reports no figures.
type Metrics struct {
	duration   *prometheus.HistogramVec
	downloaded *prometheus.CounterVec
	uploaded   *prometheus.CounterVec
	mounted    *prometheus.CounterVec
	refused    *prometheus.CounterVec
	stage      *prometheus.HistogramVec
	reused     *prometheus.CounterVec
	layers     *prometheus.CounterVec
	layerBytes *prometheus.CounterVec
}

// Histogram buckets: tasks span a remix (well under a second) to a
// multi-hour affix of a large model; stages go down to a manifest PUT.
var (
	taskBuckets  = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200}
	stageBuckets = append([]float64{0.005, 0.01, 0.025}, taskBuckets...)
)

// NewMetrics registers the task collectors on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "r8im_task_duration_seconds", Help: "Duration of task attempts, by task type and outcome status (succeeded, failed, retry, interrupted).",
			Buckets: taskBuckets,
		}, []string{"type", "status"}),
		downloaded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "r8im_downloaded_bytes_total", Help: "Bytes downloaded by succeeded tasks (weights from S3/HTTP, layers from the registry), by task type.",
		}, []string{"type"}),
		uploaded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "r8im_uploaded_bytes_total", Help: "Blob bytes uploaded to the registry by succeeded tasks, by task type.",
		}, []string{"type"}),
		mounted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "r8im_mounted_bytes_total", Help: "Blob bytes that succeeded tasks did not send because the registry mounted them or already had them, by task type.",
		}, []string{"type"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "r8im_refused_mount_bytes_total", Help: "Base blob bytes that succeeded tasks copied (downloaded and uploaded again) because the registry refused to mount them, by task type.",
		}, []string{"type"}),
		stage: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "r8im_stage_duration_seconds", Help: "Seconds spent per stage (resolve, upload, push, verify, remix, recompress, ...) by succeeded tasks, by task type.",
			Buckets: stageBuckets,
		}, []string{"type", "stage"}),
		reused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "r8im_reused_layers_total", Help: "Layer conversions taken from the shared-layer cache instead of being recomputed, by task type.",
		}, []string{"type"}),
	}
	m.layers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "r8im_weights_layers_total", Help: "Weights layers of succeeded affixes, by how they got into the registry: uploaded, found (the destination had it) or mounted (from where it was pushed before).",
	}, []string{"source"})
	m.layerBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "r8im_weights_layer_bytes_total", Help: "Sizes of the weights layers of succeeded affixes, by how they got into the registry (uploaded, found, mounted).",
	}, []string{"source"})
	for _, c := range []prometheus.Collector{m.duration, m.downloaded, m.uploaded, m.mounted, m.refused, m.stage, m.reused, m.layers, m.layerBytes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering the task metrics: %w", err)
		}
	}
	return m, nil
}

// Observe records one finished attempt; it is a Handler.Observe function.
func (m *Metrics) Observe(o Outcome) {
	m.duration.WithLabelValues(o.Type, o.Status).Observe(o.Duration.Seconds())
	if o.Status != OutcomeSucceeded {
		return
	}
	s := o.Success
	m.downloaded.WithLabelValues(o.Type).Add(float64(max(s.DownloadedBytes, 0)))
	m.uploaded.WithLabelValues(o.Type).Add(float64(max(s.UploadedBytes, 0)))
	m.mounted.WithLabelValues(o.Type).Add(float64(max(s.MountedBytes, 0) + max(s.SkippedBytes, 0)))
	m.refused.WithLabelValues(o.Type).Add(float64(max(s.RefusedMountBytes, 0)))
	m.reused.WithLabelValues(o.Type).Add(float64(max(s.ReusedLayers, 0)))
	for _, l := range s.Layers {
		m.layers.WithLabelValues(l.Source).Inc()
		m.layerBytes.WithLabelValues(l.Source).Add(float64(max(l.Size, 0)))
	}
	for name, secs := range s.Stages {
		m.stage.WithLabelValues(o.Type, name).Observe(secs)
	}
}

// QueueCollector exports the state of every asynq queue in Redis at scrape
// time, under the names of asynq's own x/metrics exporter (which asynqmon's
// metrics view reads), without that module's old go-redis:
//
//	asynq_tasks_enqueued_total{queue,state}      tasks per state (pending, active, scheduled, retry, archived, completed, aggregating); a gauge
//	asynq_queue_size{queue}                       tasks in the queue
//	asynq_queue_latency_seconds{queue}            how long the oldest pending task has waited
//	asynq_queue_memory_usage_approx_bytes{queue}  sampled memory use
//	asynq_tasks_processed_total{queue}            tasks processed, succeeded or failed, ever
//	asynq_tasks_failed_total{queue}               tasks failed, ever
//	asynq_queue_paused_total{queue}               1 when the queue is paused
//	r8im_queue_metrics_up                         0 when Redis could not be read at this scrape
//
// Every worker exports the same figures: aggregate them with max, not sum.
type QueueCollector struct {
	insp *asynq.Inspector
	mu   sync.Mutex // one Redis walk at a time
}

// NewQueueCollector reads the queues from rdb.
func NewQueueCollector(rdb redis.UniversalClient) *QueueCollector {
	return &QueueCollector{insp: asynq.NewInspectorFromRedisClient(rdb)}
}

var (
	queueTasksDesc     = prometheus.NewDesc("asynq_tasks_enqueued_total", "Number of tasks in a queue, by state (a gauge, named as asynq's exporter names it).", []string{"queue", "state"}, nil)
	queueSizeDesc      = prometheus.NewDesc("asynq_queue_size", "Number of tasks in a queue.", []string{"queue"}, nil)
	queueLatencyDesc   = prometheus.NewDesc("asynq_queue_latency_seconds", "Seconds the oldest pending task of a queue has waited.", []string{"queue"}, nil)
	queueMemoryDesc    = prometheus.NewDesc("asynq_queue_memory_usage_approx_bytes", "Memory used by a queue in Redis (sampled).", []string{"queue"}, nil)
	queueProcessedDesc = prometheus.NewDesc("asynq_tasks_processed_total", "Tasks processed (succeeded or failed) in a queue, ever.", []string{"queue"}, nil)
	queueFailedDesc    = prometheus.NewDesc("asynq_tasks_failed_total", "Tasks failed in a queue, ever.", []string{"queue"}, nil)
	queuePausedDesc    = prometheus.NewDesc("asynq_queue_paused_total", "1 when the queue is paused, else 0.", []string{"queue"}, nil)
	queueUpDesc        = prometheus.NewDesc("r8im_queue_metrics_up", "1 when the queue metrics could be read from Redis at this scrape, else 0.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{queueTasksDesc, queueSizeDesc, queueLatencyDesc, queueMemoryDesc, queueProcessedDesc, queueFailedDesc, queuePausedDesc, queueUpDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. A Redis failure does not fail
// the scrape (the process's own metrics stay readable): it sets
// r8im_queue_metrics_up to 0.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	infos, err := c.queues()
	up := 1.0
	if err != nil {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(queueUpDesc, prometheus.GaugeValue, up)
	for _, q := range infos {
		gauge := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{q.Queue}, labels...)...)
		}
		for _, s := range []struct {
			state string
			n     int
		}{
			{"pending", q.Pending}, {"active", q.Active}, {"scheduled", q.Scheduled}, {"retry", q.Retry},
			{"archived", q.Archived}, {"completed", q.Completed}, {"aggregating", q.Aggregating},
		} {
			gauge(queueTasksDesc, float64(s.n), s.state)
		}
		gauge(queueSizeDesc, float64(q.Size))
		gauge(queueLatencyDesc, q.Latency.Seconds())
		gauge(queueMemoryDesc, float64(q.MemoryUsage))
		ch <- prometheus.MustNewConstMetric(queueProcessedDesc, prometheus.CounterValue, float64(q.ProcessedTotal), q.Queue)
		ch <- prometheus.MustNewConstMetric(queueFailedDesc, prometheus.CounterValue, float64(q.FailedTotal), q.Queue)
		paused := 0.0
		if q.Paused {
			paused = 1
		}
		gauge(queuePausedDesc, paused)
	}
}

func (c *QueueCollector) queues() ([]*asynq.QueueInfo, error) {
	names, err := c.insp.Queues()
	if err != nil {
		return nil, fmt.Errorf("listing the queues: %w", err)
	}
	infos := make([]*asynq.QueueInfo, 0, len(names))
	for _, n := range names {
		q, err := c.insp.GetQueueInfo(n)
		if err != nil {
			return infos, fmt.Errorf("reading queue %s: %w", n, err)
		}
		infos = append(infos, q)
	}
	return infos, nil
}

// ServerActive reports whether this process runs an asynq server that is
// heartbeating in Redis as active (what /readyz checks): the server has
// started, reached Redis and processes its queues.
func ServerActive(ctx context.Context, rdb redis.UniversalClient) (bool, error) {
	if err := rdb.Ping(ctx).Err(); err != nil {
		return false, fmt.Errorf("reaching Redis: %w", err)
	}
	servers, err := asynq.NewInspectorFromRedisClient(rdb).Servers()
	if err != nil {
		return false, fmt.Errorf("listing the task servers: %w", err)
	}
	host, _ := os.Hostname()
	for _, s := range servers {
		if s.PID == os.Getpid() && (host == "" || s.Host == host) && s.Status == "active" {
			return true, nil
		}
	}
	return false, nil
}
