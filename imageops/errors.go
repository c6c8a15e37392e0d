package imageops

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
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

// registryErr adds a sentinel and a hint to registry errors: what was being
// done, what went wrong, what to do.
func registryErr(err error, doing string) error {
	if err == nil {
		return nil
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusNotFound:
			return fmt.Errorf("%s: %w (check the reference; %v)", doing, ErrNotFound, err)
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("%s: %w: %v (log in with `docker login`, set DOCKER_CONFIG, or pass a cog token with --token / COG_TOKEN)", doing, ErrUnauthorized, err)
		}
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// IsPermanent reports whether retrying the operation cannot help: a bad
// request or input, a policy violation, something missing, refused
// credentials. Network errors, 5xx and 429 are not permanent.
func IsPermanent(err error) bool {
	return errors.Is(err, ErrInvalid) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnauthorized) ||
		errors.Is(err, ErrNoWeights) || isInputError(err)
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
