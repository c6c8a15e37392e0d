package events_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/events"
	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/jobs/task"
	"github.com/r8im/r8im/storage"
)

var (
	secret    = []byte("0123456789abcdef0123456789abcdef")
	oldSecret = []byte("fedcba9876543210fedcba9876543210")
)

func eventBody(id string) []byte {
	return []byte(`{"id": "` + id + `", "base": "r8.im/acme/base@sha256:` + strings.Repeat("ab", 32) + `",
		"weights": "s3://weights/runs/` + id + `/weights.tar", "destination": {"repo": "r8.im/acme/ft", "tag": "` + id + `"},
		"completed_at": "` + time.Now().UTC().Add(-time.Minute).Format(time.RFC3339) + `", "callback_url": "https://hooks.example.com/r8im/` + id + `", "metadata": {"run": "` + id + `"}}`)
}

func TestReceiver(t *testing.T) {
	rds := testenv.Redis(t)
	rdb := rds.Client(t)
	records := storage.NewRecords(rdb, time.Hour)
	enq := jobs.NewEnqueuer(rdb, records, config.NewEnqueue().Tasks)
	t.Cleanup(func() { enq.Close() })
	rc := &events.Receiver{
		Verifier: events.Verifier{Secrets: [][]byte{secret, oldSecret}},
		Allow:    events.Allowlists{Sources: []string{"s3://weights/*"}, Destinations: []string{"r8.im/acme/*"}, CallbackHosts: []string{"hooks.example.com"}, Bases: []string{"r8.im/acme/*"}},
		Enqueuer: enq, Records: records,
		Ping: func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
	}
	srv := httptest.NewServer(rc.Handler())
	t.Cleanup(srv.Close)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	queued := func() int {
		info, err := insp.GetQueueInfo(task.QueuePublish)
		if err != nil {
			return 0 // no queue yet: nothing was ever enqueued
		}
		return info.Size
	}
	post := func(body []byte, sig string) (*http.Response, map[string]any) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/events/training-completed", bytes.NewReader(body))
		if sig != "" {
			req.Header.Set(events.SignatureHeader, sig)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp, out
	}
	now := time.Now()

	refused := []struct {
		name   string
		body   []byte
		sig    string
		status int
		want   string
	}{
		{"unsigned", eventBody("r1"), "", 401, ""},
		{"wrong secret", eventBody("r1"), events.Sign([]byte("not-the-secret-at-all-0000000000"), now, eventBody("r1")), 401, ""},
		{"stale", eventBody("r1"), events.Sign(secret, now.Add(-10*time.Minute), eventBody("r1")), 401, ""},
		{"from the future", eventBody("r1"), events.Sign(secret, now.Add(10*time.Minute), eventBody("r1")), 401, ""},
		{"tampered body", append(eventBody("r1"), ' '), events.Sign(secret, now, eventBody("r1")), 401, ""},
		{"malformed header", eventBody("r1"), "t=abc,v1=zz", 401, ""},
		{"unknown field", []byte(`{"id": "r2", "evil": true}`), events.Sign(secret, now, []byte(`{"id": "r2", "evil": true}`)), 400, "evil"},
		{"not JSON", []byte(`nope`), events.Sign(secret, now, []byte(`nope`)), 400, ""},
	}
	big := bytes.Repeat([]byte(" "), events.MaxBodySize+10)
	refused = append(refused, struct {
		name   string
		body   []byte
		sig    string
		status int
		want   string
	}{"oversized", big, events.Sign(secret, now, big), 413, ""})
	notAllowed := bytes.Replace(bytes.Replace(eventBody("r3"), []byte("s3://weights/"), []byte("s3://other-bucket/"), 1), []byte("r8.im/acme/ft"), []byte("r8.im/someone-else/ft"), 1)
	refused = append(refused, struct {
		name   string
		body   []byte
		sig    string
		status int
		want   string
	}{"not allowlisted", notAllowed, events.Sign(secret, now, notAllowed), 400, "destination"})
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			resp, out := post(tc.body, tc.sig)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%v)", resp.StatusCode, tc.status, out)
			}
			if tc.want != "" && !strings.Contains(mustJSON(out), tc.want) {
				t.Errorf("answer %v does not mention %q", out, tc.want)
			}
			if tc.name == "not allowlisted" && !strings.Contains(mustJSON(out), "weights") {
				t.Errorf("answer %v should list both the source and the destination problem", out)
			}
			if n := queued(); n != 0 {
				t.Fatalf("%d tasks queued after a refused event", n)
			}
		})
	}

	t.Run("accepted, then duplicate", func(t *testing.T) {
		body := eventBody("run-7")
		resp, out := post(body, events.Sign(oldSecret, now, body)) // the old secret still works during rotation
		if resp.StatusCode != http.StatusAccepted || out["task_id"] != "affix:run-7" {
			t.Fatalf("status %d %v; want 202 with the task id", resp.StatusCode, out)
		}
		resp, out = post(body, events.Sign(secret, time.Now(), body))
		if resp.StatusCode != http.StatusOK || out["task_id"] != "affix:run-7" || out["already_known"] != true {
			t.Fatalf("duplicate: status %d %v; want 200, same task id", resp.StatusCode, out)
		}
		if n := queued(); n != 1 {
			t.Fatalf("%d tasks queued, want 1", n)
		}
		// The same id with another body: 409 naming what differs, nothing queued.
		other := bytes.Replace(bytes.Replace(body, []byte("/weights.tar"), []byte("/other.tar"), 1), []byte(`"run": "run-7"`), []byte(`"run": "other"`), 1)
		resp, out = post(other, events.Sign(secret, time.Now(), other))
		if resp.StatusCode != http.StatusConflict || mustJSON(out["fields"]) != `["metadata","weights"]` || !strings.Contains(mustJSON(out["error"]), "new id") {
			t.Fatalf("another body under the same id: status %d %v; want 409 naming metadata and weights", resp.StatusCode, out)
		}
		if n := queued(); n != 1 {
			t.Fatalf("%d tasks queued after a conflicting event, want 1", n)
		}
		getSigned := func(path string, sig string) *http.Response {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
			if sig != "" {
				req.Header.Set(events.SignatureHeader, sig)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { resp.Body.Close() })
			return resp
		}
		for name, sig := range map[string]string{
			"unsigned":             "",
			"signed for another":   events.SignRequest(secret, time.Now(), "GET", "/v1/events/run-8"),
			"the POST's signature": events.Sign(secret, now, body),
			"stale":                events.SignRequest(secret, time.Now().Add(-time.Hour), "GET", "/v1/events/run-7"),
		} {
			if resp := getSigned("/v1/events/run-7", sig); resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET record, %s: %d, want 401", name, resp.StatusCode)
			}
		}
		get := getSigned("/v1/events/run-7", events.SignRequest(secret, time.Now(), "GET", "/v1/events/run-7"))
		var rec storage.Record
		if err := json.NewDecoder(get.Body).Decode(&rec); err != nil || rec.EventID != "run-7" || rec.State != storage.StateQueued || !strings.Contains(string(rec.Metadata), `"run-7"`) ||
			rec.CallbackURL != "https://hooks.example.com/r8im/run-7" {
			t.Fatalf("GET record: %+v %v", rec, err)
		}
		if miss := getSigned("/v1/events/nope", events.SignRequest(secret, time.Now(), "GET", "/v1/events/nope")); miss.StatusCode != http.StatusNotFound {
			t.Fatalf("GET unknown event: %d", miss.StatusCode)
		}
	})

	if resp, _ := http.Get(srv.URL + "/healthz"); resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz %d", resp.StatusCode)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
