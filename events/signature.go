package events

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader is the HTTP header that carries a request's signature:
//
//	R8im-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<signed text>")>
//
// The signed text of POST /v1/events/training-completed is the raw body
// ("<t>.<body>"); that of every other request, which has no body (GET
// /v1/events/{id}), is its method and path: "<t>.GET /v1/events/run-42".
// An event body is a JSON object, so it never reads as "GET /…": a
// signature made for one request cannot be used for the other.
//
// A sender may put several v1 values in one header (one per secret while it
// rotates); the request is accepted when any of them matches any of the
// receiver's secrets. Keys other than t and v1 are ignored, so a later
// scheme can be added next to v1.
//
// Signing from a shell (the README copies this block):
//
//	secret='…one of R8IM_EVENT_SECRETS…'
//	body=$(cat event.json)    # sign exactly the bytes you send
//	t=$(date +%s)
//	sig=$(printf '%s.%s' "$t" "$body" | openssl dgst -sha256 -hmac "$secret" | sed 's/^.*= //')
//	curl -sS -X POST http://127.0.0.1:8080/v1/events/training-completed \
//	  -H 'Content-Type: application/json' \
//	  -H "R8im-Signature: t=$t,v1=$sig" \
//	  --data-binary "$body"
//
// Reading an event's record from a shell (the README copies this block):
//
//	secret='…one of R8IM_EVENT_SECRETS…'
//	path=/v1/events/run-42
//	t=$(date +%s)
//	sig=$(printf '%s.GET %s' "$t" "$path" | openssl dgst -sha256 -hmac "$secret" | sed 's/^.*= //')
//	curl -sS "http://127.0.0.1:8080$path" -H "R8im-Signature: t=$t,v1=$sig"
//
// (openssl takes the secret as an argument, visible in ps on a shared host;
// senders written in Go use Sign and SignRequest.)
const SignatureHeader = "R8im-Signature"

// DefaultTolerance is how far a signature's timestamp may be from the
// receiver's clock, in either direction, when Verifier.Tolerance is zero.
const DefaultTolerance = 5 * time.Minute

// Limits of the header parser: a signature header is short, anything longer
// is refused before it is looked at.
const (
	maxHeaderLen  = 4 << 10
	maxSignatures = 8
	maxParts      = 16
)

// Errors of Verify. Each is returned wrapped with a detail that never holds
// a secret; test with errors.Is.
var (
	// ErrNoSignature: the request carries no R8im-Signature header.
	ErrNoSignature = errors.New("no R8im-Signature header: sign the body (t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">)")
	// ErrMalformedSignature: the header is not t=<seconds>,v1=<64 hex digits>.
	ErrMalformedSignature = errors.New("malformed R8im-Signature header: want t=<unix seconds>,v1=<64 hex digits>")
	// ErrBadSignature: no v1 value matches any secret (wrong secret, or the
	// body, method, path or timestamp changed after signing).
	ErrBadSignature = errors.New("bad signature: no v1 value matches a configured secret for this request and timestamp")
	// ErrStale: the signature's timestamp is outside the tolerance (a
	// replay, or a sender whose clock is off). It is checked first, before
	// the body is read.
	ErrStale = errors.New("stale signature")
	// ErrNoSecrets: the Verifier has no usable (non-empty) secret, so it
	// accepts nothing.
	ErrNoSecrets = errors.New("no event secrets configured: set R8IM_EVENT_SECRETS")
)

// Verifier checks R8im-Signature headers against a set of secrets.
type Verifier struct {
	// Secrets are the accepted HMAC keys; several at once while they
	// rotate. Empty secrets are ignored.
	Secrets [][]byte
	// Tolerance is the replay window in both directions; zero (or
	// negative) means DefaultTolerance.
	Tolerance time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Signature is a parsed R8im-Signature header whose timestamp is within the
// tolerance: what can be known of a request before its body is read. Check
// it against the signed text with Verifier.Check.
type Signature struct {
	ts   int64
	sigs [][]byte
}

// Parse reads header and checks that its timestamp is within the tolerance
// of now, without looking at any body: the receiver calls it before reading
// one, so an unsigned, malformed or stale request costs no body read.
// Errors wrap ErrNoSignature, ErrMalformedSignature or ErrStale (which tells
// nothing secret: the window is no secret).
func (v Verifier) Parse(header string) (Signature, error) {
	ts, sigs, err := parseSignature(header)
	if err != nil {
		return Signature{}, err
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	tol := v.Tolerance
	if tol <= 0 {
		tol = DefaultTolerance
	}
	// Sub saturates, so huge timestamps cannot overflow into the window.
	skew := now().Sub(time.Unix(ts, 0))
	switch {
	case skew > tol:
		return Signature{}, fmt.Errorf("%w: signed %s ago, more than the %s allowed; sign each request when sending it", ErrStale, skew.Round(time.Second), tol)
	case skew < -tol:
		return Signature{}, fmt.Errorf("%w: signed %s in the future, more than the %s allowed; check the sender's clock", ErrStale, (-skew).Round(time.Second), tol)
	}
	return Signature{ts: ts, sigs: sigs}, nil
}

// Check returns nil when a v1 value of s is the HMAC of "<t>.<signed>"
// under one of the secrets: ErrBadSignature, or ErrNoSecrets when the
// Verifier has no usable secret. signed is the body of a POST, or
// RequestText(method, path) of a request without one.
func (v Verifier) Check(s Signature, signed []byte) error {
	usable := false
	matched := false
	for _, secret := range v.Secrets {
		if len(secret) == 0 {
			continue
		}
		usable = true
		want := mac(secret, s.ts, signed)
		for _, sig := range s.sigs {
			// Every comparison runs, so timing tells nothing about which
			// secret or value matched.
			if hmac.Equal(want, sig) {
				matched = true
			}
		}
	}
	switch {
	case !usable:
		return ErrNoSecrets
	case !matched:
		return ErrBadSignature
	}
	return nil
}

// Verify returns nil when a v1 value of header is the HMAC of
// "<t>.<body>" under one of the secrets and t is within the tolerance of
// now: Parse, then Check.
func (v Verifier) Verify(header string, body []byte) error {
	s, err := v.Parse(header)
	if err != nil {
		return err
	}
	return v.Check(s, body)
}

// VerifyRequest is Verify for a request without a body (GET
// /v1/events/{id}): the signed text is RequestText(method, path).
func (v Verifier) VerifyRequest(header, method, path string) error {
	return v.Verify(header, RequestText(method, path))
}

// RequestText is the signed text of a request without a body: its method,
// a space and its path as sent (escaped, without the query), such as
// "GET /v1/events/run-42".
func RequestText(method, path string) []byte {
	return []byte(method + " " + path)
}

// Sign returns the R8im-Signature header value for body signed with secret
// at time t (whole seconds; a time before 1970 gives a header that Verify
// refuses as malformed).
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := t.Unix()
	return "t=" + strconv.FormatInt(ts, 10) + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

// SignRequest returns the R8im-Signature header value for a request without
// a body, such as GET /v1/events/run-42: method and path (as sent, without
// the query) signed with secret at time t.
func SignRequest(secret []byte, t time.Time, method, path string) string {
	return Sign(secret, t, RequestText(method, path))
}

func mac(secret []byte, ts int64, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write(strconv.AppendInt(nil, ts, 10))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// parseSignature reads "t=<seconds>,v1=<hex>[,v1=<hex>…]". Parts are
// separated by commas with optional spaces; exactly one t, one to eight v1
// values of 64 hex digits each; other keys are ignored.
func parseSignature(header string) (ts int64, sigs [][]byte, err error) {
	header = strings.TrimSpace(header)
	if header == "" {
		return 0, nil, ErrNoSignature
	}
	bad := func(detail string) error { return fmt.Errorf("%w: %s", ErrMalformedSignature, detail) }
	if len(header) > maxHeaderLen {
		return 0, nil, bad(fmt.Sprintf("longer than %d bytes", maxHeaderLen))
	}
	parts := strings.Split(header, ",")
	if len(parts) > maxParts {
		return 0, nil, bad(fmt.Sprintf("more than %d comma-separated parts", maxParts))
	}
	haveT := false
	for _, part := range parts {
		key, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || !isKey(key) {
			return 0, nil, bad("every part must be key=value, such as t=1700000000 or v1=<hex>")
		}
		switch key {
		case "t":
			if haveT {
				return 0, nil, bad("t appears more than once")
			}
			haveT = true
			if val == "" || len(val) > 18 || strings.Trim(val, "0123456789") != "" {
				return 0, nil, bad("t must be the signing time in whole Unix seconds")
			}
			ts, err = strconv.ParseInt(val, 10, 64)
			if err != nil {
				return 0, nil, bad("t must be the signing time in whole Unix seconds")
			}
		case "v1":
			if len(sigs) == maxSignatures {
				return 0, nil, bad(fmt.Sprintf("more than %d v1 values", maxSignatures))
			}
			if len(val) != 2*sha256.Size {
				return 0, nil, bad(fmt.Sprintf("v1 must be %d hex digits (HMAC-SHA256), got %d characters", 2*sha256.Size, len(val)))
			}
			sig, err := hex.DecodeString(val)
			if err != nil {
				return 0, nil, bad("v1 must be hex digits (HMAC-SHA256)")
			}
			sigs = append(sigs, sig)
		}
	}
	switch {
	case !haveT:
		return 0, nil, bad("no t=<unix seconds>")
	case len(sigs) == 0:
		return 0, nil, bad("no v1=<hex HMAC-SHA256>")
	}
	return ts, sigs, nil
}

// isKey accepts the short lowercase names a scheme may use (t, v1, v2…).
func isKey(k string) bool {
	if k == "" || len(k) > 8 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}
