package reliability

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/jobs/task"
	"github.com/r8im/r8im/storage"
)

// hostileCase is what a worker must make of one hostile registry
// (testdata/hostile/registries.json; the registries are testenv's): the
// record fails after Attempts attempts (1: permanent; 2: retried once, as
// R8IM_AFFIX_MAX_RETRY=1 allows) with an error holding every Want.
type hostileCase struct {
	Name     testenv.Hostile `json:"name"`
	Attempts int             `json:"attempts"`
	Want     []string        `json:"want"`
}

// hostileChecks are further checks of some hostile registries.
var hostileChecks = map[testenv.Hostile]func(t *testing.T, h *testenv.HostileRegistry, rec *storage.Record){
	testenv.RedirectLoop: func(t *testing.T, h *testenv.HostileRegistry, rec *storage.Record) {
		if max := int64(11 * rec.Attempts); h.Manifests() > max {
			t.Errorf("the registry got %d manifest requests in %d attempts, want at most %d", h.Manifests(), rec.Attempts, max)
		}
	},
	testenv.HugeConfig: func(t *testing.T, h *testenv.HostileRegistry, _ *storage.Record) {
		if n := h.Configs(); n != 0 {
			t.Errorf("the 1 GiB config was requested %d times; want it refused from the manifest, never fetched", n)
		}
	},
}

// TestHostileRegistriesFailTasks runs a worker process (configured by its
// environment, as cmd/worker is) against each hostile registry as the base
// of an affix: every task fails within a bounded time, permanently or after
// its retries, with a reason naming the problem, free of terminal escapes;
// the worker's peak memory stays far below what any of them tried to make
// it hold.
func TestHostileRegistriesFailTasks(t *testing.T) {
	t.Parallel()
	hostileCases := loadCases[hostileCase](t, "registries.json")
	if len(hostileCases) != len(testenv.Hostiles) {
		t.Fatalf("registries.json has %d cases, testenv %d hostile registries", len(hostileCases), len(testenv.Hostiles))
	}
	s := newStack(t, stackOptions{noBase: true})
	tarPath, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 1, FileSize: 64 << 10, Seed: 1201})
	weights := s.s3.PutObject(t, "hostile-registry/weights.tar", tarPath)
	tasks := config.NewEnqueue().Tasks
	tasks.AffixMaxRetry = 1
	enq := jobs.NewEnqueuer(s.rdb, s.records, tasks)
	t.Cleanup(func() { _ = enq.Close() })
	w := s.startWorker(t, "hostile", workerOptions{concurrency: len(hostileCases), extraEnv: []string{"R8IM_IDLE_TIMEOUT=1s"}})

	regs := map[testenv.Hostile]*testenv.HostileRegistry{}
	ids := map[testenv.Hostile]string{}
	for _, c := range hostileCases {
		regs[c.Name] = testenv.NewHostileRegistry(t, c.Name)
		id := "hostile-" + string(c.Name)
		res, err := enq.Enqueue(context.Background(), task.Request{Queue: task.QueuePublish, EventID: id, Payload: task.AffixPayload{
			EventID: id, Base: regs[c.Name].Host + "/base/hostile:v1", Weights: weights, Dest: s.proxy.Host + "/models/hostile", Created: created,
		}})
		if err != nil {
			t.Fatal(err)
		}
		ids[c.Name] = res.ID
	}
	for _, c := range hostileCases {
		t.Run(string(c.Name), func(t *testing.T) {
			rec := s.waitFinal(t, ids[c.Name], 2*time.Minute)
			if rec.State != storage.StateFailed || rec.Attempts != c.Attempts {
				t.Fatalf("record %+v; want failed after %d attempt(s)", rec, c.Attempts)
			}
			for _, want := range c.Want {
				if !strings.Contains(rec.LastError, want) {
					t.Errorf("last_error %q lacks %q", rec.LastError, want)
				}
			}
			if strings.ContainsAny(rec.LastError, "\x1b\x07\r\n") {
				t.Errorf("last_error %q holds control characters the registry wrote", rec.LastError)
			}
			if check := hostileChecks[c.Name]; check != nil {
				check(t, regs[c.Name], rec)
			}
		})
	}
	peak := peakRSS(t, w.cmd.Process.Pid)
	t.Logf("the worker's peak memory: %d MiB", peak>>20)
	if peak > 300<<20 {
		t.Errorf("the worker's peak memory was %d MiB, want under 300 MiB", peak>>20)
	}
	if strings.Contains(w.out.String(), "\x1b") {
		t.Error("the worker's log holds a raw escape character")
	}
}

// peakRSS reads a process's peak resident memory (VmHWM), in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// countingTransport counts the bytes of manifest and blob answers read
// through it, per host: what a client really took from each server.
type countingTransport struct {
	base http.RoundTripper
	mu   sync.Mutex
	read map[string]int64
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(req)
	if err == nil && (strings.Contains(req.URL.Path, "/manifests/") || strings.Contains(req.URL.Path, "/blobs/")) {
		resp.Body = &countedBody{ReadCloser: resp.Body, c: c, host: req.URL.Host}
	}
	return resp, err
}

func (c *countingTransport) bytes(host string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.read[host]
}

type countedBody struct {
	io.ReadCloser
	c    *countingTransport
	host string
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.c.mu.Lock()
	b.c.read[b.host] += int64(n)
	b.c.mu.Unlock()
	return n, err
}

// TestHostileRegistryBytesRead measures, under the handler a worker runs
// (jobs.NewHandler with R8IM_MAX_MANIFEST_SIZE=64KiB), exactly how many
// bytes each oversized answer made it read: none of a declared 1 GiB
// manifest or config, and one byte past the cap of a manifest that never
// ends.
func TestHostileRegistryBytesRead(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{noBase: true})
	tarPath, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 1, FileSize: 64 << 10, Seed: 1202})
	weights := s.s3.PutObject(t, "hostile-bytes/weights.tar", tarPath)
	const limit = 64 << 10

	vars := map[string]string{"REDIS_URL": s.redis.URL(), "R8IM_MAX_MANIFEST_SIZE": "64KiB"}
	cfg := config.NewWorker()
	cfg.Load(func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	counter := &countingTransport{base: http.DefaultTransport.(*http.Transport).Clone(), read: map[string]int64{}}
	sources, err := storage.NewSources(context.Background(), s3Config(s), storage.WithNetwork(&cfg.Network))
	if err != nil {
		t.Fatal(err)
	}
	h := jobs.NewHandler(s.rdb, cfg, sources, []imageops.Option{imageops.WithTransport(counter)}, testLogger(t))
	srv := jobs.NewServer(s.rdb, jobs.ServerConfig{Concurrency: 3, Queues: cfg.Queues, ShutdownTimeout: time.Second, Log: testLogger(t)}, h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	for _, tc := range []struct {
		mode testenv.Hostile
		want int64 // manifest and config body bytes read
	}{
		{testenv.HugeManifest, 0},
		{testenv.EndlessManifest, limit + 1},
		{testenv.HugeConfig, -1}, // the manifest itself, and nothing of the config
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			reg := testenv.NewHostileRegistry(t, tc.mode)
			id := "bytes-" + string(tc.mode)
			res, err := s.enq.Enqueue(context.Background(), task.Request{Queue: task.QueuePublish, EventID: id, Payload: task.AffixPayload{
				EventID: id, Base: reg.Host + "/base/hostile:v1", Weights: weights, Dest: s.proxy.Host + "/models/bytes", Created: created,
			}})
			if err != nil {
				t.Fatal(err)
			}
			rec := s.waitFinal(t, res.ID, time.Minute)
			if rec.State != storage.StateFailed || rec.Attempts != 1 || !strings.Contains(rec.LastError, "too large") {
				t.Fatalf("record %+v; want failed at once as too large", rec)
			}
			read := counter.bytes(reg.Host)
			want := tc.want
			if want < 0 {
				want = reg.Written() // the manifest, whole; the config never asked for
				if reg.Configs() != 0 {
					t.Errorf("the config was requested %d times", reg.Configs())
				}
			}
			if read != want {
				t.Errorf("read %d bytes of answers from the hostile registry, want exactly %d (it wrote %d)", read, want, reg.Written())
			}
		})
	}
}

// s3Config is the stack's MinIO as a worker's S3 settings.
func s3Config(s *stack) config.S3 {
	var c config.S3
	c.Endpoint, c.Region, c.PathStyle = s.s3.Endpoint, s.s3.Region, true
	c.AccessKeyID, c.SecretAccessKey = config.Secret(s.s3.AccessKey), config.Secret(s.s3.SecretKey)
	c.ChunkSize, c.Concurrency = 4<<20, 2
	return c
}

// TestHostileWeightsHosts runs worker processes against weights URLs that
// redirect where they should not, or name a host that resolves to
// loopback: each task fails at its first attempt, the redirect's target or
// the loopback server never gets a request, and an https source whose CA
// the worker was given with R8IM_CA_FILE works.
func TestHostileWeightsHosts(t *testing.T) {
	t.Parallel()
	// Distribution 2.8 only: the hosts under test are the weights' sources;
	// the registry is the destination of the one success and plays no part.
	s := newStack(t, stackOptions{})
	tarPath, files := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 1, FileSize: 64 << 10, Seed: 1203})

	good := testenv.ServeWeights(t, tarPath, true)    // https, its CA given to the worker
	target := testenv.ServeWeights(t, tarPath, false) // where the hostile hosts point
	toHTTP := testenv.RedirectWeights(t, target.URL+"/w.tar?X-Amz-Signature=SECRET", true)
	offHost := testenv.RedirectWeights(t, target.URL+"/w.tar", false)
	inside := testenv.ServeWeights(t, tarPath, false)
	_, port, _ := strings.Cut(strings.TrimPrefix(inside.URL, "http://"), ":")

	// The first worker allows loopback (every test server is there), the
	// second does not: its weights and callbacks reach public addresses
	// only. Registries and S3 are the operator's and stay reachable.
	s.startWorker(t, "loopback-allowed", workerOptions{extraEnv: []string{"R8IM_CA_FILE=" + good.CAFile, "R8IM_QUEUES=publish=1"}})
	s.startWorker(t, "public-only", workerOptions{extraEnv: []string{"R8IM_ALLOW_PRIVATE_NETWORKS=", "R8IM_QUEUES=ops=1"}})

	for _, tc := range []struct {
		name, url, queue string
		want             []string // empty: succeeds
		untouched        *testenv.WeightsHost
	}{
		{"https with R8IM_CA_FILE", good.URL + "/w.tar", task.QueuePublish, nil, nil},
		{"https to http", toHTTP.URL + "/w.tar", task.QueuePublish, []string{"redirect refused", "from https to plain http"}, target},
		{"to another host", offHost.URL + "/w.tar", task.QueuePublish, []string{"redirect refused", "same scheme and host"}, target},
		{"a name resolving to loopback", "http://localhost:" + port + "/w.tar", task.QueueOps, []string{"loopback", "R8IM_ALLOW_PRIVATE_NETWORKS"}, inside},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "weights-" + strings.ReplaceAll(tc.name, " ", "-")
			res, err := s.enq.Enqueue(context.Background(), task.Request{Queue: tc.queue, EventID: id, Payload: task.AffixPayload{
				EventID: id, Base: s.base, Weights: tc.url, Dest: s.proxy.Host + "/models/weights", Created: created,
			}})
			if err != nil {
				t.Fatal(err)
			}
			rec := s.waitFinal(t, res.ID, 2*time.Minute)
			if tc.want == nil {
				if rec.State != storage.StateSucceeded {
					t.Fatalf("record %+v; want published", rec)
				}
				s.validate(t, rec.Result, files)
				return
			}
			if rec.State != storage.StateFailed || rec.Attempts != 1 {
				t.Fatalf("record %+v; want failed for good at its first attempt", rec)
			}
			for _, w := range tc.want {
				if !strings.Contains(rec.LastError, w) {
					t.Errorf("last_error %q lacks %q", rec.LastError, w)
				}
			}
			if strings.Contains(rec.LastError, "SECRET") {
				t.Errorf("last_error %q shows a presigned query", rec.LastError)
			}
			if n := tc.untouched.Hits(); n != 0 {
				t.Errorf("%s got %d requests; want none", tc.untouched.URL, n)
			}
		})
	}
}
