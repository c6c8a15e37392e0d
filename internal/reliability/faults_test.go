package reliability

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/jobs/task"
	"github.com/r8im/r8im/storage"
)

// leaseRecovery bounds how long asynq takes to hand a killed worker's task
// to another: the lease (30s) must have expired 30s ago, checked by each
// server's recoverer at start and every minute.
const leaseRecovery = 150 * time.Second

// TestWorkerKilledMidUpload: a worker SIGKILLed while it uploads the weights
// layer loses its lease; another worker takes the task over once asynq's
// recoverer sees the lease expired, and publishes. The task succeeds exactly
// once: one success record, one stream entry, a valid image.
//
// The upload is chunked and its session is in Redis under the task id. On
// distribution v3 (token auth, TLS) the second worker resumes it where the
// registry has it: the registry receives the layer's bytes about once (at
// most 1.1×: the chunk in flight at the kill is sent again). Distribution
// 2.8 cannot resume an upload whose last PATCH was cut mid-body (it checks
// its own stale _state even on GET and answers 404), so there the layer is
// sent again from the start, as the result's notes say.
func TestWorkerKilledMidUpload(t *testing.T) {
	t.Parallel()
	forEachRegistry(t, stackOptions{}, func(t *testing.T, s *stack) {
		tarPath, files := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 2, FileSize: 12 << 20, Seed: 801})
		weights := s.s3.PutObject(t, "runs/801/weights.tar", tarPath)
		s.proxy.Throttle(4 << 20) // the upload takes several seconds: there is a middle to kill it in
		chunked := workerOptions{concurrency: 1, extraEnv: []string{"R8IM_UPLOAD_CHUNK_SIZE=1MiB"}}

		a := s.startWorker(t, "a", chunked)
		id := s.affix(t, "run-killed", weights, s.repo("killed:v1"))
		s.waitRunning(t, id, time.Minute)
		const half = 13 << 20 // of about 24 MiB of incompressible weights
		poll(t, time.Minute, func() bool { return s.proxy.Uploaded() > half },
			func() string { return fmt.Sprintf("only %d bytes uploaded", s.proxy.Uploaded()) })
		a.kill()
		killedAt := time.Now()
		uploadedByA := s.proxy.Uploaded()

		info, err := s.insp.GetTaskInfo(task.QueuePublish, id)
		if err != nil || info.State != asynq.TaskStateActive {
			t.Fatalf("right after the kill the task is %+v, %v; want still active (leased to the dead worker)", info, err)
		}
		s.proxy.Throttle(0)
		s.startWorker(t, "b", chunked)

		rec := s.waitFinal(t, id, leaseRecovery)
		t.Logf("taken over and published %s after the kill (A had uploaded %d bytes)", time.Since(killedAt).Round(time.Second), uploadedByA)
		if rec.State != storage.StateSucceeded || rec.Attempts < 2 {
			t.Fatalf("record %+v; want succeeded on a second attempt", rec)
		}
		if ids := s.streamIDs(t); len(ids) != 1 || ids[0] != id {
			t.Fatalf("published stream holds %v; want exactly one entry for %s", ids, id)
		}
		recs, err := s.records.List(context.Background(), "", 10)
		if err != nil || len(recs) != 1 {
			t.Fatalf("records %+v, %v; want exactly one", recs, err)
		}
		poll(t, 10*time.Second, func() bool { // asynq completes the task just after the record
			info, err = s.insp.GetTaskInfo(task.QueuePublish, id)
			return err == nil && info.State == asynq.TaskStateCompleted
		}, func() string { return fmt.Sprintf("task %+v, %v; want completed", info, err) })
		if !strings.Contains(info.LastErr, "lease expired") {
			t.Fatalf("task %+v; want completed after a lease-expired retry", info)
		}
		s.validate(t, rec.Result, files)
		layer := s.proxy.Blobs()[rec.LayerDigest]
		total := s.proxy.Uploaded()
		t.Logf("the registry received %d bytes (%d before the kill) for a %d-byte layer", total, uploadedByA, layer)
		if s.regCase != testenv.Distribution28 && float64(total) > 1.1*float64(layer) {
			t.Errorf("the registry received %d bytes for a %d-byte layer; want at most 1.1× (resumed, not restarted)", total, layer)
		}
		// The record says what happened to the interrupted upload.
		want := "resuming an interrupted upload"
		if s.regCase == testenv.Distribution28 {
			want = "no longer has the interrupted upload"
		}
		if !slices.ContainsFunc(rec.Notes, func(n string) bool { return strings.Contains(n, want) }) {
			t.Errorf("record notes %q; want one saying %q", rec.Notes, want)
		}
	})
}

// TestGracefulStopRequeues: SIGTERM mid-task gives the running task the
// shutdown timeout, then cancels it and puts it back on its queue without
// counting a failure; another worker completes it.
func TestGracefulStopRequeues(t *testing.T) {
	t.Parallel()
	forEachRegistry(t, stackOptions{}, func(t *testing.T, s *stack) {
		tarPath, files := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 2, FileSize: 8 << 20, Seed: 802})
		weights := s.s3.PutObject(t, "runs/802/weights.tar", tarPath)
		s.proxy.Throttle(2 << 20)

		a := s.startWorker(t, "a", workerOptions{concurrency: 1, shutdownTimeout: time.Second})
		id := s.affix(t, "run-sigterm", weights, s.repo("models/sigterm:v1"))
		s.waitRunning(t, id, time.Minute)
		a.term(t, 30*time.Second)
		if !strings.Contains(a.out.String(), "back to queue") {
			t.Errorf("worker a's log does not say it pushed the task back to its queue")
		}

		info, err := s.insp.GetTaskInfo(task.QueuePublish, id)
		if err != nil || info.State != asynq.TaskStatePending || info.Retried != 0 {
			t.Fatalf("after SIGTERM the task is %+v, %v; want pending again with 0 retries", info, err)
		}
		if rec, _ := s.records.Get(context.Background(), id); rec == nil || rec.State == storage.StateFailed {
			t.Fatalf("after SIGTERM the record is %+v; a requeued task is not failed", rec)
		}

		s.proxy.Throttle(0)
		s.startWorker(t, "b", workerOptions{concurrency: 1})
		rec := s.waitFinal(t, id, 2*time.Minute)
		if rec.State != storage.StateSucceeded || rec.Attempts != 1 {
			t.Fatalf("record %+v; want succeeded, still on attempt 1 (a shutdown is not a failed attempt)", rec)
		}
		// The record is written before the handler returns; asynq marks the
		// task completed right after.
		poll(t, 10*time.Second, func() bool {
			info, err = s.insp.GetTaskInfo(task.QueuePublish, id)
			return err == nil && info.State == asynq.TaskStateCompleted
		}, func() string { return fmt.Sprintf("task %+v, %v; want completed", info, err) })
		if info.Retried != 0 {
			t.Fatalf("task %+v; want completed with 0 retries", info)
		}
		if ids := s.streamIDs(t); len(ids) != 1 {
			t.Fatalf("stream %v; want one entry", ids)
		}
		s.validate(t, rec.Result, files)
	})
}

// TestRegistryFaults runs one publish per kind of registry fault, injected
// by the proxy between the workers and the registry: 5xx answers,
// connections reset mid-upload, 429 with Retry-After, a blob download cut
// short, slow answers. Every publish finishes, and no manifest in the
// registry references a missing blob.
func TestRegistryFaults(t *testing.T) {
	t.Parallel()
	forEachRegistry(t, stackOptions{}, func(t *testing.T, s *stack) {
		tarPath, files := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 2, FileSize: 1 << 20, Seed: 803})
		weights := s.s3.PutObject(t, "runs/803/weights.tar", tarPath)

		cases := []struct {
			repo   string
			faults []testenv.Fault
			check  func(t *testing.T, rec *storage.Record)
		}{
			{"f5xx", []testenv.Fault{
				{Method: "PATCH", PathContains: "/models/f5xx/blobs/uploads/", Status: 500, Count: 2},
				{Method: "PUT", PathContains: "/models/f5xx/manifests/", Status: 503, Count: 2},
			}, nil},
			{"freset", []testenv.Fault{
				{Method: "PATCH", PathContains: "/models/freset/blobs/uploads/", Count: 3}, // reads 64 KiB, then drops the connection
			}, nil},
			{"f429", []testenv.Fault{
				{Method: "PUT", PathContains: "/models/f429/manifests/", Status: 429, RetryAfter: "2", Count: 4},
			}, func(t *testing.T, rec *storage.Record) {
				// ggcr's own 3 tries fail; the task fails with the pause the
				// registry asked for, which the worker's retry delay honours
				// (jobs.TestRetryDelayHonoursRetryAfter), then succeeds.
				if rec.Attempts < 2 || !strings.Contains(rec.LastError, "retry after 2s") {
					t.Errorf("record %+v; want a retry whose error carries the registry's Retry-After", rec)
				}
			}},
			{"fslow", []testenv.Fault{
				{Method: "PATCH", PathContains: "/models/fslow/blobs/uploads/", Delay: 3 * time.Second, Count: 1},
				{Method: "HEAD", PathContains: "/models/fslow/blobs/", Delay: 2 * time.Second, Count: 2},
			}, func(t *testing.T, rec *storage.Record) {
				if rec.Attempts != 1 {
					t.Errorf("record %+v; a slow registry is not a failure, want 1 attempt", rec)
				}
			}},
		}
		want := int64(0)
		for _, c := range cases {
			for _, f := range c.faults {
				s.proxy.Inject(f)
				want += int64(f.Count)
			}
		}
		// The base's config blob, read by every publish: the first download is
		// cut in the middle of the body.
		s.proxy.Inject(testenv.Fault{Method: "GET", PathContains: "/base/rel/blobs/sha256:", Truncate: true, Count: 1})
		want++

		s.startWorker(t, "a", workerOptions{concurrency: 3})
		s.startWorker(t, "b", workerOptions{concurrency: 3})
		ids := map[string]string{}
		for _, c := range cases {
			ids[c.repo] = s.affix(t, "run-"+c.repo, weights, s.repo("models/"+c.repo+":v1"))
		}
		for _, c := range cases {
			t.Run(c.repo, func(t *testing.T) {
				rec := s.waitFinal(t, ids[c.repo], 2*time.Minute)
				if rec.State != storage.StateSucceeded {
					t.Fatalf("record %+v; want succeeded despite the faults", rec)
				}
				if c.check != nil {
					c.check(t, rec)
				}
				s.validate(t, rec.Result, files)
			})
		}
		if got := s.proxy.Injected(); got != want {
			t.Errorf("%d faults injected, want all %d (a fault that never fired proves nothing)", got, want)
		}
		if n := checkRegistry(t, s.reg); n < 1+len(cases) {
			t.Errorf("checked %d manifests, want at least %d", n, 1+len(cases))
		}
		if got := len(s.streamIDs(t)); got != len(cases) {
			t.Errorf("%d stream entries, want %d", got, len(cases))
		}
	})
}

// s3Stack puts a fault-injecting proxy in front of MinIO and returns the
// environment pointing the workers at it.
func s3ProxyEnv(t *testing.T, s *stack) (*testenv.Proxy, []string) {
	t.Helper()
	u, err := url.Parse(s.s3.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	p := testenv.CountingProxy(t, u.Host)
	return p, []string{"AWS_ENDPOINT_URL_S3=http://" + p.Host}
}

// TestS3FaultsDuringPublish: chunks of the weights download fail in every
// way S3 fails (503, a body cut short, a reset connection, a slow answer):
// each chunk is retried on its own, the task succeeds at its first attempt
// and the image holds exactly the object's bytes. storage's
// TestS3SourceFaults covers the reader itself (counts retries per chunk,
// gives up after 3 attempts, stalls); this proves it end to end.
func TestS3FaultsDuringPublish(t *testing.T) {
	t.Parallel()
	forEachRegistry(t, stackOptions{}, func(t *testing.T, s *stack) {
		tarPath, files := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 3, FileSize: 6 << 20, Seed: 804})
		weights := s.s3.PutObject(t, "runs/804/weights.tar", tarPath)
		p, env := s3ProxyEnv(t, s)

		const chunk = 4 << 20
		faults := map[int64]testenv.Fault{
			1: {Status: http.StatusServiceUnavailable},
			2: {Truncate: true},
			3: {}, // reset: read the request, drop the connection
			4: {Delay: time.Second},
		}
		var mu sync.Mutex
		seen := map[string]bool{}
		p.SetFaultFunc(func(r *http.Request) (testenv.Fault, bool) {
			rng := r.Header.Get("Range")
			if r.Method != http.MethodGet || rng == "" {
				return testenv.Fault{}, false
			}
			mu.Lock()
			defer mu.Unlock()
			if seen[rng] {
				return testenv.Fault{}, false
			}
			seen[rng] = true
			for n, f := range faults {
				if strings.HasPrefix(rng, fmt.Sprintf("bytes=%d-", n*chunk)) {
					return f, true
				}
			}
			return testenv.Fault{}, false
		})
		s.startWorker(t, "a", workerOptions{extraEnv: env})
		id := s.affix(t, "run-s3faults", weights, s.repo("models/s3faults:v1"))
		rec := s.waitFinal(t, id, 2*time.Minute)
		if rec.State != storage.StateSucceeded || rec.Attempts != 1 {
			t.Fatalf("record %+v; want success at the first attempt (faults retried per chunk)", rec)
		}
		if got := p.Injected(); got != int64(len(faults)) {
			t.Errorf("%d S3 faults injected, want %d", got, len(faults))
		}
		size := fileSize(t, tarPath)
		if rec.DownloadedBytes != size {
			t.Errorf("record says %d bytes downloaded, the object has %d", rec.DownloadedBytes, size)
		}
		s.validate(t, rec.Result, files)
	})
}

// TestS3ObjectChangedMidDownload: the weights object is replaced while the
// worker downloads it (its ETag changes between chunks). The task fails at
// once, permanently, saying so; nothing is pushed.
func TestS3ObjectChangedMidDownload(t *testing.T) {
	t.Parallel()
	forEachRegistry(t, stackOptions{}, func(t *testing.T, s *stack) {
		tarPath, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 2, FileSize: 8 << 20, Seed: 805})
		weights := s.s3.PutObject(t, "runs/805/weights.tar", tarPath)
		p, env := s3ProxyEnv(t, s)

		replaced := make(chan struct{})
		held := make(chan struct{}, 64)
		p.SetFaultFunc(func(r *http.Request) (testenv.Fault, bool) {
			rng := r.Header.Get("Range")
			if r.Method != http.MethodGet || rng == "" || strings.HasPrefix(rng, "bytes=0-") {
				return testenv.Fault{}, false
			}
			select {
			case held <- struct{}{}:
			default:
			}
			return testenv.Fault{Hold: replaced}, true
		})
		s.startWorker(t, "a", workerOptions{extraEnv: env})
		id := s.affix(t, "run-changed", weights, s.repo("models/changed:v1"))
		select {
		case <-held:
		case <-time.After(time.Minute):
			t.Fatal("the worker never asked for a second chunk")
		}
		other, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 2, FileSize: 8 << 20, Seed: 806})
		s.s3.PutObject(t, "runs/805/weights.tar", other)
		close(replaced)

		rec := s.waitFinal(t, id, time.Minute)
		if rec.State != storage.StateFailed || rec.Attempts != 1 || !strings.Contains(rec.LastError, "changed") || !strings.Contains(rec.LastError, "runs/805/weights.tar") {
			t.Fatalf("record %+v; want failed at once, saying the object changed and naming it", rec)
		}
		if hasManifest(t, s.user.Repo("models/changed:v1"), s.user.RemoteOptions()...) {
			t.Fatal("an image was pushed from a changed object")
		}
		poll(t, 10*time.Second, func() bool {
			info, err := s.insp.GetTaskInfo(task.QueuePublish, id)
			return err == nil && info.State == asynq.TaskStateArchived
		}, func() string { return "the task was not archived (a permanent failure is not retried)" })
		if ids := s.streamIDs(t); len(ids) != 0 {
			t.Fatalf("stream %v; nothing may be published", ids)
		}
	})
}

// TestRedisRestartMidRun: Redis (AOF, fsync always) is killed and restarted
// on the same port while two workers publish. The workers reconnect by
// themselves, every task enqueued before or after completes, records
// written before the crash are intact, and nothing is published twice.
func TestRedisRestartMidRun(t *testing.T) {
	t.Parallel()
	forEachRegistry(t, stackOptions{redis: testenv.RedisOptions{AppendOnly: true, FsyncAlways: true}}, func(t *testing.T, s *stack) {
		tarPath, files := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 1, FileSize: 512 << 10, Seed: 807})
		weights := s.s3.PutObject(t, "runs/807/weights.tar", tarPath)
		s.proxy.Throttle(2 << 20)
		a := s.startWorker(t, "a", workerOptions{concurrency: 2})
		b := s.startWorker(t, "b", workerOptions{concurrency: 2})

		const before, after = 12, 4
		var ids []string
		for i := range before {
			ids = append(ids, s.affix(t, fmt.Sprintf("run-restart-%d", i), weights, s.repo(fmt.Sprintf("models/restart:%d", i))))
		}
		succeeded := func() []storage.Record {
			recs, _ := s.records.List(context.Background(), storage.StateSucceeded, 1000)
			return recs
		}
		poll(t, 2*time.Minute, func() bool { return len(succeeded()) >= 3 }, func() string { return "fewer than 3 tasks succeeded" })
		snapshot := map[string]storage.Record{}
		for _, r := range succeeded() {
			snapshot[r.ID] = r
		}

		if err := s.redis.Kill(); err != nil {
			t.Fatal(err)
		}
		s.redis.Restart(t)
		for _, r := range snapshot {
			got, err := s.records.Get(context.Background(), r.ID)
			if err != nil || got.State != storage.StateSucceeded || got.Result != r.Result || !got.FinishedAt.Equal(*r.FinishedAt) {
				t.Fatalf("record %s after the restart: %+v, %v; want it as before: %+v", r.ID, got, err, r)
			}
		}
		s.proxy.Throttle(0)
		for i := range after {
			ids = append(ids, s.affix(t, fmt.Sprintf("run-restart-after-%d", i), weights, s.repo(fmt.Sprintf("models/restart:after-%d", i))))
		}
		for _, id := range ids {
			if rec := s.waitFinal(t, id, leaseRecovery); rec.State != storage.StateSucceeded {
				t.Fatalf("%s: %+v", id, rec)
			}
		}
		for _, w := range []*workerProc{a, b} {
			select {
			case <-w.done:
				t.Fatalf("worker %s exited when Redis restarted", w.name)
			default:
			}
		}
		if n := len(succeeded()); n != before+after {
			t.Fatalf("%d succeeded records, want %d", n, before+after)
		}
		stream := s.streamIDs(t)
		slices.Sort(stream)
		if len(stream) != before+after || len(slices.Compact(stream)) != before+after {
			t.Fatalf("stream has %d entries (%d distinct), want %d, one per task", len(stream), len(slices.Compact(stream)), before+after)
		}
		first, _ := s.records.Get(context.Background(), ids[0])
		s.validate(t, first.Result, files)
		checkRegistry(t, s.reg)
	})
}
