package task

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Request is one task to enqueue with what its record keeps.
type Request struct {
	Payload  Payload
	Queue    string
	EventID  string
	Metadata json.RawMessage
	// CallbackURL is kept in the record for the result callback.
	CallbackURL string
	// Incidental names payload fields (by their JSON names) that do not
	// identify the work: an enqueue whose record differs only in them is
	// a duplicate, not a conflict. A backfill re-run gives a task another
	// batch_id; an affix whose id is derived from its other inputs may
	// differ in created.
	Incidental []string
}

// Enqueued says what became of an enqueue.
type Enqueued struct {
	ID       string `json:"id"`
	Queue    string `json:"queue"`
	Existing bool   `json:"existing"` // already queued, running or done: nothing was added
	// State is the task's record state (a storage.State: queued, running,
	// succeeded or failed).
	State string `json:"state"`
}

// ErrConflict marks an enqueue whose task id is taken by other work: the
// same event id (or task id) with other inputs, metadata or callback.
var ErrConflict = errors.New("the id is already used for other work")

// ConflictError says which fields of a request differ from what the
// existing record holds: payload fields by their JSON names (base,
// weights, dest, …), and metadata, callback_url or type.
type ConflictError struct {
	ID     string
	Fields []string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s is already queued or done with another %s: give the new work a new id, or send exactly the same request again",
		e.ID, strings.Join(e.Fields, ", "))
}

// Unwrap makes errors.Is(err, ErrConflict) hold.
func (e *ConflictError) Unwrap() error { return ErrConflict }
