package netguard

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Redirect errors, for errors.Is.
var (
	// ErrTooManyRedirects: a request was redirected more than MaxRedirects
	// times (a loop, usually).
	ErrTooManyRedirects = errors.New("too many redirects")
	// ErrRedirectRefused: a redirect went from https to http, or (with
	// SameHost) to another scheme or host.
	ErrRedirectRefused = errors.New("redirect refused")
)

// RedirectError says which redirect was refused and why.
type RedirectError struct {
	From, To string // URLs without user info, query or fragment
	Hops     int
	Err      error // ErrTooManyRedirects or ErrRedirectRefused
	Reason   string
}

func (e *RedirectError) Error() string {
	if errors.Is(e.Err, ErrTooManyRedirects) {
		return fmt.Sprintf("%v: %s was redirected %d times (last to %s): %s", e.Err, e.From, e.Hops, e.To, e.Reason)
	}
	return fmt.Sprintf("%v: %s redirected to %s: %s", e.Err, e.From, e.To, e.Reason)
}

func (e *RedirectError) Unwrap() error { return e.Err }

// CheckRedirect is o's redirect policy as an http.Client CheckRedirect.
func (o Options) CheckRedirect(req *http.Request, via []*http.Request) error {
	if o.NoRedirects {
		return http.ErrUseLastResponse
	}
	return o.checkHop(via[0].URL, via[len(via)-1].URL, req.URL, len(via))
}

// checkRedirected applies the policy to a request a client is following a
// redirect with: the chain of earlier requests is found through
// req.Response.Request, which is how a RoundTripper under a client it did
// not build (go-containerregistry's) sees redirects.
func (o Options) checkRedirected(req *http.Request) error {
	if req.Response == nil || req.Response.Request == nil {
		return nil
	}
	prev := req.Response.Request
	first, hops := prev, 0
	for r := req; r.Response != nil && r.Response.Request != nil; r = r.Response.Request {
		first = r.Response.Request
		hops++
		if hops > 1000 { // the chain is ours to walk, not the server's: stop anyway
			break
		}
	}
	if o.NoRedirects {
		return &RedirectError{From: safeURL(first.URL), To: safeURL(req.URL), Hops: hops, Err: ErrRedirectRefused, Reason: "this client follows no redirects"}
	}
	return o.checkHop(first.URL, prev.URL, req.URL, hops)
}

// checkHop decides the hops-th redirect of a request that started at first,
// from prev to next.
func (o Options) checkHop(first, prev, next *url.URL, hops int) error {
	refuse := func(err error, reason string) error {
		return &RedirectError{From: safeURL(first), To: safeURL(next), Hops: hops, Err: err, Reason: reason}
	}
	if max := o.maxRedirects(); hops > max {
		return refuse(ErrTooManyRedirects, fmt.Sprintf("stopped after %d redirects", max))
	}
	if strings.EqualFold(prev.Scheme, "https") && !strings.EqualFold(next.Scheme, "https") {
		return refuse(ErrRedirectRefused, "a redirect from https to plain http is never followed")
	}
	if o.SameHost && (!strings.EqualFold(first.Scheme, next.Scheme) || !strings.EqualFold(first.Host, next.Host)) {
		return refuse(ErrRedirectRefused, "only redirects on the same scheme and host are followed; give the final URL instead")
	}
	return nil
}

// safeURL is u without user info, query or fragment: a presigned URL's
// signature never reaches an error.
func safeURL(u *url.URL) string {
	c := *u
	c.User, c.RawQuery, c.ForceQuery, c.Fragment, c.RawFragment = nil, "", false, "", ""
	return c.String()
}
