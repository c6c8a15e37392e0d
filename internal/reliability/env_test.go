package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/storage"
)

// created is every task's training completion time: retries are
// reproducible.
var created = time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)

// stack is a real Redis, registry (behind a counting, fault-injecting
// proxy) and MinIO, with an enqueuer and the record store.
type stack struct {
	redis   *testenv.RedisServer
	rdb     *redis.Client
	reg     *testenv.RegistryServer
	proxy   *testenv.Proxy
	s3      *testenv.S3Server
	records *storage.Records
	enq     *jobs.Enqueuer
	insp    *asynq.Inspector
	base    string // base image by digest, through the proxy
	// dockerConfig is the worker's DOCKER_CONFIG ("" for none).
	dockerConfig string
}

type stackOptions struct {
	redis testenv.RedisOptions
	// registry, when set, is used instead of a fresh unauthenticated one.
	registry     *testenv.RegistryServer
	dockerConfig string
	noBase       bool
}

func newStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	s := &stack{redis: testenv.Redis(t, o.redis), reg: o.registry, s3: testenv.S3(t), dockerConfig: o.dockerConfig}
	if s.reg == nil {
		s.reg = testenv.Registry(t)
	}
	s.proxy = s.reg.Proxy(t) // fronts TLS and token-auth registries too
	s.rdb = s.redis.Client(t)
	s.records = storage.NewRecords(s.rdb, time.Hour)
	tasks := config.NewEnqueue().Tasks
	tasks.AffixMaxRetry = 25 // faults are injected on purpose; the tests bound time themselves
	s.enq = jobs.NewEnqueuer(s.rdb, s.records, tasks)
	t.Cleanup(func() { _ = s.enq.Close() })
	s.insp = asynq.NewInspectorFromRedisClient(s.rdb)
	if !o.noBase {
		// Seeded as the registry's admin, referenced through the proxy.
		s.base = strings.Replace(s.reg.PushBase(t, "base/rel", testenv.OCI).String(), s.reg.Host, s.proxy.Host, 1)
	}
	return s
}

// affix enqueues an affix of weightsURL onto the base as event id.
func (s *stack) affix(t testing.TB, id, weightsURL, dest string) string {
	t.Helper()
	res, err := s.enq.Enqueue(context.Background(), jobs.Request{Queue: jobs.QueuePublish, EventID: id, Payload: jobs.AffixPayload{
		EventID: id, Base: s.base, Weights: weightsURL, Dest: dest, Created: created,
	}})
	if err != nil {
		t.Fatalf("enqueueing %s: %v", id, err)
	}
	return res.ID
}

// workerProc is a worker process: this test binary re-run as a worker.
type workerProc struct {
	name string
	cmd  *exec.Cmd
	out  *testenv.Buffer
	done chan struct{}
}

type workerOptions struct {
	concurrency     int
	shutdownTimeout time.Duration
	retryDelay      time.Duration
	extraEnv        []string
}

// startWorker runs a worker process against s until the test ends.
func (s *stack) startWorker(t *testing.T, name string, o workerOptions) *workerProc {
	t.Helper()
	if o.concurrency == 0 {
		o.concurrency = 2
	}
	if o.shutdownTimeout == 0 {
		o.shutdownTimeout = 5 * time.Second
	}
	if o.retryDelay == 0 {
		o.retryDelay = 200 * time.Millisecond
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	env := append(os.Environ(), s.s3.Env()...)
	env = append(env,
		childEnv+"=worker",
		"REDIS_URL="+s.redis.URL(),
		"R8IM_CONCURRENCY="+fmt.Sprint(o.concurrency),
		"R8IM_SHUTDOWN_TIMEOUT="+o.shutdownTimeout.String(),
		retryDelayEnv+"="+o.retryDelay.String(),
		"R8IM_S3_CHUNK_SIZE=4MiB",
		"R8IM_LOG_FORMAT=json", "R8IM_LOG_LEVEL=debug",
		"R8IM_HTTP_ADDR=127.0.0.1:0",
		// Every test server is on loopback, which weights URLs and
		// callbacks may only reach when allowed.
		"R8IM_ALLOW_PRIVATE_NETWORKS=127.0.0.0/8,::1",
	)
	if s.dockerConfig != "" {
		env = append(env, "DOCKER_CONFIG="+s.dockerConfig)
	}
	cmd.Env = append(env, o.extraEnv...)
	w := &workerProc{name: name, cmd: cmd, out: &testenv.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = w.out, w.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting worker %s: %v", name, err)
	}
	go func() { _ = cmd.Wait(); close(w.done) }()
	t.Cleanup(func() {
		w.kill()
		if t.Failed() {
			t.Logf("--- worker %s output (tail) ---\n%s", name, tail(w.out.String(), 6000))
		}
	})
	return w
}

// kill SIGKILLs the worker and waits for it to be gone.
func (w *workerProc) kill() {
	select {
	case <-w.done:
		return
	default:
	}
	_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
	<-w.done
}

// term sends SIGTERM and waits up to timeout for a clean exit.
func (w *workerProc) term(t testing.TB, timeout time.Duration) {
	t.Helper()
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.done:
	case <-time.After(timeout):
		t.Fatalf("worker %s did not stop within %s of SIGTERM", w.name, timeout)
	}
	if code := w.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("worker %s exited with %d after SIGTERM, want 0", w.name, code)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// poll calls cond every 50ms until it is true or timeout passes, then
// fails with what describe says.
func poll(t testing.TB, timeout time.Duration, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not after %s: %s", timeout, describe())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFinal waits for record id to succeed or fail for good.
func (s *stack) waitFinal(t testing.TB, id string, timeout time.Duration) *storage.Record {
	t.Helper()
	var rec *storage.Record
	var err error
	poll(t, timeout, func() bool {
		rec, err = s.records.Get(context.Background(), id)
		return err == nil && (rec.State == storage.StateSucceeded || rec.State == storage.StateFailed)
	}, func() string { return fmt.Sprintf("record %s: %+v, %v", id, rec, err) })
	return rec
}

// waitRunning waits until task id runs and has made upload progress.
func (s *stack) waitRunning(t testing.TB, id string, timeout time.Duration) *storage.Record {
	t.Helper()
	var rec *storage.Record
	var err error
	poll(t, timeout, func() bool {
		rec, err = s.records.Get(context.Background(), id)
		return err == nil && rec.State == storage.StateRunning && rec.ProgressDone > 0
	}, func() string { return fmt.Sprintf("task %s never ran with progress: %+v, %v", id, rec, err) })
	return rec
}

// streamIDs returns the record id of every entry of the published stream.
func (s *stack) streamIDs(t testing.TB) []string {
	t.Helper()
	entries, err := s.rdb.XRange(context.Background(), storage.PublishedStream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = fmt.Sprint(e.Values["id"])
	}
	return ids
}

// checkRegistry walks every repository and tag of the registry (directly,
// not through the proxy) and fails if a manifest references a blob the
// registry does not have. It returns the number of manifests checked.
func checkRegistry(t testing.TB, host string, auth func(*http.Request)) int {
	t.Helper()
	get := func(method, path string, accept ...string) (*http.Response, []byte) {
		req, err := http.NewRequest(method, "http://"+host+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", strings.Join(accept, ", "))
		if auth != nil {
			auth(req)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	var catalog struct{ Repositories []string }
	if resp, body := get("GET", "/v2/_catalog?n=1000"); resp.StatusCode != 200 || json.Unmarshal(body, &catalog) != nil {
		t.Fatalf("catalog: %s %s", resp.Status, body)
	}
	accept := []string{
		"application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
		"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json",
	}
	checked := 0
	var visit func(repo, ref string)
	visit = func(repo, ref string) {
		resp, body := get("GET", "/v2/"+repo+"/manifests/"+ref, accept...)
		if resp.StatusCode != 200 {
			t.Errorf("manifest %s:%s: %s", repo, ref, resp.Status)
			return
		}
		checked++
		var m struct {
			Config    *struct{ Digest string }
			Layers    []struct{ Digest string }
			Manifests []struct{ Digest string }
		}
		if err := json.Unmarshal(body, &m); err != nil {
			t.Errorf("manifest %s:%s: %v", repo, ref, err)
			return
		}
		for _, sub := range m.Manifests {
			visit(repo, sub.Digest)
		}
		blobs := []string{}
		if m.Config != nil {
			blobs = append(blobs, m.Config.Digest)
		}
		for _, l := range m.Layers {
			blobs = append(blobs, l.Digest)
		}
		for _, b := range blobs {
			if resp, _ := get("HEAD", "/v2/"+repo+"/blobs/"+b); resp.StatusCode != 200 {
				t.Errorf("manifest %s:%s references blob %s, which the registry answers %s", repo, ref, b, resp.Status)
			}
		}
	}
	for _, repo := range catalog.Repositories {
		var tags struct{ Tags []string }
		resp, body := get("GET", "/v2/"+repo+"/tags/list")
		if resp.StatusCode == 404 {
			continue // a repository with blobs and no tag
		}
		if resp.StatusCode != 200 || json.Unmarshal(body, &tags) != nil {
			t.Fatalf("tags of %s: %s %s", repo, resp.Status, body)
		}
		for _, tag := range tags.Tags {
			visit(repo, tag)
		}
	}
	return checked
}

// hasTag reports whether repo:tag exists in the registry.
func hasManifest(t testing.TB, host, repo, tag string) bool {
	t.Helper()
	req, _ := http.NewRequest(http.MethodHead, "http://"+host+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// validate unpacks a pushed image with skopeo + umoci (from the registry
// itself) and checks each weights file's bytes.
func (s *stack) validate(t testing.TB, result string, files []testenv.WeightsFile) {
	t.Helper()
	ref := strings.Replace(result, s.proxy.Host, s.reg.Host, 1)
	root := testenv.UnpackWith(t, ref, testenv.UnpackOptions{DockerConfig: s.dockerConfig})
	for _, f := range files {
		if got := testenv.FileSHA256(t, filepath.Join(root, "src/weights", f.Name)); got != f.SHA256 {
			t.Fatalf("%s in %s: sha256 %s, want %s", f.Name, result, got, f.SHA256)
		}
	}
}

// testLogger logs to t at warn and above.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func fileSize(t testing.TB, p string) int64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}
