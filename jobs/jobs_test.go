package jobs_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/cli"
	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/jobs/task"
	"github.com/r8im/r8im/storage"
)

var created = time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)

// env is a real Redis, registry (behind a counting, fault-injecting proxy)
// and MinIO, with the pieces a worker and an enqueuer are made of. The
// worker acts as the registry's test user (testenv.TestUser): destinations
// are under <host>/alice/..., the base is seeded by the admin under base/
// and referenced through the proxy.
type env struct {
	redis   *testenv.RedisServer
	rdb     redis.UniversalClient
	reg     *testenv.RegistryServer
	user    testenv.Login
	proxy   *testenv.Proxy
	s3      *testenv.S3Server
	records *storage.Records
	enq     *jobs.Enqueuer
	base    string
}

// forEachReg runs f in a subtest for each registry of testenv.Registries:
// distribution 2.8 (open, plain HTTP) and v3 with token auth and TLS. f
// usually starts with newEnv(t, reg).
func forEachReg(t *testing.T, f func(t *testing.T, reg testenv.RegistryEnv)) {
	t.Helper()
	for _, rc := range testenv.Registries(t) {
		t.Run(rc.Name, func(t *testing.T) { f(t, rc.Start(t)) })
	}
}

// firstReg is the first registry of testenv.Registries, for tests that
// never reach a registry (a task that stays queued) and so run once.
func firstReg(t *testing.T) testenv.RegistryEnv {
	t.Helper()
	return testenv.Registries(t)[0].Start(t)
}

func newEnv(t *testing.T, reg testenv.RegistryEnv) *env {
	t.Helper()
	e := &env{redis: testenv.Redis(t), reg: reg.RegistryServer, user: reg.User, s3: testenv.S3(t)}
	e.proxy = e.reg.Proxy(t) // fronts TLS and token-auth registries too; the user's keychain covers it
	e.rdb = e.redis.Client(t)
	e.records = storage.NewRecords(e.rdb, time.Hour)
	e.enq = jobs.NewEnqueuer(e.rdb, e.records, config.NewEnqueue().Tasks)
	t.Cleanup(func() { e.enq.Close() })
	e.base = e.via(e.proxy.Host, reg.SeedBase(t, "jobs", testenv.OCI).String())
	return e
}

// opts are the imageops options that reach the registry (and its proxy)
// as the user: Go reads SSL_CERT_FILE once per process, so the CA comes
// with the transport.
func (e *env) opts() []imageops.Option {
	return []imageops.Option{imageops.WithTransport(e.reg.Transport()), imageops.WithKeychain(e.user.Keychain())}
}

// repo is host/alice/name: a repository the user may push to, on the
// registry's host or its proxy's.
func (e *env) repo(host, name string) string { return host + "/" + e.user.User + "/" + name }

// via is ref with its host replaced by host.
func (e *env) via(host, ref string) string { return host + ref[strings.IndexByte(ref, '/'):] }

// unpack checks ref (on the proxy or the registry) the way another client
// would, from the registry itself as the user (skopeo + umoci), and
// returns the root filesystem.
func (e *env) unpack(t *testing.T, ref string) string {
	t.Helper()
	return testenv.UnpackWith(t, e.via(e.reg.Host, ref), testenv.UnpackOptions{DockerConfig: e.user.DockerConfig(t)})
}

// worker runs an in-process worker until the test ends (or stop is called);
// with sets up the handler further.
func (e *env) worker(t *testing.T, concurrency int, with ...func(*jobs.Handler)) (stop func()) {
	t.Helper()
	var s3cfg config.S3
	s3cfg.Endpoint, s3cfg.Region, s3cfg.PathStyle = e.s3.Endpoint, e.s3.Region, true
	s3cfg.AccessKeyID, s3cfg.SecretAccessKey = config.Secret(e.s3.AccessKey), config.Secret(e.s3.SecretKey)
	s3cfg.ChunkSize, s3cfg.Concurrency = 4<<20, 4
	sources, err := storage.NewSources(context.Background(), s3cfg)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h := &jobs.Handler{Records: e.records, Sources: sources, Options: e.opts(), Log: log, ProgressEvery: 100 * time.Millisecond,
		CallbackQueue: asynq.NewClientFromRedisClient(e.rdb)}
	for _, f := range with {
		f(h)
	}
	srv := jobs.NewServer(e.rdb, jobs.ServerConfig{
		Concurrency: concurrency, Queues: config.DefaultQueues, ShutdownTimeout: 5 * time.Second, Log: log,
		RetryDelay: func(int, error) time.Duration { return 200 * time.Millisecond },
	}, h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// waitFor polls the record until it reaches a final state.
func (e *env) waitFor(t *testing.T, id string, timeout time.Duration) *storage.Record {
	t.Helper()
	return waitRecord(t, e.records, id, timeout, storage.StateSucceeded, storage.StateFailed)
}

// waitRecord polls record id until it is in one of the states.
func waitRecord(t *testing.T, records *storage.Records, id string, timeout time.Duration, states ...storage.State) *storage.Record {
	t.Helper()
	var rec *storage.Record
	testenv.Eventually(t, timeout, fmt.Sprintf("record %s to be %v", id, states), func() (bool, string) {
		var err error
		rec, err = records.Get(context.Background(), id)
		return err == nil && slices.Contains(states, rec.State), fmt.Sprintf("%+v, %v", rec, err)
	})
	return rec
}

func (e *env) affix(t *testing.T, eventID, weightsURL, dest string) task.Enqueued {
	t.Helper()
	res, err := e.enq.Enqueue(context.Background(), task.Request{Queue: task.QueuePublish, EventID: eventID, Payload: task.AffixPayload{
		EventID: eventID, Base: e.base, Weights: weightsURL, Dest: dest, Created: created,
	}})
	if err != nil {
		t.Fatalf("enqueueing %s: %v", eventID, err)
	}
	return res
}

func TestAffixFromS3EndToEnd(t *testing.T) {
	forEachReg(t, func(t *testing.T, reg testenv.RegistryEnv) {
		e := newEnv(t, reg)
		tarPath, files := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 3, FileSize: 5 << 20, Seed: 61})
		url := e.s3.PutObject(t, "runs/61/weights.tar", tarPath)
		e.worker(t, 2)

		res := e.affix(t, "run-61", url, e.repo(e.proxy.Host, "models/e2e:61"))
		if res.Existing || res.ID != "affix:run-61" {
			t.Fatalf("first enqueue = %+v", res)
		}
		rec := e.waitFor(t, res.ID, time.Minute)
		if rec.State != storage.StateSucceeded || !strings.HasPrefix(rec.Result, e.repo(e.proxy.Host, "models/e2e@sha256:")) {
			t.Fatalf("record %+v", rec)
		}
		if rec.LayerDigest == "" || rec.LayerDiffID == "" || rec.UploadedBytes < rec.LayerSize || rec.Attempts != 1 || rec.BaseDigest == "" {
			t.Errorf("record lacks the publish's details: %+v", rec)
		}
		for _, stage := range []string{"resolve", "upload", "push", "verify"} {
			if _, ok := rec.Stages[stage]; !ok {
				t.Errorf("record has no %s timing: %v", stage, rec.Stages)
			}
		}
		// One entry on the published stream, for downstream consumers.
		entries, err := e.rdb.XRange(context.Background(), storage.PublishedStream, "-", "+").Result()
		if err != nil || len(entries) != 1 || fmt.Sprint(entries[0].Values["result"]) != rec.Result {
			t.Fatalf("stream entries %v, %v", entries, err)
		}
		// The image is valid for other tools and holds the tarball's bytes.
		root := e.unpack(t, rec.Result)
		for _, f := range files {
			if got := testenv.FileSHA256(t, filepath.Join(root, "src/weights", f.Name)); got != f.SHA256 {
				t.Fatalf("%s: %s, want %s", f.Name, got, f.SHA256)
			}
		}

		// The same event again: nothing new is queued.
		again := e.affix(t, "run-61", url, e.repo(e.proxy.Host, "models/e2e:61"))
		if !again.Existing || again.ID != res.ID || storage.State(again.State) != storage.StateSucceeded {
			t.Fatalf("duplicate event = %+v; want the existing, succeeded task", again)
		}
		if n, _ := e.rdb.XLen(context.Background(), storage.PublishedStream).Result(); n != 1 {
			t.Fatalf("%d stream entries after a duplicate event, want 1", n)
		}
	})
}

func TestDuplicateWhileQueued(t *testing.T) {
	// No worker: the task stays queued and nothing reaches the registry,
	// so this runs once, not per registry.
	e := newEnv(t, firstReg(t))
	a := e.affix(t, "run-dup", "s3://b/k.tar", e.repo(e.reg.Host, "models/dup"))
	b := e.affix(t, "run-dup", "s3://b/k.tar", e.repo(e.reg.Host, "models/dup"))
	if a.Existing || !b.Existing || a.ID != b.ID {
		t.Fatalf("enqueues = %+v, %+v; want one task reported twice", a, b)
	}
	info, err := asynq.NewInspectorFromRedisClient(e.rdb).GetQueueInfo(task.QueuePublish)
	if err != nil || info.Size != 1 {
		t.Fatalf("publish queue %+v, %v; want exactly one task", info, err)
	}
}

func TestFailuresAreClassified(t *testing.T) {
	forEachReg(t, func(t *testing.T, reg testenv.RegistryEnv) {
		e := newEnv(t, reg)
		tarPath, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Seed: 62})
		url := e.s3.PutObject(t, "runs/62/weights.tar", tarPath)
		e.worker(t, 2)
		insp := asynq.NewInspectorFromRedisClient(e.rdb)

		t.Run("invalid payload is archived at once", func(t *testing.T) {
			client := asynq.NewClientFromRedisClient(e.rdb)
			defer client.Close()
			if _, err := client.Enqueue(asynq.NewTask(task.TypeAffix, []byte(`{"event_id": "bad one", "base": "nope"}`), asynq.TaskID("affix:bad"), asynq.Queue(task.QueuePublish), asynq.MaxRetry(5))); err != nil {
				t.Fatal(err)
			}
			rec := e.waitFor(t, "affix:bad", 30*time.Second)
			if rec.State != storage.StateFailed || rec.Attempts != 1 || !strings.Contains(rec.LastError, "event_id") || !strings.Contains(rec.LastError, "weights") {
				t.Fatalf("record %+v; want failed after 1 attempt naming every bad field", rec)
			}
			waitArchived(t, insp, task.QueuePublish, "affix:bad")
		})

		t.Run("missing base fails with a reason", func(t *testing.T) {
			res, err := e.enq.Enqueue(context.Background(), task.Request{Queue: task.QueuePublish, Payload: task.AffixPayload{
				EventID: "run-nobase", Base: e.reg.Host + "/" + testenv.BaseNamespace + "/missing:v1", Weights: url, Dest: e.repo(e.reg.Host, "models/x"), Created: created,
			}})
			if err != nil {
				t.Fatal(err)
			}
			rec := e.waitFor(t, res.ID, 30*time.Second)
			if rec.State != storage.StateFailed || rec.Attempts != 1 || !strings.Contains(rec.LastError, "not found") {
				t.Fatalf("record %+v; want failed at once, saying the base is not found", rec)
			}
			// Once the cause is fixed, an operator's retry publishes it.
			waitArchived(t, insp, task.QueuePublish, res.ID)
			e.reg.Push(t, testenv.BaseNamespace+"/missing:v1", testenv.BaseImage(t, testenv.OCI, testenv.Amd64)) // as the admin
			if err := e.enq.Retry(context.Background(), res.ID); err != nil {
				t.Fatalf("Retry: %v", err)
			}
			// After the base was pushed and the task retried:
			waitRecord(t, e.records, res.ID, 30*time.Second, storage.StateSucceeded)
		})

		t.Run("missing weights fail with a reason", func(t *testing.T) {
			res := e.affix(t, "run-noweights", "s3://"+e.s3.Bucket+"/runs/none.tar", e.repo(e.reg.Host, "models/y"))
			rec := e.waitFor(t, res.ID, 30*time.Second)
			if rec.State != storage.StateFailed || rec.Attempts != 1 || !strings.Contains(rec.LastError, "none.tar") {
				t.Fatalf("record %+v; want failed at once, naming the missing object", rec)
			}
		})

		t.Run("transient registry failure is retried", func(t *testing.T) {
			// The upload's first four requests get a 503: the upload retries
			// them itself (asking the registry how much it holds each time),
			// so the task succeeds without a failed attempt.
			before := e.proxy.Injected()
			e.proxy.Inject(testenv.Fault{Method: "PATCH", PathContains: "/models/flaky/blobs/uploads/", Status: 503, Count: 4})
			res := e.affix(t, "run-flaky", url, e.repo(e.proxy.Host, "models/flaky:v1"))
			rec := e.waitFor(t, res.ID, time.Minute)
			if rec.State != storage.StateSucceeded || e.proxy.Injected() != before+4 {
				t.Fatalf("record %+v after %d faults; want success after all 4 fired", rec, e.proxy.Injected()-before)
			}
		})
	})
}

func waitArchived(t *testing.T, insp *asynq.Inspector, queue, id string) {
	t.Helper()
	waitTaskState(t, insp, queue, id, asynq.TaskStateArchived)
}

// waitTaskState waits until asynq holds task id in state.
func waitTaskState(t *testing.T, insp *asynq.Inspector, queue, id string, state asynq.TaskState) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, fmt.Sprintf("task %s to be %s", id, state), func() (bool, string) {
		info, err := insp.GetTaskInfo(queue, id)
		if err != nil {
			return false, err.Error()
		}
		return info.State == state, fmt.Sprintf("%s (last error %q)", info.State, info.LastErr)
	})
}

func TestTwoWorkersShareFiftyTasks(t *testing.T) {
	forEachReg(t, func(t *testing.T, reg testenv.RegistryEnv) {
		e := newEnv(t, reg)
		tarPath, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 1, FileSize: 64 << 10, Seed: 63})
		url := e.s3.PutObject(t, "runs/63/weights.tar", tarPath)
		const n = 50
		var ids []string
		for i := 0; i < n; i++ {
			res := e.affix(t, fmt.Sprintf("run-many-%d", i), url, e.repo(e.reg.Host, fmt.Sprintf("models/many:%d", i)))
			ids = append(ids, res.ID)
		}
		e.worker(t, 4)
		e.worker(t, 4)
		for _, id := range ids {
			if rec := e.waitFor(t, id, 2*time.Minute); rec.State != storage.StateSucceeded {
				t.Fatalf("%s: %+v", id, rec)
			}
		}
		recs, err := e.records.List(context.Background(), storage.StateSucceeded, 1000)
		if err != nil || len(recs) != n {
			t.Fatalf("%d succeeded records (%v), want %d", len(recs), err, n)
		}
		if l, _ := e.rdb.XLen(context.Background(), storage.PublishedStream).Result(); l != n {
			t.Fatalf("%d stream entries, want %d", l, n)
		}
	})
}

func TestCancelStopsTheUpload(t *testing.T) {
	forEachReg(t, func(t *testing.T, reg testenv.RegistryEnv) {
		e := newEnv(t, reg)
		// A big tarball on disk, fed through file:// and a slow proxy upload:
		// the task runs long enough to be cancelled mid-upload.
		tarPath, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 4, FileSize: 64 << 20, Seed: 64})
		e.proxy.Throttle(20 << 20) // 20 MB/s: the upload takes >10s
		e.worker(t, 1)
		res := e.affix(t, "run-cancel", "file://"+tarPath, e.repo(e.proxy.Host, "models/cancel:v1"))
		// Wait until it runs and has made progress, then cancel.
		testenv.Eventually(t, 30*time.Second, "the task to run with progress", func() (bool, string) {
			rec, err := e.records.Get(context.Background(), res.ID)
			return err == nil && rec.State == storage.StateRunning && rec.ProgressDone > 0, fmt.Sprintf("%+v, %v", rec, err)
		})
		if err := e.enq.Cancel(context.Background(), res.ID); err != nil {
			t.Fatal(err)
		}
		// After the cancel, uploads stop: the proxy's byte count stops growing.
		time.Sleep(500 * time.Millisecond)
		before := e.proxy.Uploaded()
		time.Sleep(time.Second)
		if after := e.proxy.Uploaded(); after != before {
			t.Fatalf("uploads went on after cancel: %d → %d bytes", before, after)
		}
		rec, _ := e.records.Get(context.Background(), res.ID)
		if rec.State != storage.StateFailed || !strings.Contains(rec.LastError, "cancelled") {
			t.Fatalf("a cancelled task's record: %+v", rec)
		}
	})
}

// TestFailureRecordsTheWorkersHint: a push the registry refuses is recorded
// with the library's reason and the hint the worker adds (Handler.Hint:
// its own settings, never a CLI flag).
func TestFailureRecordsTheWorkersHint(t *testing.T) {
	e := newEnv(t, testenv.Registries(t)[1].Start(t)) // token auth: the user may not push under base/
	tarPath, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Seed: 63})
	url := e.s3.PutObject(t, "runs/63/weights.tar", tarPath)
	e.worker(t, 1, func(h *jobs.Handler) { h.Hint = cli.WorkerHint })
	res := e.affix(t, "run-refused", url, e.reg.Host+"/"+testenv.BaseNamespace+"/stolen:v1")
	rec := e.waitFor(t, res.ID, time.Minute)
	if rec.State != storage.StateFailed || !strings.Contains(rec.LastError, "unauthorized") ||
		!strings.Contains(rec.LastError, "; hint: give the worker credentials") || strings.Contains(rec.LastError, "--token") {
		t.Fatalf("record %+v; want failed, unauthorized, with the worker's hint and no CLI flag", rec)
	}
}
