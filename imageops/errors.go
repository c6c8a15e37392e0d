package imageops

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/r8im/r8im/internal/retry"
	"github.com/r8im/r8im/internal/untrusted"
)

// Sentinel errors let callers tell what failed with errors.Is. Each is
// permanent (IsPermanent): asking again cannot help.
var (
	// ErrNotFound: the image, manifest or blob does not exist.
	ErrNotFound = retry.New("not found")
	// ErrUnauthorized: the registry refused the credentials.
	ErrUnauthorized = retry.New("unauthorized")
	// ErrInvalid: the request itself is wrong (bad reference, flag, input).
	ErrInvalid = retry.New("invalid request")
)

// invalidf builds an ErrInvalid error with a message saying what to fix.
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// maxRemoteText caps what a registry wrote (error bodies, messages) in an
// error.
const maxRemoteText = 1024

// registryErr adds a sentinel and a hint to registry errors: what was being
// done, what went wrong, what to do. The registry's own text is stripped of
// control characters and capped (untrusted.Text); go-containerregistry's
// *transport.Error stays reachable with errors.As.
func registryErr(err error, doing string) error {
	if err == nil {
		return nil
	}
	remote := untrusted.Err(err, maxRemoteText)
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusNotFound:
			return fmt.Errorf("%s: %w (check the reference; %w)", doing, ErrNotFound, remote)
		case http.StatusUnauthorized, http.StatusForbidden:
			if refused := refusedAccess(te); refused != "" {
				return fmt.Errorf("%s: %w: the registry refused %s: the credentials in use may not do that there "+
					"(check the repository, or use credentials of a user who may): %w", doing, ErrUnauthorized, refused, remote)
			}
			return fmt.Errorf("%s: %w: %w (the registry wants other credentials)", doing, ErrUnauthorized, remote)
		}
	}
	switch {
	case untrustedCertificate(err):
		return fmt.Errorf("%s: %w (the registry's TLS certificate is not trusted)", doing, remote)
	case errors.Is(err, ErrTooLarge):
		return fmt.Errorf("%s: %w (the limit guards against hostile registries)", doing, remote)
	}
	return fmt.Errorf("%s: %w", doing, remote)
}

// refusedAccess says which action on which repository a 401 or 403
// refused, from the registry's error detail (distribution lists the access
// it wanted: [{"Type":"repository","Name":"alice/x","Action":"push"}]) or,
// failing that, from the request: a GET or HEAD wants pull, anything else
// push. "" when neither tells.
func refusedAccess(te *transport.Error) string {
	var wanted []string
	for _, d := range te.Errors {
		b, err := json.Marshal(d.Detail)
		if err != nil {
			continue
		}
		var access []struct{ Type, Name, Action string }
		if json.Unmarshal(b, &access) != nil {
			continue
		}
		for _, a := range access {
			if a.Type == "repository" && a.Name != "" && a.Action != "" {
				w := untrusted.Text(a.Action, 32) + " on repository " + untrusted.Text(a.Name, 256)
				if !slices.Contains(wanted, w) {
					wanted = append(wanted, w)
				}
			}
		}
	}
	if len(wanted) > 0 {
		return strings.Join(wanted, " and ")
	}
	if te.Request == nil {
		return ""
	}
	p := strings.TrimPrefix(te.Request.URL.Path, "/v2/")
	i := strings.LastIndex(p, "/blobs/")
	if j := strings.LastIndex(p, "/manifests/"); j > i {
		i = j
	}
	if i <= 0 {
		return ""
	}
	action := "push"
	if te.Request.Method == http.MethodGet || te.Request.Method == http.MethodHead {
		action = "pull"
	}
	return action + " on repository " + untrusted.Text(p[:i], 256)
}

// MountRefusedError is a base blob that the destination registry would not
// mount from the base's repository (or that lives on another registry),
// which WithRequireMount forbids copying. It is permanent: errors.Is(err,
// ErrUnauthorized) holds.
type MountRefusedError struct {
	Digest   string // the blob
	From     string // the repository it was to be mounted from
	Registry string // the registry that refused
	// CrossRegistry: From is on another registry, where no mount is possible.
	CrossRegistry bool
}

func (e *MountRefusedError) Error() string {
	if e.CrossRegistry {
		return fmt.Sprintf("%s is on another registry than %s: its layers cannot be mounted, and copying them (download and upload again) "+
			"is forbidden by require-mount; copy the image to %s first, or allow the copy", e.From, e.Registry, e.Registry)
	}
	return fmt.Sprintf("the registry %s refused to mount base blob %s from repository %s (the credentials may not pull it), "+
		"and copying it (download and upload again) is forbidden by require-mount; use credentials that may pull %s, or allow the copy",
		e.Registry, e.Digest, e.From, e.From)
}

func (e *MountRefusedError) Unwrap() error { return ErrUnauthorized }

// untrustedCertificate reports whether err is a TLS certificate that did
// not verify.
func untrustedCertificate(err error) bool {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	return errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci)
}

// IsPermanent reports whether retrying the operation cannot help: a bad
// request or input, a policy violation, something missing or too large,
// refused credentials, or any error that says so with a Permanent() bool
// method (a weights source's, so that an upload never re-reads it). Network
// errors (stalled connections included), 5xx and 429 are not permanent. It
// is the one rule of internal/retry, which every r8im package uses.
func IsPermanent(err error) bool { return retry.IsPermanent(err) }

// RetryAfterError is a transient failure during which the server (a
// registry, a callback receiver) asked for a pause (Retry-After on a 429 or
// 5xx): a retry should wait After.
type RetryAfterError = retry.AfterError
