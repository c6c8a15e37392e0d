package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/storage"
)

// Enqueuer is what the receiver needs of jobs.Enqueuer.
type Enqueuer interface {
	Enqueue(ctx context.Context, r jobs.Request) (jobs.Enqueued, error)
}

// RecordReader reads publish records (storage.Records).
type RecordReader interface {
	Get(ctx context.Context, id string) (*storage.Record, error)
}

// Receiver is the HTTP front of training-completion events.
type Receiver struct {
	Verifier Verifier
	Allow    Allowlists
	Enqueuer Enqueuer
	Records  RecordReader
	Ping     func(ctx context.Context) error // for /healthz: is Redis reachable
	Metrics  http.Handler                    // for /metrics; nil serves none
	Log      *slog.Logger
}

// Accepted is the answer to an event: 202 when queued now, 200 when the
// event was already known (nothing queued twice).
type Accepted struct {
	EventID string        `json:"event_id"`
	TaskID  string        `json:"task_id"`
	State   storage.State `json:"state"`
	Known   bool          `json:"already_known"`
}

// Handler routes POST /v1/events/training-completed, GET /v1/events/{id},
// /healthz and /metrics.
func (rc *Receiver) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/events/training-completed", rc.post)
	mux.HandleFunc("GET /v1/events/{id}", rc.get)
	mux.HandleFunc("GET /healthz", rc.healthz)
	if rc.Metrics != nil {
		mux.Handle("GET /metrics", rc.Metrics)
	}
	return mux
}

func (rc *Receiver) post(w http.ResponseWriter, r *http.Request) {
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
	if err := rc.Verifier.Verify(r.Header.Get(SignatureHeader), body); err != nil {
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
	res, err := rc.Enqueuer.Enqueue(r.Context(), jobs.Request{
		Payload: ev.Payload(), Queue: jobs.QueuePublish, EventID: ev.ID, Metadata: ev.Metadata, CallbackURL: ev.CallbackURL,
	})
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
	writeJSON(w, status, Accepted{EventID: ev.ID, TaskID: res.ID, State: res.State, Known: res.Existing})
}

func (rc *Receiver) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	rec, err := rc.Records.Get(r.Context(), jobs.AffixPayload{EventID: id}.TaskID())
	switch {
	case errors.Is(err, storage.ErrNoRecord):
		writeJSON(w, http.StatusNotFound, errorBody{Error: "no event " + id})
	case err != nil:
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "reading the record failed; try again"})
	default:
		writeJSON(w, http.StatusOK, rec)
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
