package config

import (
	"encoding/base64"
	"strings"
)

// Callbacks configures how the worker delivers result callbacks and how
// hard a backfill may press on one registry.
type Callbacks struct {
	// Secrets sign callbacks (Standard Webhooks): comma-separated, each
	// "whsec_<base64>" or a plain string; every one signs, for rotation.
	Secrets  Secret
	MaxRetry int
	// RegistryConcurrency bounds the recompression tasks pushing to one
	// registry at once, across all workers (0: no bound).
	RegistryConcurrency int
}

func (c *Callbacks) bind(b *binder) {
	b.bind(stringVar(&c.Secrets, ""), "", "", []string{"R8IM_CALLBACK_SECRETS"}, secret, "")
	b.bind(intVar(&c.MaxRetry, 10), "callback-max-retry", "", []string{"R8IM_CALLBACK_MAX_RETRY"}, plain,
		"retries of a callback the receiver did not accept (exponential backoff, about 7 hours in all)")
	b.bind(intVar(&c.RegistryConcurrency, 4), "registry-concurrency", "", []string{"R8IM_REGISTRY_CONCURRENCY"}, plain,
		"recompression (zstd/backfill) tasks pushing to one registry at once, across all workers; 0 for no bound")
}

func (c *Callbacks) validate(b *binder) []Problem {
	var ps []Problem
	if c.MaxRetry < 0 || c.MaxRetry > 100 {
		ps = append(ps, b.problem("callback-max-retry", "must be between 0 and 100, got %d", c.MaxRetry))
	}
	if c.RegistryConcurrency < 0 {
		ps = append(ps, b.problem("registry-concurrency", "must be 0 (no bound) or more, got %d", c.RegistryConcurrency))
	}
	for _, s := range strings.Split(string(c.Secrets), ",") {
		s = strings.TrimSpace(s)
		if rest, ok := strings.CutPrefix(s, "whsec_"); ok {
			if k, err := base64.StdEncoding.DecodeString(rest); err != nil || len(k) < 16 {
				ps = append(ps, b.problem("R8IM_CALLBACK_SECRETS", "a whsec_ secret must be whsec_ and the base64 of at least 16 bytes"))
			}
		} else if s != "" && len(s) < 16 {
			ps = append(ps, b.problem("R8IM_CALLBACK_SECRETS", "each secret must be at least 16 characters (or whsec_<base64>)"))
		}
	}
	return ps
}

// SecretKeys returns the signing keys: a whsec_ secret's decoded bytes, a
// plain one's bytes; empty entries are dropped.
func (c Callbacks) SecretKeys() [][]byte {
	var out [][]byte
	for _, s := range strings.Split(string(c.Secrets), ",") {
		s = strings.TrimSpace(s)
		if rest, ok := strings.CutPrefix(s, "whsec_"); ok {
			if k, err := base64.StdEncoding.DecodeString(rest); err == nil {
				out = append(out, k)
			}
		} else if s != "" {
			out = append(out, []byte(s))
		}
	}
	return out
}
