package task

import (
	"fmt"
	"net/url"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/retry"
)

// Payloads hold references and ids only, never credentials: the worker's
// own environment authenticates (docs/design.md §7).

// AffixPayload asks for a weights tarball to be affixed onto a base image.
type AffixPayload struct {
	EventID     string    `json:"event_id"`
	Base        string    `json:"base"`    // image reference, by tag or digest
	Weights     string    `json:"weights"` // s3://bucket/key, https://… (presigned), file:///path
	Dest        string    `json:"dest"`    // host/repo[:tag]
	Target      string    `json:"target,omitempty"`
	Compression string    `json:"compression,omitempty"`
	Level       int       `json:"level,omitempty"`
	Platform    string    `json:"platform,omitempty"` // os/arch, or all
	Created     time.Time `json:"created"`            // the training run's completion: retries are reproducible
	// Layers is the weights layout: auto, per-file or single; "" is the
	// worker's R8IM_WEIGHTS_LAYERS. It is part of the task's identity: the
	// same weights in another layout are other layers.
	Layers string `json:"layers,omitempty"`
}

// RemixPayload asks for the code of Base with the weights of Weights.
type RemixPayload struct {
	EventID  string    `json:"event_id,omitempty"`
	Base     string    `json:"base"`
	Weights  string    `json:"weights"`
	Dest     string    `json:"dest"`
	Platform string    `json:"platform,omitempty"`
	Created  time.Time `json:"created,omitempty"` // zero: the weights image's own time
}

// ZstdPayload asks for an image's layers to be recompressed with zstd.
type ZstdPayload struct {
	Source   string `json:"source"` // by digest: host/repo@sha256:…
	Dest     string `json:"dest"`
	Level    int    `json:"level,omitempty"`
	MinSize  int64  `json:"min_size,omitempty"`
	Platform string `json:"platform,omitempty"`
	BatchID  string `json:"batch_id,omitempty"`
}

// ErrInvalidPayload marks a payload that can never be processed (a
// permanent failure: retry.IsPermanent holds).
var ErrInvalidPayload = retry.New("invalid task payload")

// problems collects every bad field of a payload.
type problems []string

func (ps *problems) addf(field, format string, args ...any) {
	*ps = append(*ps, field+": "+fmt.Sprintf(format, args...))
}

func (ps problems) err(typ string) error {
	if len(ps) == 0 {
		return nil
	}
	return fmt.Errorf("%w (%s): %s", ErrInvalidPayload, typ, strings.Join(ps, "; "))
}

// EventIDPattern is what an event (and batch) id may look like: it becomes
// part of a task id and a Redis key.
var EventIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// Validate names every bad field.
func (p AffixPayload) Validate() error {
	var ps problems
	if !EventIDPattern.MatchString(p.EventID) {
		ps.addf("event_id", "%q must be 1-128 characters of letters, digits, '.', '_', ':' or '-'", p.EventID)
	}
	checkRef(&ps, "base", p.Base)
	checkWeightsURL(&ps, "weights", p.Weights)
	checkDest(&ps, "dest", p.Dest)
	if err := imageops.CheckTarget(p.Target); err != nil {
		ps.addf("target", "%v", err)
	}
	c := imageops.Auto
	if p.Compression != "" {
		var err error
		if c, err = imageops.ParseCompression(p.Compression); err != nil {
			ps.addf("compression", "%v", err)
		}
	}
	if _, err := imageops.ParseLayout(p.Layers); err != nil {
		ps.addf("layers", "%v", err)
	}
	if c != "" {
		if err := imageops.CheckLevel(c, p.Level); err != nil {
			ps.addf("level", "%v", err)
		}
	}
	checkPlatform(&ps, p.Platform)
	if p.Created.IsZero() {
		ps.addf("created", "required: the training run's completion time (RFC 3339), which makes retries reproducible")
	}
	return ps.err(TypeAffix)
}

// Validate names every bad field.
func (p RemixPayload) Validate() error {
	var ps problems
	if p.EventID != "" && !EventIDPattern.MatchString(p.EventID) {
		ps.addf("event_id", "%q must be 1-128 characters of letters, digits, '.', '_', ':' or '-'", p.EventID)
	}
	checkRef(&ps, "base", p.Base)
	checkRef(&ps, "weights", p.Weights)
	checkDest(&ps, "dest", p.Dest)
	checkPlatform(&ps, p.Platform)
	return ps.err(TypeRemix)
}

// Validate names every bad field.
func (p ZstdPayload) Validate() error {
	var ps problems
	if checkRef(&ps, "source", p.Source) {
		if _, err := name.NewDigest(p.Source); err != nil {
			ps.addf("source", "%q must name a digest (host/repo@sha256:…), so the task id is stable; resolve the tag first", p.Source)
		}
	}
	checkDest(&ps, "dest", p.Dest)
	if err := imageops.CheckLevel(imageops.Zstd, p.Level); err != nil {
		ps.addf("level", "%v", err)
	}
	if p.MinSize < 0 {
		ps.addf("min_size", "%d must not be negative", p.MinSize)
	}
	checkPlatform(&ps, p.Platform)
	if p.BatchID != "" && !EventIDPattern.MatchString(p.BatchID) {
		ps.addf("batch_id", "%q must be 1-128 characters of letters, digits, '.', '_', ':' or '-'", p.BatchID)
	}
	return ps.err(TypeZstd)
}

// checkRef wants a full reference with a registry host
// (imageops.CheckReference): payloads are processed far from where they
// were written, so no default registry applies.
func checkRef(ps *problems, field, ref string) bool {
	if _, err := imageops.CheckReference(ref); err != nil {
		ps.addf(field, "%v", err)
		return false
	}
	return true
}

func checkDest(ps *problems, field, dest string) {
	if err := imageops.CheckDestination(dest); err != nil {
		ps.addf(field, "%v", err)
	}
}

func checkWeightsURL(ps *problems, field, raw string) {
	if raw == "" {
		ps.addf(field, "required: s3://bucket/key, https://… or file:///path")
		return
	}
	u, err := url.Parse(raw)
	if err != nil {
		ps.addf(field, "not a URL; use s3://bucket/key, https://… or file:///path")
		return
	}
	switch u.Scheme {
	case "s3":
		if u.Host == "" || strings.Trim(u.Path, "/") == "" {
			ps.addf(field, "s3 URLs need a bucket and a key: s3://bucket/path/weights.tar")
		}
	case "https", "http":
		if u.Host == "" {
			ps.addf(field, "the URL has no host")
		}
	case "file":
		if !path.IsAbs(u.Path) {
			ps.addf(field, "file URLs need an absolute path: file:///data/weights.tar")
		}
	default:
		ps.addf(field, "scheme %q is not supported; use s3://, https:// or file://", u.Scheme)
	}
}

func checkPlatform(ps *problems, p string) {
	if p == "" {
		return
	}
	if _, err := imageops.ParsePlatform(p); err != nil {
		ps.addf("platform", "%v", err)
	}
}
