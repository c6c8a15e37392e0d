package jobs

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/internal/netguard"
	"github.com/r8im/r8im/internal/retry"
	"github.com/r8im/r8im/internal/untrusted"
	"github.com/r8im/r8im/jobs/task"
	"github.com/r8im/r8im/storage"
)

// TypeCallback delivers a final record, or a finished batch, to its
// callback URL: a task of its own, so a slow receiver never holds a
// publishing worker.
const TypeCallback = "callback:deliver"

// Callback event types (the "type" of the delivered body).
const (
	EventPublishSucceeded = "publish.succeeded"
	EventPublishFailed    = "publish.failed"
	EventBatchCompleted   = "batch.completed"
)

// callbackRetention keeps a delivered callback's task id taken for this
// long, so that a repeated final outcome (a duplicate delivery of the
// publish task) does not send it twice.
const callbackRetention = 24 * time.Hour

// DefaultCallbackMaxRetry is how often a refused callback is retried when
// nothing else says (config.Callbacks.MaxRetry, R8IM_CALLBACK_MAX_RETRY).
const DefaultCallbackMaxRetry = 10

// callbackTimeout bounds one delivery attempt.
const callbackTimeout = 15 * time.Second

// CallbackPayload names what to deliver: a record in its final state, or a
// completed batch. The body is read when delivering, never stored in the
// task.
type CallbackPayload struct {
	Record string        `json:"record,omitempty"`
	State  storage.State `json:"state,omitempty"` // the record's final state
	Batch  string        `json:"batch,omitempty"`
}

// Type is the task type of a callback.
func (CallbackPayload) Type() string { return TypeCallback }

// TaskID is the task id of a callback; it doubles as the webhook-id header,
// the same on every retry so that receivers can drop duplicates.
func (p CallbackPayload) TaskID() string {
	if p.Batch != "" {
		return "callback:batch:" + p.Batch
	}
	return "callback:record:" + p.Record + ":" + string(p.State)
}

// Validate names the bad field.
func (p CallbackPayload) Validate() error {
	var bad string
	switch {
	case (p.Record == "") == (p.Batch == ""):
		bad = "record: exactly one of record and batch must be set"
	case p.Record != "" && p.State != storage.StateSucceeded && p.State != storage.StateFailed:
		bad = fmt.Sprintf("state: %q must be succeeded or failed", p.State)
	case p.Batch != "" && !task.EventIDPattern.MatchString(p.Batch):
		bad = fmt.Sprintf("batch: %q is not a batch id", p.Batch)
	default:
		return nil
	}
	return fmt.Errorf("%w (%s): %s", task.ErrInvalidPayload, TypeCallback, bad)
}

// CallbackBody is what a callback POSTs (Standard Webhooks' shape).
type CallbackBody struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      any       `json:"data"` // storage.Record or storage.BatchStatus
}

// SignWebhook returns the webhook-signature header of a Standard Webhooks
// delivery: "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>" for each key,
// space-separated (receivers accept any one; rotation signs with both).
func SignWebhook(keys [][]byte, id string, ts time.Time, body []byte) string {
	sigs := make([]string, 0, len(keys))
	for _, k := range keys {
		m := hmac.New(sha256.New, k)
		fmt.Fprintf(m, "%s.%d.", id, ts.Unix())
		m.Write(body)
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(m.Sum(nil)))
	}
	return strings.Join(sigs, " ")
}

// ErrNoCallbackSecret fails a callback when the worker has no key to sign
// it with: unsigned callbacks are never sent.
var ErrNoCallbackSecret = errors.New("no callback signing secret: set R8IM_CALLBACK_SECRETS on the worker (e.g. whsec_ and the base64 of 32 random bytes)")

// Callbacks is how the worker delivers callbacks.
type Callbacks struct {
	Keys     [][]byte     // signing keys (config.Callbacks.SecretKeys)
	MaxRetry int          // retries of a refused delivery
	Client   *http.Client // default: CallbackClient(nil)
}

// CallbackClient is the client callbacks are delivered with: a 15s
// timeout, no redirects followed (the host was allowlisted, where it
// redirects was not), and no connection to a loopback, private, link-local
// or other non-public address unless n allows its network
// (R8IM_ALLOW_PRIVATE_NETWORKS) — whatever name resolved to it. n (nil: the
// defaults) also gives the CA file and the idle timeout.
func CallbackClient(n *config.Network) (*http.Client, error) {
	o := netguard.Options{NoRedirects: true, GuardPrivate: true}
	if n != nil {
		roots, err := n.RootCAs()
		if err != nil {
			return nil, fmt.Errorf("R8IM_CA_FILE: %w", err)
		}
		o.RootCAs, o.Allow, o.IdleTimeout = roots, n.AllowPrivateNetworks, n.IdleTimeout
	}
	c := netguard.NewClient(o)
	c.Timeout = callbackTimeout
	return c, nil
}

// defaultCallbackClient serves Handlers whose Callbacks.Client is nil.
var defaultCallbackClient, _ = CallbackClient(nil)

func (h *Handler) callback(ctx context.Context, t *asynq.Task) error {
	var p CallbackPayload
	if err := decode(t, &p); err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	if len(h.Callbacks.Keys) == 0 {
		return fmt.Errorf("%w: %w", ErrNoCallbackSecret, asynq.SkipRetry)
	}
	url, body, err := h.callbackBody(ctx, p)
	if err != nil {
		return err
	}
	if url == "" {
		return nil // nothing asked for a callback (or the record expired)
	}
	return h.deliver(ctx, url, p.TaskID(), body)
}

// callbackBody reads what p delivers, and where to.
func (h *Handler) callbackBody(ctx context.Context, p CallbackPayload) (string, []byte, error) {
	body := CallbackBody{Timestamp: time.Now().UTC()}
	var url string
	if p.Batch != "" {
		if h.Batches == nil {
			return "", nil, errors.New("delivering a batch callback: the worker has no batch store")
		}
		st, err := h.Batches.Status(ctx, p.Batch)
		if errors.Is(err, storage.ErrNoBatch) {
			return "", nil, nil
		}
		if err != nil {
			return "", nil, err
		}
		url, body.Type, body.Data = st.CallbackURL, EventBatchCompleted, st
	} else {
		rec, err := h.Records.Get(ctx, p.Record)
		if errors.Is(err, storage.ErrNoRecord) {
			return "", nil, nil
		}
		if err != nil {
			return "", nil, err
		}
		rec.Inputs = nil // references only; the receiver sent them
		url, body.Type, body.Data = rec.CallbackURL, EventPublishSucceeded, rec
		if p.State == storage.StateFailed {
			body.Type = EventPublishFailed
		}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return "", nil, fmt.Errorf("encoding the callback: %w", err)
	}
	return url, b, nil
}

// deliver POSTs body, signed, to url. 2xx delivers; 410 Gone stops
// retrying; 429 and 503 honour Retry-After; anything else is retried with
// backoff. Redirects are not followed (the host was allowlisted, its
// redirect target was not).
func (h *Handler) deliver(ctx context.Context, url, id string, body []byte) error {
	client := h.Callbacks.Client
	if client == nil {
		client = defaultCallbackClient
	}
	ts := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("delivering the callback to %s: %w: %w", untrusted.URL(url), err, asynq.SkipRetry)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "r8im-callback")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set("webhook-signature", SignWebhook(h.Callbacks.Keys, id, ts, body))
	resp, err := client.Do(req)
	if err != nil {
		// What a receiver answered may be quoted (a malformed answer's
		// first line): filtered and capped.
		safe := untrusted.Err(withoutQuery(err), 512)
		if errors.Is(err, netguard.ErrBlockedAddress) {
			return fmt.Errorf("delivering the callback to %s: %w; callbacks go to public addresses only, unless the worker allows the network with R8IM_ALLOW_PRIVATE_NETWORKS: %w",
				untrusted.URL(url), safe, asynq.SkipRetry)
		}
		return fmt.Errorf("delivering the callback to %s: %w", untrusted.URL(url), safe)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusGone:
		return fmt.Errorf("delivering the callback to %s: the receiver answered 410 Gone; not retrying: %w", untrusted.URL(url), asynq.SkipRetry)
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		err := fmt.Errorf("delivering the callback to %s: the receiver answered HTTP %d", untrusted.URL(url), code)
		if after := retry.ParseAfter(resp.Header.Get("Retry-After"), time.Now()); after > 0 {
			return &retry.AfterError{Err: err, After: after}
		}
		return err
	default:
		return fmt.Errorf("delivering the callback to %s: the receiver answered HTTP %d", untrusted.URL(url), code)
	}
}

// withoutQuery drops the query (which may hold a receiver's token) from the
// URL a client error quotes.
func withoutQuery(err error) error {
	var ue *neturl.Error
	if errors.As(err, &ue) {
		return &neturl.Error{Op: ue.Op, URL: untrusted.URL(ue.URL), Err: ue.Err}
	}
	return err
}

// notify enqueues the callbacks a final outcome calls for: the record's own
// (when its event gave a callback_url) and those of the batches it
// completed. An error leaves the publish task to be retried, which finds
// the record final and only notifies again.
func (h *Handler) notify(ctx context.Context, id string, state storage.State) error {
	var payloads []CallbackPayload
	rec, err := h.Records.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("reading record %s for its callback: %w", id, err)
	}
	if rec.CallbackURL != "" {
		payloads = append(payloads, CallbackPayload{Record: id, State: state})
	}
	if h.Batches != nil {
		done, err := h.Batches.Finished(ctx, id, state)
		if err != nil {
			return err
		}
		for _, b := range done {
			payloads = append(payloads, CallbackPayload{Batch: b})
		}
	}
	for _, p := range payloads {
		if err := h.enqueueCallback(ctx, p, rec.Queue); err != nil {
			return err
		}
	}
	return nil
}

// enqueueCallback queues p on queue; one already queued or delivered
// recently is not queued again.
func (h *Handler) enqueueCallback(ctx context.Context, p CallbackPayload, queue string) error {
	if h.CallbackQueue == nil {
		return fmt.Errorf("queueing callback %s: the handler has no CallbackQueue", p.TaskID())
	}
	return EnqueueCallback(ctx, h.CallbackQueue, p, queue, h.Callbacks.MaxRetry)
}

// EnqueueCallback queues callback p on queue with client; one already
// queued or delivered in the last day is not queued again. (Batch
// completion found by `enqueue backfill` itself uses it too.)
func EnqueueCallback(ctx context.Context, client TaskQueue, p CallbackPayload, queue string, maxRetry int) error {
	if queue == "" {
		queue = task.QueueOps
	}
	task, err := newTask(TypeCallback, p, p.TaskID())
	if err != nil {
		return err
	}
	_, err = client.EnqueueContext(ctx, task, asynq.Queue(queue), asynq.MaxRetry(maxRetry),
		asynq.Timeout(time.Minute), asynq.Retention(callbackRetention))
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("queueing callback %s: %w", p.TaskID(), err)
	}
	return nil
}
