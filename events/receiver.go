package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/r8im/r8im/internal/untrusted"
	"github.com/r8im/r8im/jobs/task"
	"github.com/r8im/r8im/storage"
)

// Enqueuer is what the receiver needs of jobs.Enqueuer.
type Enqueuer interface {
	Enqueue(ctx context.Context, r task.Request) (task.Enqueued, error)
}

// RecordReader reads publish records (storage.Records).
type RecordReader interface {
	Get(ctx context.Context, id string) (*storage.Record, error)
}

// DefaultMaxBodies is how many event bodies the receiver reads at once when
// Receiver.MaxBodies is zero: at most this many MiB of bodies in memory.
const DefaultMaxBodies = 64

// Receiver is the HTTP front of training-completion events.
type Receiver struct {
	Verifier Verifier
	Allow    Allowlists
	Enqueuer Enqueuer
	Records  RecordReader
	Ping     func(ctx context.Context) error // for /healthz: is Redis reachable
	Metrics  http.Handler                    // for /metrics; nil serves none
	Log      *slog.Logger
	// MaxBodies bounds the event bodies read and handled at once (each up
	// to MaxBodySize); a request over it gets 503 with Retry-After. Zero
	// means DefaultMaxBodies.
	MaxBodies int

	bodies chan struct{} // the MaxBodies slots, made by Handler
}

// Accepted is the answer to an event: 202 when queued now, 200 when the
// event was already known (nothing queued twice).
type Accepted struct {
	EventID string        `json:"event_id"`
	TaskID  string        `json:"task_id"`
	State   storage.State `json:"state"`
	Known   bool          `json:"already_known"`
}

// Conflict is the 409 answer to an event whose id was received before
// with another body: Fields names the members that differ.
type Conflict struct {
	Error  string   `json:"error"`
	Fields []string `json:"fields"`
}

// payloadToEvent names the affix payload's fields as the event does.
var payloadToEvent = map[string]string{"dest": "destination", "created": "completed_at", "event_id": "id"}

// eventFields names the fields of a task.ConflictError as the event does.
func eventFields(fields []string) []string {
	out := make([]string, 0, len(fields))
	for _, f := range fields {
		if e, ok := payloadToEvent[f]; ok {
			f = e
		}
		if !contains(out, f) {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}

// Handler routes POST /v1/events/training-completed, GET /v1/events/{id},
// /healthz and /metrics. Both /v1 routes need an R8im-Signature.
func (rc *Receiver) Handler() http.Handler {
	n := rc.MaxBodies
	if n <= 0 {
		n = DefaultMaxBodies
	}
	rc.bodies = make(chan struct{}, n)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/events/training-completed", rc.post)
	mux.HandleFunc("GET /v1/events/{id}", rc.get)
	mux.HandleFunc("GET /healthz", rc.healthz)
	if rc.Metrics != nil {
		mux.Handle("GET /metrics", rc.Metrics)
	}
	return mux
}

// BodiesReading is how many event bodies are being read or handled now
// (at most MaxBodies): a gauge for /metrics.
func (rc *Receiver) BodiesReading() int { return len(rc.bodies) }

// refuseEarly answers a request whose body has not been read, and closes
// the connection rather than reading (and discarding) that body.
func refuseEarly(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Connection", "close")
	writeJSON(w, status, v)
}

func (rc *Receiver) post(w http.ResponseWriter, r *http.Request) {
	// What can be refused from the headers is refused before a byte of
	// the body is read: no header, a malformed one, a stale timestamp, a
	// declared size over the limit.
	sig, err := rc.Verifier.Parse(r.Header.Get(SignatureHeader))
	if err != nil {
		rc.log().Warn("event refused", "reason", err.Error(), "remote", r.RemoteAddr)
		refuseEarly(w, http.StatusUnauthorized, errorBody{Error: err.Error()})
		return
	}
	if r.ContentLength > MaxBodySize {
		refuseEarly(w, http.StatusRequestEntityTooLarge, errorBody{Error: ErrBodyTooLarge.Error() + ": send the weights by URL and keep metadata small"})
		return
	}
	select {
	case rc.bodies <- struct{}{}:
		defer func() { <-rc.bodies }()
	default:
		rc.log().Warn("event refused", "reason", "busy: every body slot is taken", "max_bodies", cap(rc.bodies), "remote", r.RemoteAddr)
		w.Header().Set("Retry-After", "1")
		refuseEarly(w, http.StatusServiceUnavailable, errorBody{Error: fmt.Sprintf("busy: %d events are being received; send it again after the Retry-After delay (it is idempotent)", cap(rc.bodies))})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodySize))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeJSON(w, http.StatusRequestEntityTooLarge, errorBody{Error: ErrBodyTooLarge.Error() + ": send the weights by URL and keep metadata small"})
			return
		}
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "reading the body: " + err.Error()})
		return
	}
	// Authenticate before looking at the body: unsigned input is not parsed.
	if err := rc.Verifier.Check(sig, body); err != nil {
		rc.log().Warn("event refused", "reason", err.Error(), "remote", r.RemoteAddr)
		writeJSON(w, http.StatusUnauthorized, errorBody{Error: err.Error()})
		return
	}
	ev, err := Decode(bytes.NewReader(body))
	if ev != nil {
		err = ev.Validate(rc.Allow) // every problem, allowlists included
	}
	var ve *ValidationError
	switch {
	case errors.As(err, &ve):
		writeJSON(w, http.StatusBadRequest, ve)
		return
	case err != nil:
		writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error()})
		return
	}
	res, err := rc.Enqueuer.Enqueue(r.Context(), task.Request{
		Payload: ev.Payload(), Queue: task.QueuePublish, EventID: ev.ID, Metadata: ev.Metadata, CallbackURL: ev.CallbackURL,
	})
	var ce *task.ConflictError
	if errors.As(err, &ce) {
		fields := eventFields(ce.Fields)
		rc.log().Warn("event refused", "event_id", ev.ID, "reason", "its id is taken by another event", "differing", fields)
		writeJSON(w, http.StatusConflict, Conflict{
			Error:  fmt.Sprintf("event %s was already received with another %s: an event id names one event; send a new event with a new id", ev.ID, strings.Join(fields, ", ")),
			Fields: fields,
		})
		return
	}
	if err != nil {
		rc.log().Error("enqueueing an event", "event_id", ev.ID, "error", err)
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "the event could not be queued; send it again (it is idempotent)"})
		return
	}
	status := http.StatusAccepted
	if res.Existing {
		status = http.StatusOK
	}
	rc.log().Info("event accepted", "event_id", ev.ID, "task_id", res.ID, "already_known", res.Existing)
	writeJSON(w, status, Accepted{EventID: ev.ID, TaskID: res.ID, State: storage.State(res.State), Known: res.Existing})
}

// get answers GET /v1/events/{id} with the event's record, to holders of
// an event secret only (the request signed as SignRequest does), and
// without what the record may hold that its reader must not see: URL
// queries and user info (presigned credentials), and remote-written text
// unfiltered (see PublicRecord).
func (rc *Receiver) get(w http.ResponseWriter, r *http.Request) {
	path := r.URL.EscapedPath()
	if err := rc.Verifier.VerifyRequest(r.Header.Get(SignatureHeader), http.MethodGet, path); err != nil {
		rc.log().Warn("record read refused", "reason", err.Error(), "remote", r.RemoteAddr)
		msg := err.Error()
		if errors.Is(err, ErrNoSignature) {
			msg = "no R8im-Signature header"
		}
		refuseEarly(w, http.StatusUnauthorized, errorBody{Error: msg + fmt.Sprintf(`; reading a record needs R8im-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.GET %s")>, made with one of R8IM_EVENT_SECRETS`, clip(path))})
		return
	}
	id := r.PathValue("id")
	rec, err := rc.Records.Get(r.Context(), task.AffixPayload{EventID: id}.TaskID())
	switch {
	case errors.Is(err, storage.ErrNoRecord):
		writeJSON(w, http.StatusNotFound, errorBody{Error: "no event " + untrusted.Text(id, 200)})
	case err != nil:
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "reading the record failed; try again"})
	default:
		writeJSON(w, http.StatusOK, PublicRecord(rec))
	}
}

func (rc *Receiver) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if rc.Ping != nil {
		if err := rc.Ping(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "redis: " + err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (rc *Receiver) log() *slog.Logger {
	if rc.Log != nil {
		return rc.Log
	}
	return slog.Default()
}

type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
