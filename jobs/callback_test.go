package jobs_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/jobs/task"
	"github.com/r8im/r8im/storage"
)

// callbackSecret is a Standard Webhooks secret: whsec_ and base64.
var callbackSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("r8im-test-callback-key-32-bytes!"))

// delivery is one POST the receiver got.
type delivery struct {
	header http.Header
	body   jobs.CallbackBody
	raw    []byte
	err    error // signature verification, by the Standard Webhooks library
}

// receiver is a callback receiver that answers the first fail requests
// with 500 and verifies every signature with the reference library.
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	fail int
	got  []delivery
}

func newReceiver(t *testing.T, fail int) *receiver {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(callbackSecret)
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{fail: fail}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		raw, _ := io.ReadAll(req.Body)
		d := delivery{header: req.Header.Clone(), raw: raw, err: wh.Verify(raw, req.Header)}
		_ = json.Unmarshal(raw, &d.body)
		r.mu.Lock()
		r.got = append(r.got, d)
		failing := len(r.got) <= r.fail
		r.mu.Unlock()
		if failing {
			http.Error(w, "down for maintenance", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

// waitDeliveries waits until the receiver has had n requests.
func (r *receiver) waitDeliveries(t *testing.T, n int, timeout time.Duration) []delivery {
	t.Helper()
	var got []delivery
	testenv.Eventually(t, timeout, fmt.Sprintf("%d callbacks", n), func() (bool, string) {
		got = r.deliveries()
		return len(got) >= n, fmt.Sprintf("%d callbacks", len(got))
	})
	return got
}

func withCallbacks(h *jobs.Handler) {
	var c config.Callbacks
	c.Secrets = config.Secret(callbackSecret + ",a-second-secret-being-rotated-in")
	h.Callbacks = jobs.Callbacks{Keys: c.SecretKeys(), MaxRetry: 5, Client: loopbackCallbacks}
}

// loopbackCallbacks may reach the test receivers, all on 127.0.0.1: the
// worker's R8IM_ALLOW_PRIVATE_NETWORKS=127.0.0.0/8.
var loopbackCallbacks = func() *http.Client {
	c, err := jobs.CallbackClient(&config.Network{AllowPrivateNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if err != nil {
		panic(err)
	}
	return c
}()

func TestCallbackDeliveredSignedAndRetried(t *testing.T) {
	forEachReg(t, func(t *testing.T, reg testenv.RegistryEnv) {
		e := newEnv(t, reg)
		rcv := newReceiver(t, 2) // refuses twice, then accepts
		e.worker(t, 2, withCallbacks)
		weights := e.s3.PutObject(t, "cb/weights.tar", weightsTar(t))

		ctx := context.Background()
		ok, err := e.enq.Enqueue(ctx, task.Request{Queue: task.QueuePublish, EventID: "cb-ok", CallbackURL: rcv.URL + "/hook",
			Payload: task.AffixPayload{EventID: "cb-ok", Base: e.base, Weights: weights, Dest: e.repo(e.proxy.Host, "cb/ok:1"), Created: created}})
		if err != nil {
			t.Fatal(err)
		}
		rec := e.waitFor(t, ok.ID, 2*time.Minute)
		if rec.State != storage.StateSucceeded {
			t.Fatalf("publish failed: %s", rec.LastError)
		}
		got := rcv.waitDeliveries(t, 3, time.Minute)
		for i, d := range got {
			if d.err != nil {
				t.Errorf("delivery %d: the Standard Webhooks library rejects the signature: %v", i, d.err)
			}
			if id := d.header.Get("webhook-id"); id != got[0].header.Get("webhook-id") || id == "" {
				t.Errorf("delivery %d: webhook-id %q differs from the first's %q: receivers cannot drop duplicates", i, id, got[0].header.Get("webhook-id"))
			}
			if n := len(strings.Fields(d.header.Get("webhook-signature"))); n != 2 {
				t.Errorf("delivery %d: %d signatures, want one per configured secret (2)", i, n)
			}
		}
		last := got[2]
		if last.body.Type != jobs.EventPublishSucceeded {
			t.Errorf("callback type %q, want %q", last.body.Type, jobs.EventPublishSucceeded)
		}
		var data storage.Record
		b, _ := json.Marshal(last.body.Data)
		if err := json.Unmarshal(b, &data); err != nil || data.Result != rec.Result || data.ID != ok.ID || data.State != storage.StateSucceeded {
			t.Errorf("callback data = %s (%v); want the final record with result %s", b, err, rec.Result)
		}
		if strings.Contains(string(last.raw), `"inputs"`) {
			t.Error("the callback carries the task inputs; it should carry the result only")
		}
		// Tampering is caught by the same verifier: the test would notice a
		// signature that verified anything.
		wh, _ := standardwebhooks.NewWebhook(callbackSecret)
		if err := wh.Verify([]byte(strings.Replace(string(last.raw), "succeeded", "failed", 1)), last.header); err == nil {
			t.Error("a tampered body verified")
		}

		// A publish that fails for good calls back too, once.
		bad, err := e.enq.Enqueue(ctx, task.Request{Queue: task.QueuePublish, EventID: "cb-bad", CallbackURL: rcv.URL + "/hook",
			Payload: task.AffixPayload{EventID: "cb-bad", Base: e.proxy.Host + "/" + testenv.BaseNamespace + "/no/such:base", Weights: weights, Dest: e.repo(e.proxy.Host, "cb/bad"), Created: created}})
		if err != nil {
			t.Fatal(err)
		}
		if rec := e.waitFor(t, bad.ID, time.Minute); rec.State != storage.StateFailed {
			t.Fatalf("a missing base did not fail: %+v", rec)
		}
		got = rcv.waitDeliveries(t, 4, time.Minute)
		if d := got[3]; d.body.Type != jobs.EventPublishFailed || d.err != nil || !strings.Contains(string(d.raw), "no/such") {
			t.Errorf("failure callback: type %q, signature error %v, body %s", d.body.Type, d.err, d.raw)
		}
		// Both callback tasks are done (kept as completed for the retention)
		// and nothing is left to run or retry in the queue: no delivery can
		// follow, so the count is final.
		insp := asynq.NewInspectorFromRedisClient(e.rdb)
		waitTaskState(t, insp, task.QueuePublish, jobs.CallbackPayload{Record: ok.ID, State: storage.StateSucceeded}.TaskID(), asynq.TaskStateCompleted)
		waitTaskState(t, insp, task.QueuePublish, jobs.CallbackPayload{Record: bad.ID, State: storage.StateFailed}.TaskID(), asynq.TaskStateCompleted)
		testenv.Eventually(t, 5*time.Second, "the publish queue to be idle", func() (bool, string) {
			q, err := insp.GetQueueInfo(task.QueuePublish)
			if err != nil {
				return false, err.Error()
			}
			return q.Pending+q.Active+q.Scheduled+q.Retry == 0, fmt.Sprintf("%+v", *q)
		})
		if n := len(rcv.deliveries()); n != 4 {
			t.Errorf("%d callbacks in all, want 4 (3 attempts for the success, 1 for the failure)", n)
		}
	})
}

func TestCallbackWithoutSecretIsNotSent(t *testing.T) {
	forEachReg(t, func(t *testing.T, reg testenv.RegistryEnv) {
		e := newEnv(t, reg)
		rcv := newReceiver(t, 0)
		e.worker(t, 1) // no R8IM_CALLBACK_SECRETS
		// The callback task is archived with the reason, never sent unsigned.
		info, err := e.publishArchivingCallback(t, "cb-nosecret", rcv.URL, "cb/ns")
		if err != nil || !strings.Contains(info.LastErr, "R8IM_CALLBACK_SECRETS") {
			t.Errorf("archived callback: %v, %v; want a reason naming R8IM_CALLBACK_SECRETS", info, err)
		}
		if n := len(rcv.deliveries()); n != 0 {
			t.Errorf("%d unsigned callbacks sent", n)
		}
	})
}

// publishArchivingCallback publishes a small affix with callback hook,
// waits for it to succeed and for its callback task to be archived, and
// returns that task.
func (e *env) publishArchivingCallback(t *testing.T, eventID, hook, repo string) (*asynq.TaskInfo, error) {
	t.Helper()
	weights := e.s3.PutObject(t, "cb/weights.tar", weightsTar(t))
	res, err := e.enq.Enqueue(context.Background(), task.Request{Queue: task.QueuePublish, EventID: eventID, CallbackURL: hook,
		Payload: task.AffixPayload{EventID: eventID, Base: e.base, Weights: weights, Dest: e.repo(e.proxy.Host, repo), Created: created}})
	if err != nil {
		t.Fatal(err)
	}
	if rec := e.waitFor(t, res.ID, 2*time.Minute); rec.State != storage.StateSucceeded {
		t.Fatalf("publish: %+v", rec)
	}
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	id := jobs.CallbackPayload{Record: res.ID, State: storage.StateSucceeded}.TaskID()
	waitArchived(t, insp, task.QueuePublish, id)
	return insp.GetTaskInfo(task.QueuePublish, id)
}

// weightsTar is a small weights tarball.
func weightsTar(t *testing.T) string {
	t.Helper()
	p, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 1, FileSize: 64 << 10})
	return p
}

// TestCallbackToPrivateAddressRefused: a callback_url whose name resolves
// to loopback (an allowlisted name pointing inside) is never connected to
// unless the worker allows the network; the callback fails for good, naming
// the setting.
func TestCallbackToPrivateAddressRefused(t *testing.T) {
	forEachReg(t, func(t *testing.T, reg testenv.RegistryEnv) {
		e := newEnv(t, reg)
		rcv := newReceiver(t, 0)
		e.worker(t, 1, func(h *jobs.Handler) {
			withCallbacks(h)
			h.Callbacks.Client = nil // the default: no private network allowed
		})
		hook := strings.Replace(rcv.URL, "127.0.0.1", "localhost", 1) + "/hook"
		info, err := e.publishArchivingCallback(t, "cb-private", hook, "cb/private")
		if err != nil || info.Retried != 0 || !strings.Contains(info.LastErr, "loopback") || !strings.Contains(info.LastErr, "R8IM_ALLOW_PRIVATE_NETWORKS") {
			t.Errorf("archived callback: %+v, %v; want refused at once, naming the loopback address and R8IM_ALLOW_PRIVATE_NETWORKS", info, err)
		}
		if n := len(rcv.deliveries()); n != 0 {
			t.Errorf("the receiver on loopback got %d requests", n)
		}
	})
}
