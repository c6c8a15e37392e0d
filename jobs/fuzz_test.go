package jobs

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/r8im/r8im/jobs/task"
)

// FuzzDecodePayload feeds arbitrary bytes to the worker's payload decoding
// (decode: JSON, then Validate) for every task type. It must never panic;
// an error must be task.ErrInvalidPayload; a payload that passes must build its
// task, have a stable task id that fits a Redis key, and survive a round
// trip through its own encoding unchanged.
func FuzzDecodePayload(f *testing.F) {
	for _, seed := range []struct {
		typ  string
		body string
	}{
		{task.TypeAffix, `{"event_id":"run-1","base":"r8.im/acme/base@sha256:0000000000000000000000000000000000000000000000000000000000000000","weights":"s3://weights/run-1/w.tar","dest":"r8.im/acme/model:v1","created":"2026-11-20T08:00:00Z"}`},
		{task.TypeAffix, `{"event_id":"run-2","base":"r8.im/acme/base:v1","weights":"https://files.example.com/w.tar?X-Amz-Signature=abc","dest":"localhost:5000/m","target":"/src/w","compression":"zstd","level":3,"platform":"linux/arm64/v8","created":"2026-11-20T08:00:00+02:00"}`},
		{task.TypeAffix, `{"event_id":"../x","base":"acme/base:v1","weights":"ftp://x","dest":"r8.im/a@sha256:00","created":"0001-01-01T00:00:00Z"}`},
		{task.TypeRemix, `{"base":"r8.im/acme/base:v1","weights":"r8.im/acme/weights@sha256:0000000000000000000000000000000000000000000000000000000000000000","dest":"r8.im/acme/remixed:v1","platform":"all"}`},
		{task.TypeZstd, `{"source":"r8.im/acme/model@sha256:0000000000000000000000000000000000000000000000000000000000000000","dest":"r8.im/acme/model:z","level":19,"min_size":1048576,"batch_id":"b-1"}`},
		{task.TypeZstd, `{"source":"r8.im/acme/model:v1","dest":"r8.im/acme/model:z","min_size":-1}`},
		{task.TypeAffix, `[]`},
		{task.TypeAffix, `{"event_id": 1}`},
		{task.TypeAffix, "{\"event_id\":\"run-\u0000\"}"},
		{task.TypeZstd, `null`},
	} {
		f.Add(seed.typ, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, typ string, body []byte) {
		var p task.Payload
		switch strings.ToLower(typ) {
		case task.TypeRemix:
			p = &task.RemixPayload{}
		case task.TypeZstd:
			p = &task.ZstdPayload{}
		default:
			typ, p = task.TypeAffix, &task.AffixPayload{}
		}
		err := decode(asynq.NewTask(typ, body), p)
		if err != nil {
			if !errors.Is(err, task.ErrInvalidPayload) {
				t.Fatalf("decode error %v is not task.ErrInvalidPayload (it would be retried)", err)
			}
			return
		}
		tk, err := NewTask(p)
		if err != nil {
			t.Fatalf("a payload that validated does not build its task: %v", err)
		}
		id := p.TaskID()
		if id == "" || len(id) > 200 || strings.ContainsAny(id, " \t\r\n{}") {
			t.Fatalf("task id %q is not a safe key", id)
		}
		again := newPayload(tk.Type()) // the type as the task carries it, not the fuzzed spelling
		if err := decode(tk, again); err != nil {
			t.Fatalf("the task's own encoding %s does not decode: %v", tk.Payload(), err)
		}
		if again.TaskID() != id {
			t.Fatalf("task id changed in a round trip: %q → %q", id, again.TaskID())
		}
		a, _ := json.Marshal(p)
		b, _ := json.Marshal(again)
		if string(a) != string(b) {
			t.Fatalf("payload changed in a round trip:\n%s\n%s", a, b)
		}
	})
}

func newPayload(typ string) task.Payload {
	switch typ {
	case task.TypeRemix:
		return &task.RemixPayload{}
	case task.TypeZstd:
		return &task.ZstdPayload{}
	}
	return &task.AffixPayload{}
}
