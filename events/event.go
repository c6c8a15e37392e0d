package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/jobs"
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

// Compressions are the values of compression, "auto" when omitted.
var Compressions = []string{"auto", "gzip", "zstd", "none"}

// Layouts are the values of layers; when omitted, the worker's default
// (R8IM_WEIGHTS_LAYERS, auto).
var Layouts = []string{"auto", "per-file", "single"}

// idPattern is jobs' event id pattern: the event id becomes the task id.
var idPattern = jobs.EventIDPattern // an event id becomes part of a task id

// Validate checks every field and the allowlists, and returns a
// *ValidationError listing every problem, or nil. Messages never repeat a
// URL's query (presigned credentials) or user info.
func (e *TrainingCompleted) Validate(a Allowlists) error {
	return e.validate(&a)
}

// validate skips the allowlists when a is nil.
func (e *TrainingCompleted) validate(a *Allowlists) error {
	var ps problems
	if !idPattern.MatchString(e.ID) {
		if e.ID == "" {
			ps.addf("id", "required: the event's unique id, 1-128 letters, digits, '.', '_', ':' or '-'; resending an event with the same id publishes once")
		} else {
			ps.addf("id", "%q must be 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit", clip(e.ID))
		}
	}
	checkBase(&ps, e.Base, a)
	checkWeights(&ps, e.Weights, a)
	checkDestination(&ps, e.Destination, a)
	checkTarget(&ps, e.Target, a)
	if c := e.Compression; c != "" && !contains(Compressions, c) {
		// The wire form is the schema's enum; what each value means is imageops'.
		ps.addf("compression", "%q is not one of %s (the default is auto)", clip(c), strings.Join(Compressions, ", "))
	}
	if l := e.Layers; l != "" && !contains(Layouts, l) {
		ps.addf("layers", "%q is not one of %s (the default is the worker's, auto)", clip(l), strings.Join(Layouts, ", "))
	}
	switch t := e.CompletedAt; {
	case t.IsZero():
		ps.addf("completed_at", "required: when the training run finished, RFC 3339 (2025-01-31T12:00:00Z); the image's created time, so a resent event builds the same image")
	case t.Before(time.Unix(0, 0)):
		ps.addf("completed_at", "%s is before 1970: send when the training run finished", t.Format(time.RFC3339))
	case time.Until(t) > MaxFutureSkew:
		ps.addf("completed_at", "%s is %s in the future (at most %s allowed): send when the run finished, and check the sender's clock", t.Format(time.RFC3339), time.Until(t).Round(time.Second), MaxFutureSkew)
	}
	checkCallback(&ps, e.CallbackURL, a)
	if m := e.Metadata; len(m) > 0 && string(m) != "null" {
		switch {
		case len(m) > MaxMetadataSize:
			ps.addf("metadata", "is %d bytes, more than %d: keep large data elsewhere and put a link in metadata", len(m), MaxMetadataSize)
		case !json.Valid(m) || bytes.TrimLeft(m, " \t\r\n")[0] != '{':
			ps.addf("metadata", "must be a JSON object")
		case JSONDepth(m) > MaxMetadataDepth:
			ps.addf("metadata", "nests objects and arrays %d levels deep, more than %d: flatten it", JSONDepth(m), MaxMetadataDepth)
		}
	}
	return ps.err()
}

// JSONDepth is how deeply the JSON text data nests objects and arrays: 0
// for a scalar, 1 for {} or [1, 2], 2 for {"a": []}. It scans bytes
// (strings and their escapes included) without decoding, so it costs no
// more for hostile input than for any other; for text that is not valid
// JSON it is a bound, not an exact figure.
func JSONDepth(data []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range data {
		switch {
		case inString && escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case inString && c == '"':
			inString = false
		case inString:
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// checkTarget applies imageops.CheckTarget, then the allowed targets
// (DefaultTarget when none is configured); no target is DefaultTarget.
func checkTarget(ps *problems, t string, a *Allowlists) {
	if len(t) > maxRefLen {
		ps.addf("target", "is longer than %d bytes", maxRefLen)
		return
	}
	if err := imageops.CheckTarget(t); err != nil {
		ps.addf("target", "%v", err)
		return
	}
	if a == nil {
		return
	}
	allowed := a.Targets
	if len(allowed) == 0 {
		allowed = []string{DefaultTarget}
	}
	switch {
	case contains(allowed, t):
	case t == "" && !contains(allowed, DefaultTarget):
		ps.addf("target", "none given, and the default %s is not allowed by %s: name one of %s", DefaultTarget, EnvAllowedTargets, strings.Join(allowed, ", "))
	case t != "" && !contains(allowed, t):
		ps.addf("target", "%q is not allowed by %s: use one of %s (weights elsewhere could replace the image's own files), or ask the operator to add it", clip(t), EnvAllowedTargets, strings.Join(allowed, ", "))
	}
}

// checkBase applies imageops.CheckReference (what jobs and the worker
// want), then the base allowlist.
func checkBase(ps *problems, ref string, a *Allowlists) {
	if len(ref) > maxRefLen {
		ps.addf("base", "is longer than %d bytes", maxRefLen)
		return
	}
	r, err := imageops.CheckReference(ref)
	if err != nil {
		ps.addf("base", "%s", clip(err.Error()))
		return
	}
	if a == nil {
		return
	}
	switch {
	case len(a.Bases) == 0:
		ps.addf("base", "no base image is allowed: the receiver's operator must set %s (such as r8.im/acme/*)", EnvAllowedBases)
	case !allowedDest(a.Bases, r.Context().RegistryStr(), r.Context().RepositoryStr()):
		ps.addf("base", "%q is not allowed by %s: use an allowed base repository, or ask the operator to add it", clip(r.Context().String()), EnvAllowedBases)
	}
}

func checkDestination(ps *problems, d Destination, a *Allowlists) {
	repo := d.Repo
	switch err := imageops.CheckRepository(repo); {
	case len(repo) > maxRefLen:
		ps.addf("destination.repo", "is longer than %d bytes", maxRefLen)
	case !strings.Contains(repo, "@") && strings.Contains(repo[strings.LastIndex(repo, "/")+1:], ":"):
		// The event's shape, not a rule of repositories: the tag has its own member.
		ps.addf("destination.repo", "%q has a tag: give host/path here and the tag in destination.tag", clip(repo))
	case err != nil:
		ps.addf("destination.repo", "%s", clip(err.Error()))
	case a != nil:
		host, rest, _ := strings.Cut(repo, "/")
		switch {
		case len(a.Destinations) == 0:
			ps.addf("destination.repo", "no destination is allowed: the receiver's operator must set %s (such as r8.im/acme/*)", EnvAllowedDestinations)
		case !allowedDest(a.Destinations, host, rest):
			ps.addf("destination.repo", "%q is not allowed by %s: publish to an allowed repository, or ask the operator to add it", clip(repo), EnvAllowedDestinations)
		}
	}
	if d.Tag != "" {
		if err := imageops.CheckTag(d.Tag); err != nil {
			ps.addf("destination.tag", "%s", clip(err.Error()))
		}
	}
}

func allowedDest(patterns []string, host, repo string) bool {
	for _, s := range patterns {
		if patternKind(s) != kindDestination {
			continue
		}
		if p, err := parseDestPattern(s); err == nil && p.matches(host, repo) {
			return true
		}
	}
	return false
}

// redact shows a URL without user info, query or fragment: presigned URLs
// carry credentials in their query.
func redact(u *url.URL) string {
	s := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}).String()
	if u.RawQuery != "" || u.ForceQuery {
		s += "?…"
	}
	return clip(s)
}

func checkWeights(ps *problems, raw string, a *Allowlists) {
	const f = "weights"
	if raw == "" {
		ps.addf(f, "required: the weights tarball's URL, s3://bucket/path/weights.tar or https://host/path/weights.tar")
		return
	}
	if len(raw) > maxURLLen {
		ps.addf(f, "the URL is longer than %d bytes", maxURLLen)
		return
	}
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" {
		// Not echoed: an unparsable URL may still hold credentials.
		ps.addf(f, "not a URL (a literal '%%' must be written %%25); use s3://bucket/path/weights.tar or https://host/path/weights.tar")
		return
	}
	switch u.Scheme {
	case "s3", "https", "http":
	case "file":
		ps.addf(f, "file:// URLs are refused from events: the worker does not read its own disk for untrusted input; upload the tarball to an allowed bucket")
		return
	case "":
		ps.addf(f, "no scheme: use s3://bucket/path/weights.tar or https://host/path/weights.tar")
		return
	default:
		ps.addf(f, "scheme %q is not supported: use s3:// or https://", clip(u.Scheme))
		return
	}
	switch {
	case u.User != nil:
		ps.addf(f, "%s carries a user name or password: remove it (S3 credentials come from the worker; use a presigned https URL for other stores)", redact(u))
		return
	case u.Host == "":
		ps.addf(f, "%s has no host (or bucket)", redact(u))
		return
	case u.Fragment != "" || strings.Contains(raw, "#"):
		ps.addf(f, "%s has a #fragment: remove it", redact(u))
		return
	case u.Path == "" || u.Path == "/":
		ps.addf(f, "%s names no object: give the tarball's path, such as %s://%s/run-42/weights.tar", redact(u), u.Scheme, clip(u.Host))
		return
	case strings.HasSuffix(u.Path, "/") && u.Scheme != "s3":
		ps.addf(f, "%s ends with '/', which names a folder: give the tarball's full path (only s3:// takes a prefix, s3://bucket/run-42/)", redact(u))
		return
	case !cleanSegments(strings.TrimSuffix(strings.TrimPrefix(u.Path, "/"), "/")) || strings.ContainsAny(u.Path, "%\\") || hasControl(u.Path):
		ps.addf(f, "%s: the path must name the object directly, without empty, '.' or '..' segments, '\\', an encoded '%%' or control characters", redact(u))
		return
	}
	if u.Scheme == "s3" {
		switch {
		case u.Port() != "" || strings.ContainsAny(u.Host, ":[]"):
			ps.addf(f, "%s: an S3 bucket has no port; the S3 endpoint is the worker's configuration", redact(u))
			return
		case u.RawQuery != "" || u.ForceQuery:
			ps.addf(f, "%s: s3 URLs take no query; write '?' in a key as %%3F", redact(u))
			return
		}
	}
	if a == nil {
		return
	}
	if len(a.Sources) == 0 {
		ps.addf(f, "no weights source is allowed: the receiver's operator must set %s (such as s3://weights/*)", EnvAllowedSources)
		return
	}
	for _, s := range a.Sources {
		if patternKind(s) != kindSource {
			continue
		}
		if p, err := parseSourcePattern(s); err == nil && p.matches(u) {
			return
		}
	}
	if u.Scheme == "http" {
		ps.addf(f, "%s: plain http:// is refused unless an http:// entry of %s allows it; use https://", redact(u), EnvAllowedSources)
		return
	}
	ps.addf(f, "%s is not allowed by %s: upload the weights to an allowed bucket or host, or ask the operator to add it", redact(u), EnvAllowedSources)
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}

func checkCallback(ps *problems, raw string, a *Allowlists) {
	const f = "callback_url"
	if raw == "" {
		return
	}
	if len(raw) > maxURLLen {
		ps.addf(f, "the URL is longer than %d bytes", maxURLLen)
		return
	}
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || u.Host == "" {
		ps.addf(f, "not an absolute URL; use https://hooks.example.com/path")
		return
	}
	host := u.Hostname()
	switch {
	case u.User != nil:
		ps.addf(f, "%s carries a user name or password: remove it; callbacks are authenticated by their signature", redact(u))
		return
	case u.Fragment != "" || strings.Contains(raw, "#"):
		ps.addf(f, "%s has a #fragment: remove it", redact(u))
		return
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(host):
	case u.Scheme == "http":
		ps.addf(f, "%s: callbacks must use https:// (http:// only to a loopback host, for tests)", redact(u))
		return
	default:
		ps.addf(f, "scheme %q is not supported: use https://", clip(u.Scheme))
		return
	}
	if a == nil {
		return
	}
	if len(a.CallbackHosts) == 0 {
		ps.addf(f, "callbacks are not enabled: the receiver's operator must set %s (such as hooks.example.com), or leave callback_url out", EnvAllowedCallbackHosts)
		return
	}
	for _, p := range a.CallbackHosts {
		if patternKind(p) != kindHost {
			continue
		}
		if np, err := parseHostPattern(p); err == nil && hostMatches(np, host) {
			return
		}
	}
	ps.addf(f, "host %q is not allowed by %s: use an allowed host, or ask the operator to add it", clip(host), EnvAllowedCallbackHosts)
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Payload is the affix task for the event: the event id becomes the task
// id, so a resent event is not enqueued twice, and completed_at the image's
// created time (in UTC), so a retry builds the same digests. callback_url
// and metadata are not part of the task; the receiver stores them with the
// record. When Validate has passed, so does the payload's Validate.
func (e *TrainingCompleted) Payload() jobs.AffixPayload {
	dest := e.Destination.Repo
	if e.Destination.Tag != "" {
		dest += ":" + e.Destination.Tag
	}
	return jobs.AffixPayload{
		EventID:     e.ID,
		Base:        e.Base,
		Weights:     e.Weights,
		Dest:        dest,
		Target:      e.Target,
		Compression: e.Compression,
		Layers:      e.Layers,
		Created:     e.CompletedAt.UTC(),
	}
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
