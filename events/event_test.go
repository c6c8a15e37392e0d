package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/jobs/task"
)

const digest = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"

// testAllow allows what validEvent names.
func testAllow() Allowlists {
	return Allowlists{
		Sources:       []string{"s3://weights/*", "https://files.example.com/*"},
		Destinations:  []string{"r8.im/acme/*"},
		CallbackHosts: []string{"hooks.example.com", "127.0.0.1"},
		Bases:         []string{"r8.im/acme/*", "ghcr.io/org/*"},
	}
}

func validEvent(t *testing.T) *TrainingCompleted {
	t.Helper()
	return &TrainingCompleted{
		ID:          "run-42",
		Base:        "r8.im/acme/model-base@" + digest,
		Weights:     "s3://weights/acme/run-42/weights.tar",
		Destination: Destination{Repo: "r8.im/acme/model", Tag: "run-42"},
		Target:      "/src/weights",
		Compression: "zstd",
		CompletedAt: time.Date(2025, 1, 31, 13, 0, 0, 0, time.FixedZone("CET", 3600)),
		CallbackURL: "https://hooks.example.com/r8im",
		Metadata:    json.RawMessage(`{"run":42}`),
	}
}

func validBody(t *testing.T) []byte {
	t.Helper()
	b, err := json.Marshal(validEvent(t))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeValid(t *testing.T) {
	ev, err := Decode(bytes.NewReader(validBody(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := ev.Validate(testAllow()); err != nil {
		t.Fatal(err)
	}
	want := validEvent(t)
	if !ev.CompletedAt.Equal(want.CompletedAt) {
		t.Errorf("completed_at = %v", ev.CompletedAt)
	}
	ev.CompletedAt = want.CompletedAt
	if !reflect.DeepEqual(ev, want) {
		t.Errorf("Decode = %+v, want %+v", ev, want)
	}
}

func TestDecodeMinimal(t *testing.T) {
	body := `{"id":"a","base":"r8.im/acme/base:v1","weights":"s3://weights/w.tar","destination":{"repo":"r8.im/acme/m"},"completed_at":"2025-01-31T12:00:00Z","metadata":null}`
	ev, err := Decode(strings.NewReader("\n " + body + "\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Metadata != nil {
		t.Errorf("metadata null = %q, want nil", ev.Metadata)
	}
	if err := ev.Validate(Allowlists{Sources: []string{"s3://weights/*"}, Destinations: []string{"r8.im/*"}, Bases: []string{"r8.im/*"}}); err != nil {
		t.Fatalf("no callback needs no callback allowlist: %v", err)
	}
	p := ev.Payload()
	if p.Dest != "r8.im/acme/m" || p.Compression != "" || p.Target != "" {
		t.Errorf("Payload = %+v", p)
	}
}

func TestPayload(t *testing.T) {
	ev := validEvent(t)
	p := ev.Payload()
	want := task.AffixPayload{
		EventID:     "run-42",
		Base:        ev.Base,
		Weights:     ev.Weights,
		Dest:        "r8.im/acme/model:run-42",
		Target:      "/src/weights",
		Compression: "zstd",
		Created:     time.Date(2025, 1, 31, 12, 0, 0, 0, time.UTC),
	}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("Payload = %+v\nwant      %+v", p, want)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if p.TaskID() != "affix:run-42" {
		t.Errorf("TaskID = %q", p.TaskID())
	}
	// The same instant in another zone is the same payload, so a resent
	// event builds the same image.
	ev.CompletedAt = ev.CompletedAt.UTC()
	if got := ev.Payload(); !reflect.DeepEqual(got, want) {
		t.Errorf("Payload in UTC = %+v", got)
	}
}

// errorsOf returns the problems of err, failing unless it is a
// *ValidationError.
func errorsOf(t *testing.T, err error) []Problem {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *ValidationError", err, err)
	}
	return ve.Problems
}

func hasProblem(ps []Problem, field, msg string) bool {
	for _, p := range ps {
		if p.Field == field && strings.Contains(p.Message, msg) {
			return true
		}
	}
	return false
}

func TestDecodeRejects(t *testing.T) {
	valid := string(validBody(t))
	replace := func(old, new string) string {
		if !strings.Contains(valid, old) {
			t.Fatalf("the valid body has no %q", old)
		}
		return strings.Replace(valid, old, new, 1)
	}
	for _, tc := range []struct {
		name, body   string
		field, msg   string
		returnsEvent bool // the body decoded, a field broke a rule
	}{
		{name: "empty", body: "", msg: "the body is empty"},
		{name: "blank", body: " \n\t", msg: "the body is empty"},
		{name: "not JSON", body: "id=run-42", msg: "not valid JSON at byte 1"},
		{name: "array", body: "[" + valid + "]", msg: "one JSON object, not a JSON array"},
		{name: "string", body: `"run-42"`, msg: "one JSON object, not a JSON string"},
		{name: "null", body: "null", field: "id", msg: "required", returnsEvent: true},
		{name: "truncated", body: valid[:len(valid)-1], msg: "cut short"},
		{name: "trailing garbage", body: valid + "x", msg: "data after the JSON object"},
		{name: "two objects", body: valid + valid, msg: "data after the JSON object"},
		{name: "invalid UTF-8", body: replace(`"run-42"`, "\"run-\xff\""), msg: "not valid UTF-8"},
		{name: "unknown field", body: replace(`{"id"`, `{"secret_key":"x","id"`), field: "secret_key", msg: "unknown field"},
		{name: "unknown nested field", body: replace(`"repo"`, `"registry":"x","repo"`), field: "destination.registry", msg: "destination has repo and tag"},
		{name: "field with other case", body: replace(`"id"`, `"ID"`), field: "ID", msg: "did you mean id?"},
		{name: "duplicate field", body: replace(`{"id":"run-42"`, `{"id":"run-42","id":"run-43"`), field: "id", msg: "appears twice"},
		{name: "duplicate by case", body: replace(`{"id":"run-42"`, `{"Id":"run-43","id":"run-42"`), field: "Id", msg: "case-sensitive"},
		{name: "duplicate in destination", body: replace(`"repo":"r8.im/acme/model"`, `"repo":"r8.im/acme/model","repo":"r8.im/other/model"`), field: "destination.repo", msg: "appears twice"},
		{name: "duplicate in metadata", body: replace(`{"run":42}`, `{"run":42,"run":43}`), field: "metadata.run", msg: "appears twice"},
		{name: "number id", body: replace(`"run-42"`, `42`), field: "id", msg: "must be a string, not a JSON number"},
		{name: "destination string", body: replace(`{"repo":"r8.im/acme/model","tag":"run-42"}`, `"r8.im/acme/model:run-42"`), field: "destination", msg: "must be an object"},
		{name: "time without zone", body: replace(`2025-01-31T13:00:00+01:00`, `2025-01-31 13:00:00`), field: "completed_at", msg: "RFC 3339"},
		{name: "time as number", body: replace(`"2025-01-31T13:00:00+01:00"`, `1738324800`), field: "completed_at", msg: "RFC 3339"},
		{name: "metadata array", body: replace(`{"run":42}`, `[1,2]`), field: "metadata", msg: "must be a JSON object", returnsEvent: true},
		{name: "metadata string", body: replace(`{"run":42}`, `"run 42"`), field: "metadata", msg: "must be a JSON object", returnsEvent: true},
		{name: "bad field values", body: replace(`"run-42"`, `"run 42"`), field: "id", msg: "must be 1-128", returnsEvent: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := Decode(strings.NewReader(tc.body))
			if err == nil {
				t.Fatalf("Decode accepted %q", tc.body)
			}
			if (ev != nil) != tc.returnsEvent {
				t.Errorf("Decode returned event %v, want %v", ev != nil, tc.returnsEvent)
			}
			if ps := errorsOf(t, err); !hasProblem(ps, tc.field, tc.msg) {
				t.Fatalf("problems %+v, want field %q with %q", ps, tc.field, tc.msg)
			}
		})
	}
}

func TestDecodeBodyLimit(t *testing.T) {
	ev := validEvent(t)
	ev.Metadata = nil
	b, _ := json.Marshal(ev)
	exact := append(append([]byte{}, b...), bytes.Repeat([]byte(" "), MaxBodySize-len(b))...)
	if _, err := Decode(bytes.NewReader(exact)); err != nil {
		t.Fatalf("a body of exactly MaxBodySize: %v", err)
	}
	over := append(exact, ' ')
	if _, err := Decode(bytes.NewReader(over)); !errors.Is(err, ErrBodyTooLarge) {
		t.Fatalf("a body of MaxBodySize+1: %v, want ErrBodyTooLarge", err)
	}
	// A body behind http.MaxBytesReader (as a receiver would use) too.
	rec := httptest.NewRecorder()
	r := http.MaxBytesReader(rec, io.NopCloser(bytes.NewReader(over)), 1000)
	if _, err := Decode(r); !errors.Is(err, ErrBodyTooLarge) {
		t.Fatalf("behind MaxBytesReader: %v, want ErrBodyTooLarge", err)
	}
	// A failing reader is neither.
	_, err := Decode(iotest.ErrReader(io.ErrClosedPipe))
	var ve *ValidationError
	if !errors.Is(err, io.ErrClosedPipe) || errors.As(err, &ve) || errors.Is(err, ErrBodyTooLarge) {
		t.Fatalf("read failure: %v", err)
	}
}

func TestValidate(t *testing.T) {
	const presigned = "X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=deadbeefcafe"
	for _, tc := range []struct {
		name       string
		mut        func(e *TrainingCompleted)
		field, msg string // empty field: valid
	}{
		{name: "valid", mut: func(e *TrainingCompleted) {}},
		{name: "presigned https", mut: func(e *TrainingCompleted) { e.Weights = "https://files.example.com/w.tar?" + presigned }},
		{name: "tag omitted", mut: func(e *TrainingCompleted) { e.Destination.Tag = "" }},
		{name: "base by tag", mut: func(e *TrainingCompleted) { e.Base = "r8.im/acme/base:v3" }},
		{name: "base on another registry", mut: func(e *TrainingCompleted) { e.Base = "ghcr.io/org/base:v3" }},
		{name: "loopback http callback", mut: func(e *TrainingCompleted) { e.CallbackURL = "http://127.0.0.1:8099/cb" }},
		{name: "no callback", mut: func(e *TrainingCompleted) { e.CallbackURL = "" }},
		{name: "no metadata", mut: func(e *TrainingCompleted) { e.Metadata = nil }},
		{name: "compression none", mut: func(e *TrainingCompleted) { e.Compression = "none" }},
		{name: "completed just now", mut: func(e *TrainingCompleted) { e.CompletedAt = time.Now().Add(4 * time.Minute) }},

		{name: "id empty", mut: func(e *TrainingCompleted) { e.ID = "" }, field: "id", msg: "required"},
		{name: "id with space", mut: func(e *TrainingCompleted) { e.ID = "run 42" }, field: "id", msg: "must be 1-128"},
		{name: "id with slash", mut: func(e *TrainingCompleted) { e.ID = "a/b" }, field: "id", msg: "must be 1-128"},
		{name: "id too long", mut: func(e *TrainingCompleted) { e.ID = strings.Repeat("a", 129) }, field: "id", msg: "must be 1-128"},
		{name: "id starts with dash", mut: func(e *TrainingCompleted) { e.ID = "-a" }, field: "id", msg: "starting with a letter or digit"},

		{name: "base empty", mut: func(e *TrainingCompleted) { e.Base = "" }, field: "base", msg: "required"},
		{name: "base without host", mut: func(e *TrainingCompleted) { e.Base = "acme/base:v1" }, field: "base", msg: "registry host"},
		{name: "base without tag", mut: func(e *TrainingCompleted) { e.Base = "r8.im/acme/base" }, field: "base", msg: "tag or digest"},
		{name: "base traversal", mut: func(e *TrainingCompleted) { e.Base = "r8.im/acme/../other:v1" }, field: "base", msg: "'..'"},

		{name: "weights empty", mut: func(e *TrainingCompleted) { e.Weights = "" }, field: "weights", msg: "required"},
		{name: "weights file", mut: func(e *TrainingCompleted) { e.Weights = "file:///etc/shadow" }, field: "weights", msg: "file:// URLs are refused"},
		{name: "weights relative", mut: func(e *TrainingCompleted) { e.Weights = "weights.tar" }, field: "weights", msg: "no scheme"},
		{name: "weights gs", mut: func(e *TrainingCompleted) { e.Weights = "gs://b/w.tar" }, field: "weights", msg: `scheme "gs"`},
		{name: "weights s3 no key", mut: func(e *TrainingCompleted) { e.Weights = "s3://weights" }, field: "weights", msg: "names no object"},
		{name: "weights https folder", mut: func(e *TrainingCompleted) { e.Weights = "https://files.example.com/run/" }, field: "weights", msg: "names a folder"},
		{name: "weights s3 prefix", mut: func(e *TrainingCompleted) { e.Weights = "s3://weights/run/" }},
		{name: "weights userinfo", mut: func(e *TrainingCompleted) { e.Weights = "https://AKIA:topsecret@files.example.com/w.tar" }, field: "weights", msg: "user name or password"},
		{name: "weights not allowed", mut: func(e *TrainingCompleted) { e.Weights = "https://evil.org/w.tar?" + presigned }, field: "weights", msg: "not allowed by " + EnvAllowedSources},
		{name: "weights too long", mut: func(e *TrainingCompleted) { e.Weights = "s3://weights/" + strings.Repeat("a", maxURLLen) }, field: "weights", msg: "longer than"},

		{name: "repo empty", mut: func(e *TrainingCompleted) { e.Destination.Repo = "" }, field: "destination.repo", msg: "required"},
		{name: "repo with tag", mut: func(e *TrainingCompleted) { e.Destination.Repo = "r8.im/acme/model:v1" }, field: "destination.repo", msg: "destination.tag"},
		{name: "repo with digest", mut: func(e *TrainingCompleted) { e.Destination.Repo = "r8.im/acme/model@" + digest }, field: "destination.repo", msg: "names a digest"},
		{name: "repo without host", mut: func(e *TrainingCompleted) { e.Destination.Repo = "acme/model" }, field: "destination.repo", msg: "registry host"},
		{name: "repo uppercase", mut: func(e *TrainingCompleted) { e.Destination.Repo = "r8.im/Acme/model" }, field: "destination.repo", msg: "lowercase"},
		{name: "repo traversal", mut: func(e *TrainingCompleted) { e.Destination.Repo = "r8.im/acme/../other/model" }, field: "destination.repo", msg: "'..'"},
		{name: "repo not allowed", mut: func(e *TrainingCompleted) { e.Destination.Repo = "r8.im/other/model" }, field: "destination.repo", msg: "not allowed by " + EnvAllowedDestinations},
		{name: "tag with dot first", mut: func(e *TrainingCompleted) { e.Destination.Tag = ".x" }, field: "destination.tag", msg: "not a tag"},
		{name: "tag with dash first", mut: func(e *TrainingCompleted) { e.Destination.Tag = "-x" }, field: "destination.tag", msg: "not a tag"},
		{name: "tag with slash", mut: func(e *TrainingCompleted) { e.Destination.Tag = "a/b" }, field: "destination.tag", msg: "not a tag"},
		{name: "tag too long", mut: func(e *TrainingCompleted) { e.Destination.Tag = strings.Repeat("a", 129) }, field: "destination.tag", msg: "not a tag"},

		{name: "target relative", mut: func(e *TrainingCompleted) { e.Target = "src/weights" }, field: "target", msg: "absolute"},
		{name: "target root", mut: func(e *TrainingCompleted) { e.Target = "/" }, field: "target", msg: "below /"},
		{name: "target traversal", mut: func(e *TrainingCompleted) { e.Target = "/src/../etc" }, field: "target", msg: "clean"},
		{name: "target trailing slash", mut: func(e *TrainingCompleted) { e.Target = "/src/weights/" }, field: "target", msg: "clean"},

		{name: "compression unknown", mut: func(e *TrainingCompleted) { e.Compression = "brotli" }, field: "compression", msg: "gzip, zstd, none"},
		{name: "compression uppercase", mut: func(e *TrainingCompleted) { e.Compression = "GZIP" }, field: "compression", msg: "gzip, zstd, none"},

		{name: "completed_at missing", mut: func(e *TrainingCompleted) { e.CompletedAt = time.Time{} }, field: "completed_at", msg: "required"},
		{name: "completed_at future", mut: func(e *TrainingCompleted) { e.CompletedAt = time.Now().Add(10 * time.Minute) }, field: "completed_at", msg: "in the future"},
		{name: "completed_at before 1970", mut: func(e *TrainingCompleted) { e.CompletedAt = time.Date(1969, 1, 1, 0, 0, 0, 0, time.UTC) }, field: "completed_at", msg: "before 1970"},

		{name: "callback http", mut: func(e *TrainingCompleted) { e.CallbackURL = "http://hooks.example.com/cb" }, field: "callback_url", msg: "https://"},
		{name: "callback not allowed", mut: func(e *TrainingCompleted) { e.CallbackURL = "https://evil.org/cb?" + presigned }, field: "callback_url", msg: "not allowed by " + EnvAllowedCallbackHosts},
		{name: "callback userinfo", mut: func(e *TrainingCompleted) { e.CallbackURL = "https://u:topsecret@hooks.example.com/cb" }, field: "callback_url", msg: "user name or password"},
		{name: "callback relative", mut: func(e *TrainingCompleted) { e.CallbackURL = "/cb" }, field: "callback_url", msg: "absolute URL"},

		{name: "metadata too large", mut: func(e *TrainingCompleted) {
			e.Metadata = json.RawMessage(`{"x":"` + strings.Repeat("a", MaxMetadataSize) + `"}`)
		}, field: "metadata", msg: "more than 65536"},
		{name: "metadata array", mut: func(e *TrainingCompleted) { e.Metadata = json.RawMessage(`[]`) }, field: "metadata", msg: "JSON object"},
		{name: "metadata invalid", mut: func(e *TrainingCompleted) { e.Metadata = json.RawMessage(`{`) }, field: "metadata", msg: "JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := validEvent(t)
			tc.mut(e)
			err := e.Validate(testAllow())
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				if err := e.Payload().Validate(); err != nil {
					t.Fatalf("the event validated, its payload did not: %v", err)
				}
				return
			}
			ps := errorsOf(t, err)
			if !hasProblem(ps, tc.field, tc.msg) {
				t.Fatalf("problems %+v, want field %q with %q", ps, tc.field, tc.msg)
			}
			for _, secret := range []string{"topsecret", "deadbeefcafe", "AKIAEXAMPLE"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("the error shows %q: %v", secret, err)
				}
			}
		})
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	e := &TrainingCompleted{
		ID:          "bad id",
		Base:        "base",
		Weights:     "file:///etc/passwd",
		Destination: Destination{Repo: "r8.im/acme/model:v1", Tag: "-x"},
		Target:      "relative",
		Compression: "lz4",
		CallbackURL: "http://hooks.example.com/",
		Metadata:    json.RawMessage(`[]`),
	}
	ps := errorsOf(t, e.Validate(testAllow()))
	var fields []string
	for _, p := range ps {
		fields = append(fields, p.Field)
	}
	want := []string{"id", "base", "weights", "destination.repo", "destination.tag", "target", "compression", "completed_at", "callback_url", "metadata"}
	if !slices.Equal(fields, want) {
		t.Fatalf("fields %q, want %q\n%v", fields, want, e.Validate(testAllow()))
	}
	for _, p := range ps {
		if p.Message == "" {
			t.Errorf("%s: empty message", p.Field)
		}
	}
	// The receiver answers 400 with this JSON.
	b, _ := json.Marshal(&ValidationError{Problems: ps[:1]})
	if got := string(b); !strings.HasPrefix(got, `{"problems":[{"field":"id","message":`) {
		t.Errorf("JSON = %s", got)
	}
}

func TestDecodeThenValidateListsEverything(t *testing.T) {
	body := strings.Replace(string(validBody(t)), `"run-42"`, `"bad id"`, 1)
	body = strings.Replace(body, "s3://weights/", "s3://other/", 1)
	ev, err := Decode(strings.NewReader(body))
	if ev == nil || err == nil {
		t.Fatalf("Decode = %v, %v; want the event and its problems", ev, err)
	}
	if hasProblem(errorsOf(t, err), "weights", "") {
		t.Errorf("Decode checked the allowlists it does not have: %v", err)
	}
	ps := errorsOf(t, ev.Validate(testAllow()))
	if !hasProblem(ps, "id", "must be") || !hasProblem(ps, "weights", "not allowed") {
		t.Fatalf("Validate = %+v, want the id and the weights", ps)
	}
}

func TestEmptyAllowlistsNameTheirVariables(t *testing.T) {
	err := validEvent(t).Validate(Allowlists{})
	ps := errorsOf(t, err)
	for field, env := range map[string]string{"weights": EnvAllowedSources, "destination.repo": EnvAllowedDestinations, "callback_url": EnvAllowedCallbackHosts, "base": EnvAllowedBases} {
		if !hasProblem(ps, field, "must set "+env) {
			t.Errorf("no %s problem naming %s: %v", field, env, err)
		}
	}
}

// TestSchemaMatchesStruct keeps docs/event.schema.json in step with the
// struct's JSON tags and the validation rules.
func TestSchemaMatchesStruct(t *testing.T) {
	raw, err := os.ReadFile("../docs/event.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var root schema
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&root); err != nil {
		t.Fatalf("docs/event.schema.json: %v", err)
	}
	if root.Schema != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$schema = %q, want draft 2020-12", root.Schema)
	}
	checkObject(t, "event", &root, TrainingCompleted{})
	checkObject(t, "destination", root.Properties["destination"], Destination{})

	if got := root.Properties["id"].Pattern; got != idPattern.String() {
		t.Errorf("id pattern %q, the code uses %q", got, idPattern)
	}
	if got := root.Properties["destination"].Properties["tag"].Pattern; got != imageops.TagPattern.String() {
		t.Errorf("tag pattern %q, the code uses %q", got, imageops.TagPattern)
	}
	if got := root.Properties["compression"].Enum; !slices.Equal(got, Compressions) {
		t.Errorf("compression enum %q, the code accepts %q", got, Compressions)
	}
	// The examples decode and validate.
	if len(root.Examples) == 0 {
		t.Error("the schema has no example event")
	}
	for i, ex := range root.Examples {
		ev, err := Decode(bytes.NewReader(ex))
		if err != nil {
			t.Errorf("example %d: %v", i, err)
			continue
		}
		if err := ev.Validate(Allowlists{Sources: []string{"s3://weights/*"}, Destinations: []string{"r8.im/acme/*"}, CallbackHosts: []string{"hooks.example.com"}, Bases: []string{"r8.im/acme/*"}}); err != nil {
			t.Errorf("example %d: %v", i, err)
		}
	}
}

type schema struct {
	Schema               string             `json:"$schema"`
	Type                 any                `json:"type"`
	Description          string             `json:"description"`
	AdditionalProperties *bool              `json:"additionalProperties"`
	Required             []string           `json:"required"`
	Properties           map[string]*schema `json:"properties"`
	Pattern              string             `json:"pattern"`
	Enum                 []string           `json:"enum"`
	Examples             []json.RawMessage  `json:"examples"`
}

func checkObject(t *testing.T, what string, s *schema, v any) {
	t.Helper()
	if s == nil {
		t.Fatalf("the schema has no %s", what)
	}
	if s.Type != "object" {
		t.Errorf("%s: type %v, want object", what, s.Type)
	}
	if s.AdditionalProperties == nil || *s.AdditionalProperties {
		t.Errorf("%s: additionalProperties must be false", what)
	}
	if s.Description == "" {
		t.Errorf("%s: no description", what)
	}
	var props, required []string
	for _, f := range structFields(v) {
		props = append(props, f.name)
		if !f.omitempty {
			required = append(required, f.name)
		}
	}
	var got []string
	for name, p := range s.Properties {
		got = append(got, name)
		if p.Description == "" {
			t.Errorf("%s.%s: no description", what, name)
		}
	}
	sort.Strings(props)
	sort.Strings(got)
	if !slices.Equal(got, props) {
		t.Errorf("%s: schema properties %q, struct json tags %q", what, got, props)
	}
	gotReq := slices.Clone(s.Required)
	sort.Strings(gotReq)
	sort.Strings(required)
	if !slices.Equal(gotReq, required) {
		t.Errorf("%s: schema required %q, struct fields without omitempty %q", what, gotReq, required)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"id":"a","base":"r8.im/acme/base:v1","weights":"s3://weights/w.tar","destination":{"repo":"r8.im/acme/m"},"completed_at":"2025-01-31T12:00:00Z"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := Decode(bytes.NewReader(body))
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) && !errors.Is(err, ErrBodyTooLarge) {
				t.Fatalf("Decode error %v is neither a *ValidationError nor ErrBodyTooLarge", err)
			}
			if ve != nil && len(ve.Problems) == 0 {
				t.Fatal("a ValidationError without problems")
			}
			if ev != nil {
				_ = ev.Validate(testAllow())
			}
			return
		}
		if err := ev.Payload().Validate(); err != nil {
			t.Fatalf("Decode accepted %q, its payload is invalid: %v", body, err)
		}
		// Validating again, and with allowlists, never panics either.
		if err := ev.validate(nil); err != nil {
			t.Fatalf("validate after Decode: %v", err)
		}
		_ = ev.Validate(testAllow())
	})
}

// FuzzValidate fuzzes the fields themselves, which FuzzDecode rarely gets
// right all at once: whenever Validate passes, the task payload validates.
func FuzzValidate(f *testing.F) {
	f.Add("run-42", "r8.im/acme/base@"+digest, "s3://weights/acme/w.tar", "r8.im/acme/model", "run-42", "/src/weights", "zstd", "https://hooks.example.com/cb", int64(1738324800))
	f.Fuzz(func(t *testing.T, id, base, weights, repo, tag, target, compression, callback string, completed int64) {
		e := &TrainingCompleted{
			ID: id, Base: base, Weights: weights,
			Destination: Destination{Repo: repo, Tag: tag},
			Target:      target, Compression: compression,
			CompletedAt: time.Unix(completed, 0),
			CallbackURL: callback,
		}
		permissive := Allowlists{
			Sources:       []string{"s3://weights/*", "https://files.example.com/*", "http://127.0.0.1:8081/*"},
			Destinations:  []string{"r8.im/*", "localhost:5000/*"},
			CallbackHosts: []string{"hooks.example.com", "*.example.org", "127.0.0.1"},
			Bases:         []string{"r8.im/*", "localhost:5000/*"},
			Targets:       []string{"/src/weights", "/models"},
		}
		for _, a := range []*Allowlists{nil, &permissive} {
			err := e.validate(a)
			if err == nil {
				if perr := e.Payload().Validate(); perr != nil {
					t.Fatalf("the event validated, its payload did not: %v\n%+v", perr, e)
				}
				continue
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("Validate error %v", err)
			}
			if u, perr := url.Parse(weights); perr == nil && len(u.RawQuery) > 8 && strings.Contains(err.Error(), u.RawQuery) {
				t.Fatalf("the error shows the weights URL's query: %v", err)
			}
		}
	})
}
