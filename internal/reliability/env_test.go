package reliability

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/jobs/task"
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
	// user is the registry's test user (stackOptions.user), whose
	// credentials and CA every worker gets (workerEnv); zero for none.
	user      testenv.Login
	workerEnv []string
	regCase   string // the testenv.Registries case (forEachRegistry)
}

type stackOptions struct {
	redis testenv.RedisOptions
	// registry, when set, is used instead of a fresh unauthenticated one.
	registry     *testenv.RegistryServer
	dockerConfig string
	// user, when set, is the registry (user.Reg) and the user the workers
	// act as: DOCKER_CONFIG with its credentials for the registry and the
	// proxy, SSL_CERT_FILE for a TLS registry (forEachRegistry sets it).
	user   testenv.Login
	noBase bool
}

// forEachRegistry runs f in a parallel subtest for each registry of
// testenv.Registries (distribution 2.8, open and plain HTTP; v3 with token
// auth and TLS), each with its own stack built from o, whose workers act
// as testenv.TestUser: destinations under s.repo (<proxy>/alice/...), the
// base seeded by the admin and referenced through the proxy.
func forEachRegistry(t *testing.T, o stackOptions, f func(t *testing.T, s *stack)) {
	t.Helper()
	for _, rc := range testenv.Registries(t) {
		t.Run(rc.Name, func(t *testing.T) {
			t.Parallel()
			o := o
			o.user = rc.Start(t).User
			s := newStack(t, o)
			s.regCase = rc.Name
			f(t, s)
		})
	}
}

func newStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	s := &stack{redis: testenv.Redis(t, o.redis), reg: o.registry, s3: testenv.S3(t), dockerConfig: o.dockerConfig, user: o.user}
	if o.user.Reg != nil {
		s.reg = o.user.Reg
	}
	if s.reg == nil {
		s.reg = testenv.Registry(t)
	}
	s.proxy = s.reg.Proxy(t) // fronts TLS and token-auth registries too
	if o.user.Reg != nil {
		// After the proxy: the credentials cover its host too. A worker
		// is a fresh process, so SSL_CERT_FILE reaches its TLS stack.
		s.dockerConfig = o.user.DockerConfig(t)
		s.workerEnv = o.user.Env(t)
	}
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

// repo is <proxy host>/<user>/name: a repository the stack's user may push
// to, reached through the proxy.
func (s *stack) repo(name string) string { return s.proxy.Host + "/" + s.user.User + "/" + name }

// affix enqueues an affix of weightsURL onto the base as event id.
func (s *stack) affix(t testing.TB, id, weightsURL, dest string) string {
	t.Helper()
	res, err := s.enq.Enqueue(context.Background(), task.Request{Queue: task.QueuePublish, EventID: id, Payload: task.AffixPayload{
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
	env = append(env, s.workerEnv...)
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

// poll waits with testenv.Eventually until cond is true; describe says
// what is wrong when it is not (it runs after each false cond, so that the
// failure shows the last state).
func poll(t testing.TB, timeout time.Duration, cond func() bool, describe func() string) {
	t.Helper()
	testenv.Eventually(t, timeout, "the condition", func() (bool, string) {
		if cond() {
			return true, ""
		}
		return false, describe()
	})
}

// waitFinal waits for record id to succeed or fail for good.
func (s *stack) waitFinal(t testing.TB, id string, timeout time.Duration) *storage.Record {
	t.Helper()
	var rec *storage.Record
	testenv.Eventually(t, timeout, "record "+id+" to succeed or fail", func() (bool, string) {
		var err error
		rec, err = s.records.Get(context.Background(), id)
		return err == nil && (rec.State == storage.StateSucceeded || rec.State == storage.StateFailed), fmt.Sprintf("%+v, %v", rec, err)
	})
	return rec
}

// waitRunning waits until task id runs and has made upload progress.
func (s *stack) waitRunning(t testing.TB, id string, timeout time.Duration) *storage.Record {
	t.Helper()
	var rec *storage.Record
	testenv.Eventually(t, timeout, "task "+id+" to run with progress", func() (bool, string) {
		var err error
		rec, err = s.records.Get(context.Background(), id)
		return err == nil && rec.State == storage.StateRunning && rec.ProgressDone > 0, fmt.Sprintf("%+v, %v", rec, err)
	})
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

// checkRegistry walks every repository and tag of the registry as its
// admin (directly, not through the proxy) and fails if a manifest
// references a blob the registry does not have. It returns the number of
// manifests checked.
func checkRegistry(t testing.TB, reg *testenv.RegistryServer) int {
	t.Helper()
	ctx := context.Background()
	opts := append(reg.Admin(t).RemoteOptions(), remote.WithContext(ctx))
	r, err := name.NewRegistry(reg.Host)
	if err != nil {
		t.Fatal(err)
	}
	repos, err := remote.Catalog(ctx, r, opts...)
	if err != nil {
		t.Fatalf("catalog of %s: %v", reg.Host, err)
	}
	checked := 0
	var visit func(repo name.Repository, ref string)
	visit = func(repo name.Repository, ref string) {
		rr, err := name.ParseReference(repo.String() + ref)
		if err != nil {
			t.Fatal(err)
		}
		desc, err := remote.Get(rr, opts...)
		if err != nil {
			t.Errorf("manifest %s: %v", rr, err)
			return
		}
		checked++
		var m struct {
			Config    *struct{ Digest string }
			Layers    []struct{ Digest string }
			Manifests []struct{ Digest string }
		}
		if err := json.Unmarshal(desc.Manifest, &m); err != nil {
			t.Errorf("manifest %s: %v", rr, err)
			return
		}
		for _, sub := range m.Manifests {
			visit(repo, "@"+sub.Digest)
		}
		blobs := []string{}
		if m.Config != nil {
			blobs = append(blobs, m.Config.Digest)
		}
		for _, l := range m.Layers {
			blobs = append(blobs, l.Digest)
		}
		for _, b := range blobs {
			l, err := remote.Layer(repo.Digest(b), opts...)
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := partial.Exists(l); !ok {
				t.Errorf("manifest %s references blob %s, which the registry does not have (%v)", rr, b, err)
			}
		}
	}
	for _, rn := range repos {
		repo := r.Repo(rn)
		tags, err := remote.List(repo, opts...)
		var terr *transport.Error
		if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
			continue // a repository with blobs and no tag
		}
		if err != nil {
			t.Fatalf("tags of %s: %v", repo, err)
		}
		for _, tag := range tags {
			visit(repo, ":"+tag)
		}
	}
	return checked
}

// hasManifest reports whether ref exists, asking with opts (none: the
// open registry, anonymously).
func hasManifest(t testing.TB, ref string, opts ...remote.Option) bool {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	_, err = remote.Head(r, opts...)
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
		return false
	}
	if err != nil {
		t.Fatalf("asking for %s: %v", ref, err)
	}
	return true
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
