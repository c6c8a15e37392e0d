package reliability

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/r8im/r8im/events"
	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/storage"
)

// These tests drive the commands users run, as processes: `enqueue serve`
// (the event receiver), the `enqueue` CLI, and `worker --dev`.

// buildCommand builds ./cmd/<name> into a temp dir and returns its path.
func buildCommand(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/r8im/r8im/cmd/"+name).CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", name, err, out)
	}
	return bin
}

// closedAddr is a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// receiverProc is `enqueue serve` running as a process.
type receiverProc struct {
	addr    string
	secret  []byte
	records *storage.Records
	out     *testenv.Buffer
}

const receiverSecret = "receiver-hostile-secret-0123456789"

// startReceiver runs `enqueue serve` against a real Redis, with the
// allowlists the cases expect and at most two bodies read at once.
func startReceiver(t *testing.T) *receiverProc {
	t.Helper()
	bin := buildCommand(t, "enqueue")
	rds := testenv.Redis(t)
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(),
		"REDIS_URL="+rds.URL(), "R8IM_EVENTS_ADDR=127.0.0.1:0", "R8IM_EVENT_SECRETS="+receiverSecret, "R8IM_LOG_FORMAT=json",
		"R8IM_ALLOWED_SOURCES=s3://weights/*,https://files.example.com/*", "R8IM_ALLOWED_DESTINATIONS=r8.im/acme/*",
		"R8IM_ALLOWED_CALLBACK_HOSTS=hooks.example.com", "R8IM_ALLOWED_BASES=r8.im/acme/*", "R8IM_MAX_EVENT_BODIES=2",
	)
	out := &testenv.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	// It listens on a free port, which it logs.
	var addr string
	poll(t, 30*time.Second, func() bool {
		select {
		case err := <-exited:
			t.Fatalf("enqueue serve exited: %v\n%s", err, out.String())
		default:
		}
		for _, line := range strings.Split(out.String(), "\n") {
			var l struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "receiving events" {
				addr = l.Addr
				return true
			}
		}
		return false
	}, func() string { return "enqueue serve does not say where it listens:\n" + out.String() })
	return &receiverProc{addr: addr, secret: []byte(receiverSecret), records: storage.NewRecords(rds.Client(t), time.Hour), out: out}
}

func (r *receiverProc) event(id string, set map[string]any) []byte {
	ev := map[string]any{
		"id": id, "base": "r8.im/acme/base:v1", "weights": "s3://weights/run/w.tar",
		"destination":  map[string]any{"repo": "r8.im/acme/model", "tag": "v1"},
		"completed_at": "2026-11-20T08:00:00Z",
	}
	for k, v := range set {
		ev[k] = v
	}
	b, _ := json.Marshal(ev)
	return b
}

// do sends a request and returns the status, a header and the body.
func (r *receiverProc) do(t *testing.T, method, path string, body []byte, sig string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+r.addr+path, bytes.NewReader(body))
	if sig != "" {
		req.Header.Set(events.SignatureHeader, sig)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, answer
}

type receiverCase struct {
	Name         string         `json:"name"`
	Set          map[string]any `json:"set"`
	NestMetadata int            `json:"nest_metadata"` // metadata nesting this deep (itself level 1)
	Status       int            `json:"status"`
	Field        string         `json:"field"` // the field the 400 names
	Want         string         `json:"want"`  // in that problem's message
}

// TestReceiverRefusesBasesTargetsAndDeepMetadata posts each case of
// testdata/hostile/receiver_events.json, signed, to `enqueue serve`: bases
// outside R8IM_ALLOWED_BASES, targets outside R8IM_ALLOWED_TARGETS (default
// /src/weights) and metadata nested deeper than 8 levels get 400 naming the
// field, and queue nothing.
func TestReceiverRefusesBasesTargetsAndDeepMetadata(t *testing.T) {
	t.Parallel()
	r := startReceiver(t)
	for i, c := range loadCases[receiverCase](t, "receiver_events.json") {
		t.Run(c.Name, func(t *testing.T) {
			id := fmt.Sprintf("run-allow-%d", i)
			set := c.Set
			if c.NestMetadata > 0 {
				set = map[string]any{"metadata": json.RawMessage(`{"a":` + strings.Repeat("[", c.NestMetadata-1) + strings.Repeat("]", c.NestMetadata-1) + `}`)}
			}
			body := r.event(id, set)
			status, _, answer := r.do(t, http.MethodPost, "/v1/events/training-completed", body, events.Sign(r.secret, time.Now(), body))
			if status != c.Status {
				t.Fatalf("answer %d %s; want %d", status, answer, c.Status)
			}
			_, err := r.records.Get(context.Background(), "affix:"+id)
			if c.Status != http.StatusBadRequest {
				if err != nil {
					t.Fatalf("accepted, but no record: %v", err)
				}
				return
			}
			if !errors.Is(err, storage.ErrNoRecord) {
				t.Errorf("a refused event left a record (%v)", err)
			}
			var ve events.ValidationError
			if err := json.Unmarshal(answer, &ve); err != nil {
				t.Fatalf("answer %s: %v", answer, err)
			}
			for _, p := range ve.Problems {
				if p.Field == c.Field && strings.Contains(p.Message, c.Want) {
					return
				}
			}
			t.Fatalf("answer %s\nwant a problem of %s holding %q", answer, c.Field, c.Want)
		})
	}
}

type readCase struct {
	Comment     string   `json:"comment"`
	Weights     string   `json:"weights"`
	CallbackURL string   `json:"callback_url"`
	LastError   string   `json:"last_error"`
	MustNotShow []string `json:"must_not_show"`
	MustShow    []string `json:"must_show"`
}

// TestReceiverRecordReadNeedsSignature: GET /v1/events/{id} on `enqueue
// serve` answers 401 without a valid signature of that very request, and
// with one returns the record without URL queries (presigned credentials,
// callback tokens) or the raw text a hostile weights host made the worker
// store (testdata/hostile/receiver_read.json).
func TestReceiverRecordReadNeedsSignature(t *testing.T) {
	t.Parallel()
	r := startReceiver(t)
	b, err := os.ReadFile(filepath.Join("testdata", "hostile", "receiver_read.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c readCase
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	body := r.event("run-read-1", map[string]any{"weights": c.Weights, "callback_url": c.CallbackURL, "metadata": map[string]string{"team": "acme"}})
	if status, _, answer := r.do(t, http.MethodPost, "/v1/events/training-completed", body, events.Sign(r.secret, time.Now(), body)); status != http.StatusAccepted {
		t.Fatalf("event: %d %s", status, answer)
	}
	// What a worker stores when the weights host answers with hostile text.
	ctx := context.Background()
	if _, err := r.records.Start(ctx, "affix:run-read-1", 1); err != nil {
		t.Fatal(err)
	}
	if err := r.records.Fail(ctx, "affix:run-read-1", c.LastError, true); err != nil {
		t.Fatal(err)
	}

	const path = "/v1/events/run-read-1"
	now := time.Now()
	for _, tc := range []struct{ name, sig, want string }{
		{"unsigned", "", "no R8im-Signature header; reading a record needs R8im-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.GET /v1/events/run-read-1\")>"},
		{"wrong secret", events.SignRequest([]byte("not-the-secret-0123456789"), now, "GET", path), "bad signature"},
		{"signed for another record", events.SignRequest(r.secret, now, "GET", "/v1/events/run-read-2"), "bad signature"},
		{"the event's POST signature", events.Sign(r.secret, now, body), "bad signature"},
		{"an empty body's signature", events.Sign(r.secret, now, nil), "bad signature"},
		{"stale", events.SignRequest(r.secret, now.Add(-time.Hour), "GET", path), "stale signature"},
		{"malformed", "Bearer " + receiverSecret, "malformed R8im-Signature header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, answer := r.do(t, http.MethodGet, path, nil, tc.sig)
			var got struct{ Error string }
			_ = json.Unmarshal(answer, &got)
			if status != http.StatusUnauthorized || !strings.Contains(got.Error, tc.want) {
				t.Fatalf("answer %d %s; want 401 holding %q", status, answer, tc.want)
			}
			for _, leak := range append([]string{"acme", "run/w.tar"}, c.MustNotShow...) {
				if bytes.Contains(answer, []byte(leak)) {
					t.Errorf("the 401 answer shows %q: %s", leak, answer)
				}
			}
		})
	}

	t.Run("signed", func(t *testing.T) {
		status, _, answer := r.do(t, http.MethodGet, path, nil, events.SignRequest(r.secret, time.Now(), "GET", path))
		if status != http.StatusOK {
			t.Fatalf("answer %d %s", status, answer)
		}
		var rec storage.Record
		if err := json.Unmarshal(answer, &rec); err != nil || rec.State != storage.StateFailed || string(rec.Metadata) != `{"team":"acme"}` {
			t.Fatalf("record %+v, %v", rec, err)
		}
		for _, leak := range c.MustNotShow {
			if bytes.Contains(answer, []byte(leak)) {
				t.Errorf("the answer shows %q: %s", leak, answer)
			}
		}
		for _, want := range c.MustShow {
			if !bytes.Contains(answer, []byte(want)) {
				t.Errorf("the answer lacks %q: %s", want, answer)
			}
		}
		if strings.Contains(string(answer), "?") {
			t.Errorf("the answer holds a query string: %s", answer)
		}
	})
	t.Run("signed, unknown event", func(t *testing.T) {
		p := "/v1/events/run-nope"
		if status, _, answer := r.do(t, http.MethodGet, p, nil, events.SignRequest(r.secret, time.Now(), "GET", p)); status != http.StatusNotFound {
			t.Fatalf("answer %d %s; want 404", status, answer)
		}
	})
}

// rawRequest writes a POST's head on a new connection, announcing a body
// of length bytes, and sends none of it.
func (r *receiverProc) rawRequest(t *testing.T, sig string, length int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	head := "POST /v1/events/training-completed HTTP/1.1\r\nHost: " + r.addr + "\r\nContent-Type: application/json\r\n" +
		fmt.Sprintf("Content-Length: %d\r\n", length)
	if sig != "" {
		head += events.SignatureHeader + ": " + sig + "\r\n"
	}
	if _, err := io.WriteString(c, head+"\r\n"); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestReceiverAnswersBeforeReadingBodies opens many connections to `enqueue
// serve`, each announcing a 1 MiB event whose header is missing,
// malformed, stale or in the future, and sends no body byte on any. Every
// one is answered 401, and then closed by the server, while its body is
// still unsent: the receiver refuses them from their headers alone. (It
// used to read each body before looking at the header, 1 MiB per idle
// connection.) A body announced larger than 1 MiB gets 413 the same way.
func TestReceiverAnswersBeforeReadingBodies(t *testing.T) {
	t.Parallel()
	r := startReceiver(t)
	now := time.Now()
	kinds := []struct{ sig, want string }{
		{"", "no R8im-Signature header"},
		{"t=abc,v1=zz", "malformed R8im-Signature header"},
		{events.Sign(r.secret, now.Add(-time.Hour), nil), "stale signature"},
		{events.Sign([]byte("anyone"), now.Add(time.Hour), nil), "stale signature"},
	}
	const conns = 200
	open := make([]net.Conn, conns)
	for i := range open {
		open[i] = r.rawRequest(t, kinds[i%len(kinds)].sig, events.MaxBodySize)
	}
	for i, c := range open {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("connection %d: no answer with its body unsent: %v\n%s", i, err, tail(r.out.String(), 2000))
		}
		answer, _ := io.ReadAll(resp.Body) // the server closes after it: EOF, not a wait for the body
		resp.Body.Close()
		if want := kinds[i%len(kinds)].want; resp.StatusCode != http.StatusUnauthorized || !bytes.Contains(answer, []byte(want)) {
			t.Fatalf("connection %d: %s %s; want 401 holding %q", i, resp.Status, answer, want)
		}
		if !resp.Close {
			t.Errorf("connection %d: the server keeps the connection open, so it would read the body it refused", i)
		}
		if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("connection %d: after the answer, read %d bytes, %v; want EOF (closed by the server)", i, n, err)
		}
	}

	c := r.rawRequest(t, events.Sign(r.secret, time.Now(), nil), events.MaxBodySize+1)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("an announced 1 MiB + 1 body: %v", err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !bytes.Contains(answer, []byte("larger than 1048576 bytes")) {
		t.Fatalf("an announced 1 MiB + 1 body: %s %s; want 413", resp.Status, answer)
	}
}

// TestReceiverBoundsBodiesReadAtOnce: with R8IM_MAX_EVENT_BODIES=2, two
// requests that send their body slowly hold both slots; a third request is
// answered 503 with Retry-After, without its body being read. Once the slow
// ones end, events are accepted again.
func TestReceiverBoundsBodiesReadAtOnce(t *testing.T) {
	t.Parallel()
	r := startReceiver(t)
	// Well-formed, current headers: they pass the header check, so their
	// bodies are read (and their signature checked after).
	slow := []net.Conn{
		r.rawRequest(t, events.Sign([]byte("anyone"), time.Now(), nil), 1000),
		r.rawRequest(t, events.Sign([]byte("anyone"), time.Now(), nil), 1000),
	}
	for _, c := range slow {
		if _, err := io.WriteString(c, "{"); err != nil {
			t.Fatal(err)
		}
	}
	// They hold their slots once the server has read their heads, which
	// its gauge shows.
	var metrics []byte
	poll(t, 30*time.Second, func() bool {
		_, _, metrics = r.do(t, http.MethodGet, "/metrics", nil, "")
		return bytes.Contains(metrics, []byte("\nr8im_events_bodies_reading 2\n"))
	}, func() string {
		return fmt.Sprintf("the slow requests hold no slots:\n%s\n%s", grepLines(metrics, "r8im_events_bodies"), tail(r.out.String(), 3000))
	})
	probe := []byte(`{"id": "probe"}`)
	status, header, answer := r.do(t, http.MethodPost, "/v1/events/training-completed", probe, events.Sign(r.secret, time.Now(), probe))
	if status != http.StatusServiceUnavailable || header.Get("Retry-After") != "1" ||
		!bytes.Contains(answer, []byte("busy: 2 events are being received")) {
		t.Fatalf("with both slots held: %d %v %s; want 503 with Retry-After", status, header, answer)
	}
	for _, c := range slow {
		c.Close()
	}
	body := r.event("run-after-busy", nil)
	poll(t, 30*time.Second, func() bool {
		status, _, answer = r.do(t, http.MethodPost, "/v1/events/training-completed", body, events.Sign(r.secret, time.Now(), body))
		return status == http.StatusAccepted
	}, func() string { return fmt.Sprintf("after the slow requests ended: %d %s", status, answer) })
}

// grepLines returns the lines of b that hold s.
func grepLines(b []byte, s string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestEnqueueCLIRedactsRedisPasswords runs the enqueue command with Redis
// URLs that carry the password in their query (as go-redis and Sentinel
// setups accept): neither `enqueue config` nor a connection error shows it.
func TestEnqueueCLIRedactsRedisPasswords(t *testing.T) {
	t.Parallel()
	bin := buildCommand(t, "enqueue")
	const pw = "querypass-3e81c0"
	closed := closedAddr(t)
	for _, tc := range []struct {
		name, url string
		args      []string
		want      string // in the output
		fails     bool
	}{
		{"config, sentinel password in the query", "redis-sentinel://s1:26379,s2:26379/0?master=main&password=" + pw, []string{"config"}, "password=REDACTED", false},
		{"config error, password in the query of redis://", "redis://u:" + pw + "@h:6379/0?password=" + pw, []string{"config"}, "parsing redis://u:REDACTED@h:6379/0?password=REDACTED: redis: unexpected option: password", true},
		{"connection error, redis", "redis://:" + pw + "@" + closed + "/0?dial_timeout=1", []string{"status", "affix:x"}, "does not answer", true},
		{"connection error, sentinel", "redis-sentinel://" + closed + "/0?master=main&password=" + pw, []string{"status", "affix:x"}, "does not answer", true},
		{"unknown option names no value", "redis-sentinel://" + closed + "/0?master=main&sentinel_password=" + pw, []string{"status", "affix:x"}, "sentinel_password", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, tc.args...)
			cmd.Env = append(os.Environ(), "REDIS_URL="+tc.url)
			out, err := cmd.CombinedOutput()
			if tc.fails != (err != nil) {
				t.Fatalf("enqueue %v: %v\n%s", tc.args, err, out)
			}
			if bytes.Contains(out, []byte(pw)) {
				t.Errorf("the output shows the password:\n%s", out)
			}
			if !bytes.Contains(out, []byte(tc.want)) {
				t.Errorf("the output lacks %q:\n%s", tc.want, out)
			}
		})
	}
}

// TestEnqueueStatusBoundsWhatItPrints: a record holding 18 KB of metadata
// nested 9000 levels deep (which `enqueue status --json` used to print as
// 162 MB of indentation) prints as a short note instead, through status
// and list.
func TestEnqueueStatusBoundsWhatItPrints(t *testing.T) {
	t.Parallel()
	bin := buildCommand(t, "enqueue")
	rds := testenv.Redis(t)
	records := storage.NewRecords(rds.Client(t), time.Hour)
	deep := `{"a":` + strings.Repeat("[", 9000) + strings.Repeat("]", 9000) + `}`
	if _, err := records.Create(context.Background(), storage.Record{
		ID: "affix:run-deep", Type: "image:affix", Queue: "publish", EventID: "run-deep",
		Inputs: json.RawMessage(`{"event_id":"run-deep"}`), Metadata: json.RawMessage(deep),
	}); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"status", "affix:run-deep", "--json"}, {"status", "affix:run-deep"}, {"list", "--json"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			cmd := exec.Command(bin, args...)
			cmd.Env = append(os.Environ(), "REDIS_URL="+rds.URL())
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("enqueue %v: %v\n%s", args, err, stderr.String())
			}
			if stdout.Len() > 16<<10 {
				t.Fatalf("enqueue %v printed %d bytes for a record of %d bytes of metadata", args, stdout.Len(), len(deep))
			}
			if !strings.Contains(stdout.String(), "affix:run-deep") {
				t.Fatalf("the record is not printed:\n%s", stdout.String())
			}
			if args[len(args)-1] == "--json" && !strings.Contains(stdout.String(), "metadata nested 9001 levels deep, more than the 8 enqueue prints") {
				t.Errorf("no note says why the metadata is left out:\n%s", stdout.String())
			}
		})
	}
}

// TestWorkerDevEnvFileIsPrivate runs `worker --dev` with a data dir whose
// env file an earlier run (or another user) left world-readable: the file
// the stack writes, which holds the event secret, is 0600 all the same.
func TestWorkerDevEnvFileIsPrivate(t *testing.T) {
	t.Parallel()
	bin := buildCommand(t, "worker")
	dir := t.TempDir()
	envFile := filepath.Join(dir, "env")
	if err := os.WriteFile(envFile, []byte("# left by an earlier run\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(envFile, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--dev", "--data-dir", dir)
	cmd.Env = append(os.Environ(), "R8IM_LOG_FORMAT=json", "R8IM_LOG_LEVEL=warn")
	out := &testenv.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	var content []byte
	poll(t, 2*time.Minute, func() bool {
		select {
		case err := <-exited:
			t.Fatalf("worker --dev exited: %v\n%s", err, out.String())
		default:
		}
		content, _ = os.ReadFile(envFile)
		return bytes.Contains(content, []byte("R8IM_EVENT_SECRETS="))
	}, func() string { return "the env file was not written:\n" + out.String() })
	fi, err := os.Stat(envFile)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("the env file holding the event secret has mode %04o, want 0600", mode)
	}
	if entries, _ := filepath.Glob(filepath.Join(dir, ".env-*")); len(entries) > 0 {
		t.Errorf("temp files left behind: %v", entries)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("worker --dev exited with %v after SIGTERM\n%s", err, out.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("worker --dev did not stop within a minute of SIGTERM")
	}
	if _, err := os.Stat(envFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the env file outlives the stack: %v", err)
	}
}
