// Package netguard builds the HTTP transports r8im uses to reach servers it
// does not control — registries, weights hosts, callback receivers — so that
// none of them can hang, loop or steer a client: redirects are bounded (and
// never downgrade https to http), a connection with no byte for IdleTimeout
// fails naming its host, and connecting to loopback, private, link-local or
// unspecified addresses can be refused unless explicitly allowed.
package netguard

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// Defaults of Options.
const (
	// DefaultMaxRedirects is Go's own cap, which go-containerregistry's
	// redirect check replaces with none.
	DefaultMaxRedirects = 10
	// DefaultIdleTimeout is how long a connection may go without a byte
	// while r8im waits on the server.
	DefaultIdleTimeout = 60 * time.Second
	// headerTimeoutFactor: response headers may take this many idle
	// timeouts after a request is sent (a registry may copy a big blob to
	// its storage before it answers the upload's last request).
	headerTimeoutFactor = 5
)

// Options configure a transport or client. The zero value is usable: ten
// redirects on any host, no https→http, a 60s idle timeout, the system's
// CAs, any address.
type Options struct {
	// IdleTimeout fails a request when no byte arrives (or can be sent) for
	// this long while waiting on the server; 0 means DefaultIdleTimeout.
	// Response headers may take five times as long.
	IdleTimeout time.Duration
	// MaxRedirects bounds the redirects of one request; 0 means
	// DefaultMaxRedirects.
	MaxRedirects int
	// SameHost refuses redirects that change the scheme or host (weights
	// sources: the allowlisted host, not where it points).
	SameHost bool
	// NoRedirects makes a client (NewClient) return 3xx responses as they
	// are (callbacks).
	NoRedirects bool
	// GuardPrivate refuses connections to loopback, private, link-local,
	// unspecified and other non-public addresses, whatever name resolved
	// to them, except those in Allow.
	GuardPrivate bool
	Allow        []netip.Prefix
	// RootCAs verify servers' certificates; nil means the system's
	// (SSL_CERT_FILE, SSL_CERT_DIR honoured).
	RootCAs *x509.CertPool
	// InsecureSkipVerify accepts any certificate (registries with --insecure).
	InsecureSkipVerify bool
}

func (o Options) idle() time.Duration {
	if o.IdleTimeout > 0 {
		return o.IdleTimeout
	}
	return DefaultIdleTimeout
}

func (o Options) maxRedirects() int {
	if o.MaxRedirects > 0 {
		return o.MaxRedirects
	}
	return DefaultMaxRedirects
}

// NewTransport returns an *http.Transport with the dial, TLS and timeout
// settings of o: dials refused per GuardPrivate/Allow, writes that make no
// progress for IdleTimeout failed, TLS handshakes bounded to 10s, response
// headers to five idle timeouts. Wrap adds the redirect bound and the idle
// deadline on response bodies; NewClient does both.
func NewTransport(o Options) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	if o.GuardPrivate {
		d.ControlContext = control(o.Allow)
	}
	idle := o.idle()
	t.DialContext = dialWithWriteDeadline(d, idle)
	t.TLSClientConfig = &tls.Config{RootCAs: o.RootCAs, InsecureSkipVerify: o.InsecureSkipVerify, MinVersion: tls.VersionTLS12} //nolint:gosec // only when asked
	t.TLSHandshakeTimeout = 10 * time.Second
	t.ResponseHeaderTimeout = headerTimeoutFactor * idle
	t.IdleConnTimeout = 90 * time.Second
	t.MaxIdleConnsPerHost = 50
	return t
}

// NewClient returns a client over NewTransport(o), wrapped by Wrap, whose
// redirect policy is o's.
func NewClient(o Options) *http.Client {
	return &http.Client{Transport: Wrap(NewTransport(o), o), CheckRedirect: o.CheckRedirect}
}
