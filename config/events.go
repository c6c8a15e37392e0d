package config

import (
	"strings"
	"time"
)

// Events configures the training-event receiver (enqueue serve).
type Events struct {
	Addr                 string
	Secrets              Secret // comma-separated HMAC secrets; several at once for rotation
	Tolerance            time.Duration
	AllowedSources       string // comma-separated patterns: s3://bucket/*, https://host/prefix/*
	AllowedDestinations  string // comma-separated patterns: r8.im/*, r8.im/acme/*
	AllowedCallbackHosts string // comma-separated host names, or *.example.com
	AllowedBases         string // comma-separated repository patterns: r8.im/acme/*
	AllowedTargets       string // comma-separated absolute directories: /src/weights
	MaxBodies            int    // event bodies read at once
}

func (e *Events) bind(b *binder) {
	b.bind(stringVar(&e.Addr, "127.0.0.1:8080"), "listen", "", []string{"R8IM_EVENTS_ADDR"}, plain,
		"listen address of the event receiver")
	b.bind(stringVar(&e.Secrets, ""), "", "", []string{"R8IM_EVENT_SECRETS"}, secret, "")
	b.bind(durationVar(&e.Tolerance, 5*time.Minute), "event-tolerance", "", []string{"R8IM_EVENT_TOLERANCE"}, plain,
		"how far a signature's timestamp may be from now (replay window)")
	b.bind(stringVar(&e.AllowedSources, ""), "allowed-sources", "", []string{"R8IM_ALLOWED_SOURCES"}, plain,
		"weights URLs events may name, comma-separated: s3://bucket/*, https://files.example.com/*")
	b.bind(stringVar(&e.AllowedDestinations, ""), "allowed-destinations", "", []string{"R8IM_ALLOWED_DESTINATIONS"}, plain,
		"repositories events may publish to, comma-separated: r8.im/*, r8.im/acme/*")
	b.bind(stringVar(&e.AllowedCallbackHosts, ""), "allowed-callback-hosts", "", []string{"R8IM_ALLOWED_CALLBACK_HOSTS"}, plain,
		"hosts events may name as callback_url, comma-separated")
	b.bind(stringVar(&e.AllowedBases, ""), "allowed-bases", "", []string{"R8IM_ALLOWED_BASES"}, plain,
		"base image repositories events may name, comma-separated: r8.im/acme/*, r8.im/acme/model-base")
	b.bind(stringVar(&e.AllowedTargets, "/src/weights"), "allowed-targets", "", []string{"R8IM_ALLOWED_TARGETS"}, plain,
		"directories events may place weights in, comma-separated, exact")
	b.bind(intVar(&e.MaxBodies, 64), "max-event-bodies", "", []string{"R8IM_MAX_EVENT_BODIES"}, plain,
		"event bodies (up to 1 MiB each) the receiver reads at once; more get 503 with Retry-After")
}

// SecretList splits the secrets; empty entries are dropped.
func (e Events) SecretList() [][]byte {
	var out [][]byte
	for _, s := range strings.Split(string(e.Secrets), ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, []byte(s))
		}
	}
	return out
}

func (e *Events) validate(b *binder) []Problem {
	var ps []Problem
	ps = append(ps, validateAddr(b, "listen", e.Addr)...)
	if e.Tolerance < 10*time.Second || e.Tolerance > time.Hour {
		ps = append(ps, b.problem("event-tolerance", "must be between 10s and 1h, got %s", e.Tolerance))
	}
	if e.MaxBodies < 1 || e.MaxBodies > 4096 {
		ps = append(ps, b.problem("max-event-bodies", "must be between 1 and 4096, got %d", e.MaxBodies))
	}
	return ps
}

// ValidateServe is Validate plus what the receiver cannot run without: a
// signing secret, each at least 16 bytes.
func (c *Enqueue) ValidateServe() error {
	var ps []Problem
	if err := c.Validate(); err != nil {
		ps = append(ps, err.(*ValidationError).Problems...)
	}
	secrets := c.Events.SecretList()
	if len(secrets) == 0 {
		ps = append(ps, c.b.problem("R8IM_EVENT_SECRETS", "required: the receiver refuses unsigned events; set one or more comma-separated secrets (e.g. openssl rand -hex 32)"))
	}
	for i, s := range secrets {
		if len(s) < 16 {
			ps = append(ps, c.b.problem("R8IM_EVENT_SECRETS", "secret #%d is %d bytes; use at least 16 (e.g. openssl rand -hex 32)", i+1, len(s)))
		}
	}
	return asError(ps)
}
