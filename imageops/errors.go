package imageops

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/r8im/r8im/internal/untrusted"
)

// Sentinel errors let callers (the worker) tell permanent failures from
// transient ones with errors.Is.
var (
	// ErrNotFound: the image, manifest or blob does not exist.
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized: the registry refused the credentials.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrInvalid: the request itself is wrong (bad reference, flag, input).
	ErrInvalid = errors.New("invalid request")
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
			return fmt.Errorf("%s: %w: %w (log in with `docker login`, set DOCKER_CONFIG, or pass a cog token with --token / COG_TOKEN)", doing, ErrUnauthorized, remote)
		}
	}
	switch {
	case untrustedCertificate(err):
		return fmt.Errorf("%s: %w (the registry's TLS certificate is not trusted: give its CA with --ca-file / R8IM_CA_FILE, or SSL_CERT_FILE, or skip verification with --insecure / R8IM_INSECURE)", doing, remote)
	case errors.Is(err, ErrTooLarge):
		return fmt.Errorf("%s: %w (raise --max-manifest-size / R8IM_MAX_MANIFEST_SIZE only if the image is genuine)", doing, remote)
	}
	return fmt.Errorf("%s: %w", doing, remote)
}

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
// refused credentials. Network errors (stalled connections included), 5xx
// and 429 are not permanent.
func IsPermanent(err error) bool {
	return errors.Is(err, ErrInvalid) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnauthorized) ||
		errors.Is(err, ErrNoWeights) || errors.Is(err, ErrTooLarge) || isInputError(err)
}

// RetryAfterError is a transient failure during which the server (a
// registry, a callback receiver) asked for a pause (Retry-After on a 429 or
// 5xx): a retry should wait After.
type RetryAfterError struct {
	After time.Duration
	Err   error
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("%v (asked to retry after %s)", e.Err, e.After)
}

func (e *RetryAfterError) Unwrap() error { return e.Err }
