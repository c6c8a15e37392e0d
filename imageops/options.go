package imageops

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/r8im/r8im/internal/netguard"
)

// DefaultPlatform is the platform picked from a multi-platform base.
var DefaultPlatform = v1.Platform{OS: "linux", Architecture: "amd64"}

// Option configures an operation.
type Option func(*options)

type options struct {
	keychain        authn.Keychain
	cogToken        string
	defaultRegistry string
	insecure        bool
	platform        *v1.Platform // nil means every platform of an index
	exactPlatform   bool         // a single-platform image must be platform too
	requireMount    bool         // fail instead of copying base layers
	progress        func(Progress)
	transport       http.RoundTripper
	jobs            int
	userAgent       string
	cache           LayerCache   // nil: no shared-layer cache
	layerDigests    LayerDigests // nil: weights layers are always produced
	limits          TarLimits
	chunkSize       int64          // upload chunk size; 0: one request per blob
	sessions        UploadSessions // nil: uploads are not resumable across attempts
	sessionKey      string
	rootCAs         *x509.CertPool // nil: the system's
	maxManifest     int64
	idleTimeout     time.Duration

	remote []remote.Option // the caller's, after r8im's own

	kc authn.Keychain // keychain with the cog token exchange, built once
}

func makeOptions(opts []Option) *options {
	o := &options{
		keychain:    authn.DefaultKeychain,
		platform:    &DefaultPlatform,
		jobs:        4,
		userAgent:   "r8im",
		chunkSize:   DefaultChunkSize,
		maxManifest: DefaultMaxManifestSize,
		idleTimeout: netguard.DefaultIdleTimeout,
	}
	for _, opt := range opts {
		opt(o)
	}
	if o.transport == nil {
		o.transport = baseTransport(o.idleTimeout, o.insecure, o.rootCAs)
	}
	// Whatever the base, every request r8im sends to a registry (token
	// exchanges included) has its redirects bounded, its response bodies
	// under the idle deadline, and everything but blob bodies capped.
	o.transport = capBodies(netguard.Wrap(o.transport, netguard.Options{IdleTimeout: o.idleTimeout}), o.maxManifest)
	return o
}

// DefaultMaxManifestSize caps manifests, indexes, image configs and any
// other registry answer that is not a blob's content (4 MiB; the largest
// real manifests are tens of KiB).
const DefaultMaxManifestSize = 4 << 20

// baseTransports are shared by every operation with the same settings, so
// connections are reused across operations (as remote.DefaultTransport's
// are).
var baseTransports sync.Map // baseKey → *http.Transport

type baseKey struct {
	idle     time.Duration
	insecure bool
	roots    *x509.CertPool
}

// baseTransport is the default transport to registries: TLS verified
// against roots (skipped when insecure, as crane --insecure does), writes
// and response headers bounded by the idle timeout. Registries are the
// operator's choice, so loopback and private addresses are allowed.
func baseTransport(idle time.Duration, insecure bool, roots *x509.CertPool) http.RoundTripper {
	k := baseKey{idle, insecure, roots}
	if t, ok := baseTransports.Load(k); ok {
		return t.(http.RoundTripper)
	}
	t, _ := baseTransports.LoadOrStore(k, netguard.NewTransport(netguard.Options{IdleTimeout: idle, InsecureSkipVerify: insecure, RootCAs: roots}))
	return t.(http.RoundTripper)
}

// WithKeychain sets where registry credentials come from (default: the
// docker config, DOCKER_CONFIG and credential helpers).
func WithKeychain(k authn.Keychain) Option { return func(o *options) { o.keychain = k } }

// WithCogToken authenticates to the default registry (CogRegistry when none
// is set) with a Replicate cog token, exchanged for a user name at
// /cog/v1/verify-token.
func WithCogToken(token string) Option { return func(o *options) { o.cogToken = token } }

// WithDefaultRegistry is the registry of references that name none. There
// is no default: without it, a reference must name its registry
// (r8.im/acme/model:v1, not acme/model:v1).
func WithDefaultRegistry(host string) Option { return func(o *options) { o.defaultRegistry = host } }

// WithInsecure allows plain HTTP to registries that are not on loopback,
// and accepts any TLS certificate from registries (as crane --insecure
// does). A cog token is never sent over plain HTTP to a host that is not
// loopback.
func WithInsecure(insecure bool) Option { return func(o *options) { o.insecure = insecure } }

// WithRootCAs sets the CAs that verify registries' TLS certificates
// (default: the system's, which honour SSL_CERT_FILE).
func WithRootCAs(pool *x509.CertPool) Option { return func(o *options) { o.rootCAs = pool } }

// WithMaxManifestSize caps manifests, indexes, image configs and every other
// registry answer but blob contents (default DefaultMaxManifestSize): a
// larger one fails with ErrTooLarge before it is read.
func WithMaxManifestSize(n int64) Option {
	return func(o *options) {
		if n > 0 {
			o.maxManifest = n
		}
	}
}

// WithIdleTimeout fails a registry request when its connection carries no
// byte for d while r8im waits on the registry (default 60s); a failure
// names the host and is transient.
func WithIdleTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.idleTimeout = d
		}
	}
}

// WithPlatform picks the image of a multi-platform base (default
// linux/amd64); nil applies the operation to every platform.
func WithPlatform(p *v1.Platform) Option {
	return func(o *options) { o.platform, o.exactPlatform = p, false }
}

// WithExactPlatform is WithPlatform for a platform the user chose: a
// single-platform image of another platform is refused (naming the one it
// has) instead of being taken as it is.
func WithExactPlatform(p *v1.Platform) Option {
	return func(o *options) { o.platform, o.exactPlatform = p, p != nil }
}

// WithRequireMount makes a write fail, permanently, instead of copying base
// layers (downloading and uploading them again) that the destination
// registry does not mount: a base on another registry, or a mount the
// registry refused because the credentials may not pull the base's
// repository. Without it such copies happen and are reported
// (Transfer.RefusedMounts, Transfer.Notes).
func WithRequireMount(on bool) Option { return func(o *options) { o.requireMount = on } }

// WithProgress receives progress reports; it must return quickly.
func WithProgress(f func(Progress)) Option { return func(o *options) { o.progress = f } }

// WithTransport sets the base HTTP transport. The default verifies TLS with
// WithRootCAs (or skips it with WithInsecure) and bounds dials, handshakes,
// writes and response headers; a transport given here replaces those
// settings. The redirect bound, the idle deadline on bodies and the size
// caps wrap either one.
func WithTransport(t http.RoundTripper) Option { return func(o *options) { o.transport = t } }

// WithJobs sets how many layers are produced, uploaded or downloaded at
// once; default 4. Extract and ExtractToDir download up to n weights
// layers at once (the ones ahead of the layer being written wait in temp
// files) and write them in layer order, so their output does not depend on
// n. Values below 1 keep the default.
func WithJobs(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.jobs = n
		}
	}
}

// TarLimits bound a weights tarball; a zero field means TarPolicy's
// default (1,000,000 entries, names of 4096 bytes, 1 TiB of files).
type TarLimits struct {
	MaxEntries    int
	MaxNameLength int
	MaxBytes      int64
}

// WithTarLimits bounds the weights tarballs Affix accepts.
func WithTarLimits(l TarLimits) Option { return func(o *options) { o.limits = l } }

// WithUserAgent sets the User-Agent prefix sent to registries.
func WithUserAgent(ua string) Option { return func(o *options) { o.userAgent = ua } }

// ParsePlatform reads "os/arch[/variant]" or "all" (nil: every platform).
func ParsePlatform(s string) (*v1.Platform, error) {
	if s == "all" {
		return nil, nil
	}
	p, err := v1.ParsePlatform(s)
	if err != nil || p.OS == "" || p.Architecture == "" {
		return nil, fmt.Errorf("invalid platform %q: use os/arch[/variant] such as linux/amd64, or all", s)
	}
	return p, nil
}

// Progress reports how far a stage has come. Total is 0 when unknown.
type Progress struct {
	Stage string
	Done  int64
	Total int64
}

func (o *options) report(stage string, done, total int64) {
	if o.progress != nil {
		o.progress(Progress{Stage: stage, Done: done, Total: total})
	}
}

// nameOptions are the options every reference and repository is parsed
// with.
func (o *options) nameOptions() []name.Option {
	nopts := []name.Option{name.WithDefaultRegistry(o.defaultRegistry)}
	if o.insecure {
		nopts = append(nopts, name.Insecure)
	}
	return nopts
}

// checkRegistry refuses a name s without a registry host when no default
// registry was given: go-containerregistry would silently take Docker
// Hub's.
func (o *options) checkRegistry(s, what string) error {
	if o.defaultRegistry == "" && !namesRegistry(s) {
		return invalidf("%s: %q names no registry host; write it in full (r8.im/%s), or give the library a default registry (WithDefaultRegistry)", what, s, s)
	}
	return nil
}

// namesRegistry reports whether a reference or repository starts with a
// registry host, by the rule go-containerregistry and docker parse it with:
// a first path component with a dot or a colon, or "localhost".
func namesRegistry(s string) bool {
	host, _, ok := strings.Cut(s, "/")
	return ok && (strings.ContainsAny(host, ".:") || host == "localhost")
}

// cogRegistry is the registry a cog token is exchanged with.
func (o *options) cogRegistry() string {
	if o.defaultRegistry != "" {
		return o.defaultRegistry
	}
	return CogRegistry
}

// CogRegistry is Replicate's registry, where a cog token (WithCogToken)
// is used when no default registry is set.
const CogRegistry = "r8.im"

// parseRef parses an image reference by tag or digest; a reference without
// a registry host gets the default registry.
func (o *options) parseRef(s, what string) (name.Reference, error) {
	if strings.TrimSpace(s) == "" {
		return nil, invalidf("%s: no image reference given", what)
	}
	ref, err := name.ParseReference(s, o.nameOptions()...)
	if err != nil {
		return nil, invalidf("%s: %q is not an image reference (%v); use host/repo:tag or host/repo@sha256:<64 hex>", what, s, err)
	}
	if err := o.checkRegistry(s, what); err != nil {
		return nil, err
	}
	return ref, nil
}

// parseRepoTag parses a destination "host/repo[:tag]"; digests are refused
// since the digest of a new image is only known once it is built.
func (o *options) parseDest(s string) (name.Repository, string, error) {
	ref, err := o.parseRef(s, "destination")
	if err != nil {
		return name.Repository{}, "", err
	}
	switch r := ref.(type) {
	case name.Digest:
		return name.Repository{}, "", invalidf("destination %q names a digest; give a repository and optionally a tag (host/repo[:tag]): the new image's digest is computed", s)
	case name.Tag:
		tag := r.TagStr()
		if !strings.Contains(s[strings.LastIndex(s, "/")+1:], ":") {
			tag = "" // name.ParseReference filled in "latest"; keep "no tag" distinct
		}
		return r.Context(), tag, nil
	}
	return ref.Context(), "", nil
}

// remoteOptions returns the go-containerregistry options for one operation,
// with credentials, context, platform, metering and progress wired in.
func (o *options) remoteOptions(ctx context.Context, m *meter) []remote.Option {
	t := o.transport
	if m != nil {
		t = m.wrap(t)
	}
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(o.keys()),
		remote.WithTransport(t),
		remote.WithJobs(o.jobs),
		remote.WithUserAgent(o.userAgent),
	}
	if o.platform != nil {
		opts = append(opts, remote.WithPlatform(*o.platform))
	}
	return append(opts, o.remote...)
}

// WithRemoteOptions passes go-containerregistry options through to every
// remote call (remote.Get, remote.Write, …), after r8im's own, so they win:
// remote.WithProgress, remote.WithRetryBackoff, remote.WithRetryStatusCodes.
// Blobs r8im uploads itself (chunked, resumable: weights layers,
// recompressed layers, Push's missing layers) and the HEADs that check
// them go through r8im's own client, which honours the transport and
// keychain options (WithTransport, WithKeychain) but not these.
func WithRemoteOptions(opts ...remote.Option) Option {
	return func(o *options) { o.remote = append(o.remote, opts...) }
}

// keys returns the keychain: the cog token exchange for the default registry
// when a token is set, in front of the configured keychain.
func (o *options) keys() authn.Keychain {
	if o.kc == nil {
		o.kc = o.keychain
		if o.cogToken != "" {
			o.kc = newCogKeychain(o.cogRegistry(), o.cogToken, o.transport, o.keychain)
		}
	}
	return o.kc
}
