// Package retry says, for every r8im package, which failures a retry
// cannot fix and how long a server asked to wait before the next try: one
// rule, so that an upload, a task and a callback classify an error alike.
//
// An error is permanent when it, or an error in its chain, has a
// Permanent() bool method that returns true. Packages mark their own
// sentinels (New) and error types (a Permanent method) that way, and mark
// one failure with Permanent, without importing each other: storage's
// weights-source errors, imageops' input and registry errors and jobs'
// invalid payloads all answer IsPermanent.
package retry

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// permanentError is an error a retry cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string   { return e.err.Error() }
func (e *permanentError) Unwrap() error   { return e.err }
func (e *permanentError) Permanent() bool { return true }

// New returns a permanent sentinel error with text, for errors.Is.
func New(text string) error { return &permanentError{errors.New(text)} }

// Permanent marks err as one a retry cannot fix; nil stays nil. Its text
// and chain are err's.
func Permanent(err error) error {
	if err == nil || IsPermanent(err) {
		return err
	}
	return &permanentError{err}
}

// IsPermanent reports whether err, or an error in its chain, says it is
// permanent.
func IsPermanent(err error) bool {
	var marked interface{ Permanent() bool }
	return errors.As(err, &marked) && marked.Permanent()
}

// AfterError is a transient failure during which the server (a registry, a
// callback receiver) asked for a pause (Retry-After on a 429 or 5xx): the
// next try should wait After.
type AfterError struct {
	After time.Duration
	Err   error
}

func (e *AfterError) Error() string {
	return e.Err.Error() + " (asked to retry after " + e.After.String() + ")"
}

func (e *AfterError) Unwrap() error { return e.Err }

// After returns the pause the server asked for, if err carries one.
func After(err error) (time.Duration, bool) {
	var a *AfterError
	if errors.As(err, &a) && a.After > 0 {
		return a.After, true
	}
	return 0, false
}

// MaxAfter caps the pause ParseAfter accepts: a server asking for more is
// not taken at its word.
const MaxAfter = time.Hour

// ParseAfter reads a Retry-After header value: seconds, or an HTTP date
// (relative to now). A missing or unreadable value is 0; absurd ones are
// capped at MaxAfter.
func ParseAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.Atoi(v); err == nil {
		d = time.Duration(min(secs, int(MaxAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), MaxAfter)
}
