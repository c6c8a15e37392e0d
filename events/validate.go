package events

import (
	"bytes"
	"encoding/json"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/jobs/task"
)

// Compressions are the values of compression, "auto" when omitted.
var Compressions = []string{"auto", "gzip", "zstd", "none"}

// Layouts are the values of layers; when omitted, the worker's default
// (R8IM_WEIGHTS_LAYERS, auto).
var Layouts = []string{"auto", "per-file", "single"}

// idPattern is jobs' event id pattern: the event id becomes the task id.
var idPattern = task.EventIDPattern // an event id becomes part of a task id

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
