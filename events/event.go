package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"
)

// Destination is where an event's image is pushed.
type Destination struct {
	Repo string `json:"repo"`          // host/repo, without tag or digest
	Tag  string `json:"tag,omitempty"` // none: pushed by digest only
}

// TrainingCompleted is the body of POST /v1/events/training-completed, the
// event a training system sends when a run has written its weights. Its
// JSON Schema is docs/event.schema.json.
type TrainingCompleted struct {
	ID          string          `json:"id"`
	Base        string          `json:"base"`
	Weights     string          `json:"weights"`
	Destination Destination     `json:"destination"`
	Target      string          `json:"target,omitempty"`
	Compression string          `json:"compression,omitempty"`
	Layers      string          `json:"layers,omitempty"` // weights layout
	CompletedAt time.Time       `json:"completed_at"`
	CallbackURL string          `json:"callback_url,omitempty"`
	Metadata    json.RawMessage `json:"metadata,omitempty"` // free-form object, ≤ 64 KiB
}

// Limits on an event.
const (
	// MaxBodySize is the largest request body Decode reads.
	MaxBodySize = 1 << 20
	// MaxMetadataSize is the largest metadata object, as sent.
	MaxMetadataSize = 64 << 10
	// MaxMetadataDepth is how deeply metadata may nest objects and arrays,
	// the metadata object itself being level 1. Printed with indentation,
	// deep nesting grows with the square of its depth (18 KB nested 9000
	// levels deep prints as 162 MB), so it is refused.
	MaxMetadataDepth = 8
	// MaxFutureSkew is how far completed_at may lie in the future.
	MaxFutureSkew = 5 * time.Minute

	maxURLLen = 8 << 10 // presigned URLs are long
	maxRefLen = 1 << 10
)

// ErrBodyTooLarge is returned, wrapped, by Decode for a body larger than
// MaxBodySize (HTTP 413).
var ErrBodyTooLarge = fmt.Errorf("the event body is larger than %d bytes", MaxBodySize)

// Problem is one thing wrong with an event: the JSON path of the field
// ("destination.repo"; empty for the body as a whole) and what to do.
type Problem struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// ValidationError lists every problem of an event. It marshals to the JSON
// body of the receiver's 400 answers: {"problems": [{"field", "message"}]}.
type ValidationError struct {
	Problems []Problem `json:"problems"`
}

func (e *ValidationError) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		if p.Field == "" {
			msgs[i] = p.Message
		} else {
			msgs[i] = p.Field + ": " + p.Message
		}
	}
	return "invalid training-completed event: " + strings.Join(msgs, "; ")
}

type problems []Problem

func (ps *problems) addf(field, format string, args ...any) {
	*ps = append(*ps, Problem{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (ps problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	return &ValidationError{Problems: ps}
}

// Decode reads one event strictly: at most MaxBodySize bytes (more is
// ErrBodyTooLarge), valid UTF-8, exactly one JSON object with no unknown,
// duplicate or differently-cased keys and nothing after it. It then checks
// every field as Validate does, except the allowlists, which Decode does
// not know.
//
// Errors are *ValidationError, except ErrBodyTooLarge and failures of r.
// When the body is an event whose fields break the rules, Decode returns
// the event along with the *ValidationError, so a caller can list every
// problem at once, allowlists included:
//
//	ev, err := events.Decode(r.Body)
//	if ev != nil {
//		err = ev.Validate(allowlists) // a superset of Decode's problems
//	}
func Decode(r io.Reader) (*TrainingCompleted, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxBodySize+1))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe) || len(data) > MaxBodySize:
		return nil, fmt.Errorf("%w: send the weights by URL and keep metadata under %d bytes", ErrBodyTooLarge, MaxMetadataSize)
	case err != nil:
		return nil, fmt.Errorf("reading the event body: %w", err)
	}
	e, ps := decode(data)
	if len(ps) > 0 {
		return nil, ps.err()
	}
	if err := e.validate(nil); err != nil {
		return e, err
	}
	return e, nil
}

func decode(data []byte) (*TrainingCompleted, problems) {
	var ps problems
	if len(bytes.TrimSpace(data)) == 0 {
		ps.addf("", "the body is empty: send one JSON object (docs/event.schema.json)")
		return nil, ps
	}
	if !utf8.Valid(data) {
		ps.addf("", "the body is not valid UTF-8")
		return nil, ps
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var e TrainingCompleted
	if err := dec.Decode(&e); err != nil {
		if strings.HasPrefix(err.Error(), "json: unknown field ") {
			// encoding/json names the first unknown field without its
			// path; checkKeys names them all, with paths.
			if kps := checkKeys(data); len(kps) > 0 {
				return nil, kps
			}
		}
		ps = append(ps, jsonProblem(err))
		return nil, ps
	}
	if _, err := dec.Token(); err != io.EOF {
		ps.addf("", "data after the JSON object: send exactly one object")
		return nil, ps
	}
	if kps := checkKeys(data); len(kps) > 0 {
		return nil, kps
	}
	if string(e.Metadata) == "null" {
		e.Metadata = nil
	}
	return &e, nil
}

// fieldList is what an unknown field's message suggests instead.
const fieldList = "id, base, weights, destination (repo, tag), target, compression, layers, completed_at, callback_url and metadata; put free-form data in metadata"

func jsonProblem(err error) Problem {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tpe *time.ParseError
	switch {
	case errors.As(err, &syn):
		return Problem{Message: fmt.Sprintf("not valid JSON at byte %d: %s", syn.Offset, syn.Error())}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return Problem{Message: "the JSON object is cut short"}
	case errors.As(err, &typ) && typ.Field == "":
		return Problem{Message: fmt.Sprintf("the body must be one JSON object, not a JSON %s", typ.Value)}
	case errors.As(err, &typ) && typ.Field == "completed_at":
		return Problem{Field: "completed_at", Message: "must be an RFC 3339 time string, such as 2025-01-31T12:00:00Z"}
	case errors.As(err, &typ):
		want := "a string"
		switch typ.Field {
		case "destination":
			want = `an object {"repo": …, "tag": …}`
		case "metadata":
			want = "an object"
		}
		return Problem{Field: typ.Field, Message: fmt.Sprintf("must be %s, not a JSON %s", want, typ.Value)}
	case errors.As(err, &tpe), strings.Contains(err.Error(), "Time.UnmarshalJSON"):
		return Problem{Field: "completed_at", Message: "must be an RFC 3339 time string, such as 2025-01-31T12:00:00Z"}
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return Problem{Field: clip(strings.Trim(f, `"`)), Message: "unknown field: an event has " + fieldList}
	}
	return Problem{Message: "not a valid event: " + strings.TrimPrefix(err.Error(), "json: ")}
}

// knownKeys are the exact member names of the event object and of its
// destination: encoding/json matches names case-insensitively and keeps the
// last of duplicates, which would let two parsers read one signed body two
// ways.
var knownKeys = map[string]map[string]bool{
	"":            jsonNames(TrainingCompleted{}),
	"destination": jsonNames(Destination{}),
}

// checkKeys walks a body's tokens: every object (metadata included) must
// have unique member names, and the event and its destination only their
// exact field names. It lists at most 20 problems and stops at a syntax
// error, which Decode reports.
func checkKeys(data []byte) problems {
	type frame struct {
		obj    bool
		path   string
		keys   map[string]bool
		key    bool   // the next string is a member name
		member string // the last member name
	}
	var ps problems
	var stack []*frame
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	for len(ps) < 20 {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && stack[len(stack)-1].obj {
				stack[len(stack)-1].key = true
			}
			continue
		}
		if top != nil && top.obj && top.key {
			k, _ := tok.(string)
			field := k
			if top.path != "" {
				field = top.path + "." + k
			}
			if known, ok := knownKeys[top.path]; ok && len(stack) <= 2 && !known[k] {
				msg := "unknown field: an event has " + fieldList
				if top.path == "destination" {
					msg = "unknown field: destination has repo and tag"
				}
				if known[strings.ToLower(k)] {
					msg = "unknown field (names are case-sensitive): did you mean " + strings.ToLower(k) + "?"
				}
				ps.addf(clip(field), "%s", msg)
			} else if top.keys[k] {
				ps.addf(clip(field), "appears twice: give each member once")
			}
			top.keys[k] = true
			top.member, top.key = k, false
			continue
		}
		if d, ok := tok.(json.Delim); ok { // '{' or '[' as a value
			p := ""
			if top != nil {
				p = top.path
				if top.obj {
					if p != "" {
						p += "."
					}
					p += top.member
				} else {
					p += "[]"
				}
			}
			stack = append(stack, &frame{obj: d == '{', path: p, keys: map[string]bool{}, key: true})
			continue
		}
		if top != nil && top.obj {
			top.key = true // a scalar value ends the member
		}
	}
	return ps
}

func jsonNames(v any) map[string]bool {
	names := map[string]bool{}
	for _, f := range structFields(v) {
		names[f.name] = true
	}
	return names
}

type structField struct {
	name      string
	omitempty bool
}

// structFields lists the JSON members of a struct from its tags; the
// schema test compares them with docs/event.schema.json.
func structFields(v any) []structField {
	var out []structField
	t := reflect.TypeOf(v)
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("json")
		n, opts, _ := strings.Cut(tag, ",")
		if n == "-" || n == "" {
			continue
		}
		out = append(out, structField{name: n, omitempty: strings.Contains(","+opts+",", ",omitempty,")})
	}
	return out
}
