package reliability

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/events"
	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/storage"
)

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// hook is a callback receiver that keeps every request it gets.
type hook struct {
	mu   sync.Mutex
	reqs [][]byte // each request's headers and body, as received
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var b bytes.Buffer
	_ = r.Header.Write(&b)
	body, _ := io.ReadAll(r.Body)
	b.Write(body)
	h.mu.Lock()
	h.reqs = append(h.reqs, b.Bytes())
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (h *hook) all() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return bytes.Join(h.reqs, []byte("\n"))
}

// TestSecretsNeverLeak publishes through the whole system with every
// credential configured: the registry requires basic auth (docker config),
// MinIO has its keys, Redis a password, the receiver event secrets and the
// worker callback secrets. Signed events come in over HTTP (one good, one
// forged, one replayed, one naming a missing object); a worker process
// publishes and calls back. Then everything the system wrote — every Redis
// key and value, the AOF (every write Redis ever took), the worker's and
// the receiver's logs, HTTP answers, metrics and callback requests — is
// searched for each secret.
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	const user = "r8im-publisher"
	regPass := "regpw-" + randomHex(t, 16)
	redisPass := "redispw-" + randomHex(t, 16)
	eventSecret := "evsec-" + randomHex(t, 16)
	callbackKey := []byte("cbkey-" + randomHex(t, 16))
	callbackSecret := "whsec_" + base64.StdEncoding.EncodeToString(callbackKey)

	reg := testenv.AuthRegistry(t, user, regPass)
	dockerConfig := testenv.WriteDockerConfig(t, reg.Host, user, regPass)
	s := newStack(t, stackOptions{
		redis:    testenv.RedisOptions{AppendOnly: true, Password: redisPass},
		registry: reg, dockerConfig: dockerConfig, noBase: true,
	})
	secrets := map[string][]byte{
		"registry password":    []byte(regPass),
		"registry basic auth":  []byte(base64.StdEncoding.EncodeToString([]byte(user + ":" + regPass))),
		"S3 secret key":        []byte(s.s3.SecretKey),
		"Redis password":       []byte(redisPass),
		"event secret":         []byte(eventSecret),
		"callback secret":      []byte(callbackSecret),
		"callback key":         callbackKey,
		"callback key, base64": []byte(base64.StdEncoding.EncodeToString(callbackKey)),
	}

	// The registry really asks for credentials.
	if resp, err := http.Get("http://" + reg.Host + "/v2/"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous GET /v2/ = %v, %v; want 401 from an authenticated registry", resp, err)
	} else {
		resp.Body.Close()
	}
	baseRef, err := name.ParseReference(reg.Host + "/base/secret:v1")
	if err != nil {
		t.Fatal(err)
	}
	baseImg := testenv.BaseImage(t, testenv.OCI, testenv.Amd64)
	if err := remote.Write(baseRef, baseImg, remote.WithAuth(&authn.Basic{Username: user, Password: regPass})); err != nil {
		t.Fatalf("pushing the base: %v", err)
	}
	baseDigest, _ := baseImg.Digest()
	s.base = baseRef.Context().Name() + "@" + baseDigest.String()

	tarPath, files := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 2, FileSize: 256 << 10, Seed: 901})
	weights := s.s3.PutObject(t, "runs/901/weights.tar", tarPath)

	cb := &hook{}
	cbSrv := httptest.NewServer(cb)
	t.Cleanup(cbSrv.Close)

	// The receiver, configured the way enqueue serve is, logging JSON.
	vars := map[string]string{
		"REDIS_URL": s.redis.URL(), "R8IM_EVENT_SECRETS": "an-older-secret-0123456789," + eventSecret,
		"R8IM_ALLOWED_SOURCES":        "s3://" + s.s3.Bucket + "/*",
		"R8IM_ALLOWED_DESTINATIONS":   reg.Host + "/models/*",
		"R8IM_ALLOWED_CALLBACK_HOSTS": "127.0.0.1",
		"R8IM_ALLOWED_BASES":          reg.Host + "/*",
	}
	ecfg := config.NewEnqueue()
	ecfg.Load(func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	if err := ecfg.ValidateServe(); err != nil {
		t.Fatal(err)
	}
	var recvLog testenv.Buffer
	log := slog.New(slog.NewJSONHandler(&recvLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	log.Info("receiver started", "config", ecfg)
	allow, err := events.NewAllowlists(events.AllowlistSettings{
		Sources: ecfg.Events.AllowedSources, Destinations: ecfg.Events.AllowedDestinations, CallbackHosts: ecfg.Events.AllowedCallbackHosts,
		Bases: ecfg.Events.AllowedBases, Targets: ecfg.Events.AllowedTargets,
	})
	if err != nil {
		t.Fatal(err)
	}
	rc := &events.Receiver{
		Verifier: events.Verifier{Secrets: ecfg.Events.SecretList(), Tolerance: ecfg.Events.Tolerance},
		Allow:    allow, Enqueuer: s.enq, Records: s.records, Log: log,
		Ping:    func(ctx context.Context) error { return s.rdb.Ping(ctx).Err() },
		Metrics: promhttp.Handler(),
	}
	recv := httptest.NewServer(rc.Handler())
	t.Cleanup(recv.Close)

	w := s.startWorker(t, "a", workerOptions{extraEnv: []string{"R8IM_CALLBACK_SECRETS=" + callbackSecret}})

	var answers bytes.Buffer
	post := func(body []byte, sig string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, recv.URL+"/v1/events/training-completed", bytes.NewReader(body))
		if sig != "" {
			req.Header.Set(events.SignatureHeader, sig)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(&answers, "%s %s\n", resp.Status, b)
		return resp.StatusCode
	}
	event := func(id, weightsURL string) []byte {
		b, _ := json.Marshal(map[string]any{
			"id": id, "base": s.base, "weights": weightsURL,
			"destination":  map[string]string{"repo": reg.Host + "/models/secret", "tag": id},
			"completed_at": created.Format(time.RFC3339), "callback_url": cbSrv.URL + "/hook",
			"metadata": map[string]string{"run": id},
		})
		return b
	}
	good := event("run-secret", weights)
	if code := post(good, events.Sign([]byte(eventSecret), time.Now(), good)); code != http.StatusAccepted {
		t.Fatalf("signed event: %d, want 202\n%s", code, answers.String())
	}
	forged := event("run-forged", weights)
	if code := post(forged, events.Sign([]byte("not-the-secret-0123456789"), time.Now(), forged)); code != http.StatusUnauthorized {
		t.Fatalf("forged event: %d, want 401", code)
	}
	if code := post(good, events.Sign([]byte(eventSecret), time.Now().Add(-time.Hour), good)); code != http.StatusUnauthorized {
		t.Fatalf("replayed event: %d, want 401", code)
	}
	missing := event("run-missing", "s3://"+s.s3.Bucket+"/runs/none.tar")
	if code := post(missing, events.Sign([]byte(eventSecret), time.Now(), missing)); code != http.StatusAccepted {
		t.Fatalf("event for a missing object: %d, want 202", code)
	}

	rec := s.waitFinal(t, "affix:run-secret", 2*time.Minute)
	if rec.State != storage.StateSucceeded {
		t.Fatalf("record %+v; want published through the authenticated registry", rec)
	}
	if bad := s.waitFinal(t, "affix:run-missing", time.Minute); bad.State != storage.StateFailed || !strings.Contains(bad.LastError, "none.tar") {
		t.Fatalf("record %+v; want failed, naming the missing object", bad)
	}
	s.validate(t, rec.Result, files)
	poll(t, time.Minute, func() bool { return bytes.Contains(cb.all(), []byte(rec.Result)) },
		func() string { return "no callback delivered the result:\n" + string(cb.all()) })
	for _, id := range []string{"run-secret", "run-missing"} {
		req, _ := http.NewRequest(http.MethodGet, recv.URL+"/v1/events/"+id, nil)
		req.Header.Set(events.SignatureHeader, events.SignRequest([]byte(eventSecret), time.Now(), http.MethodGet, "/v1/events/"+id))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Fprintf(&answers, "%s %s\n", resp.Status, b)
		if id == "run-secret" && (resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(rec.Result))) {
			t.Errorf("the signed GET of %s answered %s %s; want its record", id, resp.Status, b)
		}
	}
	resp, err := http.Get(recv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	w.term(t, 30*time.Second)

	sources := map[string][]byte{
		"Redis keys and values": dumpRedis(t, s.rdb),
		"Redis AOF":             readTree(t, filepath.Join(s.redis.Dir, "appendonlydir")),
		"worker output":         []byte(w.out.String()),
		"receiver log":          []byte(recvLog.String()),
		"HTTP answers":          answers.Bytes(),
		"receiver metrics":      metrics,
		"callback requests":     cb.all(),
	}
	// The search is not vacuous: each source holds what it should.
	for src, want := range map[string]string{
		"Redis keys and values": rec.Result, "Redis AOF": rec.Result, "worker output": "published",
		"receiver log": "event refused", "HTTP answers": "bad signature", "callback requests": "webhook-signature",
	} {
		if !bytes.Contains(bytes.ToLower(sources[src]), bytes.ToLower([]byte(want))) {
			t.Errorf("%s does not hold %q: the search would prove nothing", src, want)
		}
	}
	for what, secret := range secrets {
		for src, data := range sources {
			if i := bytes.Index(data, secret); i >= 0 {
				t.Errorf("the %s appears in the %s: …%s…", what, src, data[max(0, i-120):i])
			}
		}
	}
}

// dumpRedis reads every key of every type, with its values, of rdb's DB:
// the test's own (testenv.Redis).
func dumpRedis(t testing.TB, rdb *redis.Client) []byte {
	t.Helper()
	ctx := context.Background()
	var out bytes.Buffer
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		typ, err := rdb.Type(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		var v any
		switch typ {
		case "string":
			v, err = rdb.Get(ctx, k).Result()
		case "hash":
			v, err = rdb.HGetAll(ctx, k).Result()
		case "list":
			v, err = rdb.LRange(ctx, k, 0, -1).Result()
		case "set":
			v, err = rdb.SMembers(ctx, k).Result()
		case "zset":
			v, err = rdb.ZRangeWithScores(ctx, k, 0, -1).Result()
		case "stream":
			v, err = rdb.XRange(ctx, k, "-", "+").Result()
		default:
			t.Fatalf("key %s has type %s, which the dump does not read", k, typ)
		}
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&out, "%s (%s): %v\n", k, typ, v)
	}
	if len(keys) < 5 {
		t.Fatalf("only %d Redis keys: %v", len(keys), keys)
	}
	return out.Bytes()
}

// readTree concatenates every file under dir.
func readTree(t testing.TB, dir string) []byte {
	t.Helper()
	var out []byte
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out = append(out, b...)
		return err
	})
	if err != nil || len(out) == 0 {
		t.Fatalf("reading %s: %v (%d bytes)", dir, err, len(out))
	}
	return out
}
