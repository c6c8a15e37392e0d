package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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

// enqueue runs the CLI in-process with vars as its environment.
func enqueue(t *testing.T, vars map[string]string, args ...string) (string, string, error) {
	t.Helper()
	root := newRoot(func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestEnqueueWaitWithWorkerProcess publishes through the real worker binary:
// enqueue affix --wait prints the image, status and list show the record,
// and the worker stops cleanly on SIGTERM.
func TestEnqueueWaitWithWorkerProcess(t *testing.T) {
	rds, reg, s3 := testenv.Redis(t), testenv.Registry(t), testenv.S3(t)
	base := testenv.PushBase(t, reg.Host, "base/cli", testenv.Docker)
	tarPath, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Seed: 71})
	url := s3.PutObject(t, "runs/71/weights.tar", tarPath)

	bin := filepath.Join(t.TempDir(), "worker")
	if out, err := exec.Command("go", "build", "-o", bin, "../worker").CombinedOutput(); err != nil {
		t.Fatalf("building the worker: %v\n%s", err, out)
	}
	httpAddr := freeAddr(t)
	worker := exec.Command(bin)
	worker.Env = append(os.Environ(), append(s3.Env(), "REDIS_URL="+rds.URL(), "R8IM_HTTP_ADDR="+httpAddr, "R8IM_LOG_FORMAT=json")...)
	logs := &testenv.Buffer{}
	worker.Stdout, worker.Stderr = logs, logs
	if err := worker.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- worker.Wait() }()
	t.Cleanup(func() { _ = worker.Process.Kill() })

	vars := map[string]string{"REDIS_URL": rds.URL()}
	stdout, stderr, err := enqueue(t, vars, "affix", "--base", base.String(), "--weights", url, "--dest", reg.Host+"/models/cli:v1", "--event-id", "run-71", "--queue", "publish", "--wait")
	if err != nil {
		t.Fatalf("enqueue affix --wait: %v\nstderr: %s\nworker: %s", err, stderr, logs.String())
	}
	ref := strings.TrimSpace(stdout)
	if !strings.HasPrefix(ref, reg.Host+"/models/cli@sha256:") || !strings.Contains(stderr, "queued on publish: affix:run-71") {
		t.Fatalf("stdout %q stderr %q", stdout, stderr)
	}
	testenv.Unpack(t, ref, nil)

	stdout, _, err = enqueue(t, vars, "status", "affix:run-71", "--json")
	var rec storage.Record
	if err != nil || json.Unmarshal([]byte(stdout), &rec) != nil || rec.Result != ref || rec.EventID != "run-71" {
		t.Fatalf("status: %v %+v", err, rec)
	}
	if stdout, _, err = enqueue(t, vars, "list", "--state", "succeeded"); err != nil || !strings.Contains(stdout, "affix:run-71") {
		t.Fatalf("list: %v\n%s", err, stdout)
	}
	// Enqueueing the same event again says so and adds nothing.
	if _, stderr, err = enqueue(t, vars, "affix", "--base", base.String(), "--weights", url, "--dest", reg.Host+"/models/cli:v1", "--event-id", "run-71"); err != nil || !strings.Contains(stderr, "already done") {
		t.Fatalf("duplicate: %v %s", err, stderr)
	}
	// A failure: --wait exits non-zero with the reason.
	_, _, err = enqueue(t, vars, "affix", "--base", reg.Host+"/base/missing:v1", "--weights", url, "--dest", reg.Host+"/models/cli:v2", "--event-id", "run-72", "--wait")
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("a failing task's --wait = %v; want the reason", err)
	}

	resp, err := http.Get("http://" + httpAddr + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	// Every log line names its task.
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"task started"`) && (!strings.Contains(line, `"task_id"`) || !strings.Contains(line, `"type"`)) {
			t.Errorf("log line without task id/type: %s", line)
		}
	}
	if !strings.Contains(logs.String(), `"event_id":"run-71"`) {
		t.Errorf("no log line carries the event id:\n%s", logs.String())
	}

	if err := worker.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("worker exited with %v after SIGTERM\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not stop within 30s of SIGTERM")
	}
}

func TestEnqueueErrors(t *testing.T) {
	rds := testenv.Redis(t)
	vars := map[string]string{"REDIS_URL": rds.URL()}
	for _, tc := range []struct {
		vars map[string]string
		args []string
		want string
	}{
		{vars, []string{"affix", "--base", "nohost", "--weights", "ftp://x/y", "--dest", "r8.im/a/b@sha256:" + strings.Repeat("a", 64)}, "base"},
		{vars, []string{"affix", "--base", "r8.im/a/b:v1", "--weights", "ftp://x/y", "--dest", "r8.im/a/c"}, "weights"},
		{vars, []string{"affix", "--base", "r8.im/a/b:v1", "--weights", "s3://b/k", "--dest", "r8.im/a/c", "--queue", "urgent"}, "unknown queue"},
		{vars, []string{"status", "affix:nope"}, "no task or record"},
		{map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0"}, []string{"status", "x"}, "does not answer"},
	} {
		_, _, err := enqueue(t, tc.vars, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("enqueue %v = %v; want an error mentioning %q", tc.args, err, tc.want)
		}
	}
}

func TestServe(t *testing.T) {
	rds := testenv.Redis(t)
	vars := map[string]string{"REDIS_URL": rds.URL()}
	if _, _, err := enqueue(t, vars, "serve"); err == nil || !strings.Contains(err.Error(), "R8IM_EVENT_SECRETS") {
		t.Fatalf("serve without a secret = %v; want a refusal naming R8IM_EVENT_SECRETS", err)
	}
	addr := freeAddr(t)
	secret := "0123456789abcdef0123456789abcdef"
	vars = map[string]string{
		"REDIS_URL": rds.URL(), "R8IM_EVENT_SECRETS": secret, "R8IM_EVENTS_ADDR": addr,
		"R8IM_ALLOWED_SOURCES": "s3://weights/*", "R8IM_ALLOWED_DESTINATIONS": "r8.im/acme/*", "R8IM_ALLOWED_BASES": "r8.im/acme/*",
	}
	root := newRoot(func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	root.SetArgs([]string{"serve"})
	root.SetErr(&bytes.Buffer{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	body := []byte(`{"id": "run-9", "base": "r8.im/acme/base:v1", "weights": "s3://weights/9.tar",
		"destination": {"repo": "r8.im/acme/ft"}, "completed_at": "2026-11-24T10:00:00Z"}`)
	var resp *http.Response
	testenv.Eventually(t, 10*time.Second, "the receiver to listen", func() (bool, string) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/events/training-completed", bytes.NewReader(body))
		req.Header.Set(events.SignatureHeader, events.Sign([]byte(secret), time.Now(), body))
		var err error
		resp, err = http.DefaultClient.Do(req)
		return err == nil, fmt.Sprint(err)
	})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("signed event: %v", resp.Status)
	}
	resp.Body.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v after its context ended", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
}
