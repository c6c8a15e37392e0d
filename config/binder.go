package config

import (
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/spf13/pflag"
)

// LookupFunc reads one environment variable; os.LookupEnv is the usual one.
// Tests pass a map-backed function so they never touch the process environment.
type LookupFunc func(key string) (string, bool)

// redaction says how a setting's value may be shown in Redacted output.
type redaction int

const (
	plain     redaction = iota
	secret              // never shown; redactedText when set
	urlSecret           // a URL whose password is masked
)

// setting binds one configuration value to its flag and environment names.
type setting struct {
	flag    string   // flag name; "" when the value is settable by environment only
	env     []string // checked in order, the first one set wins
	redact  redaction
	value   pflag.Value // writes through to the Config field
	f       *pflag.Flag // the flag, shared by every flag set it is added to
	section Section
}

// source names where a setting comes from, for error messages:
// "R8IM_CONCURRENCY or --concurrency".
func (s *setting) source() string {
	parts := slices.Clone(s.env)
	if s.flag != "" {
		parts = append(parts, "--"+s.flag)
	}
	return strings.Join(parts, " or ")
}

// binder owns the settings of one Config and the flag set they are registered
// on. Every value lives in the Config struct; flags and environment variables
// both write into it through pflag.Value, with flags taking precedence.
type binder struct {
	fs       *pflag.FlagSet
	settings []*setting
	loadErrs []Problem
	section  Section // of the settings bound next
}

func newBinder() *binder {
	return &binder{fs: pflag.NewFlagSet("config", pflag.ContinueOnError)}
}

// bind registers a setting. The flag is registered on the binder's own flag
// set; RegisterFlags copies it to a command's flag set.
func (b *binder) bind(v pflag.Value, flag, short string, env []string, r redaction, usage string) {
	s := &setting{flag: flag, env: env, redact: r, value: v, section: b.section}
	if flag != "" {
		if len(env) > 0 {
			usage = fmt.Sprintf("%s (env %s)", usage, strings.Join(env, ", "))
		}
		f := b.fs.VarPF(v, flag, short, usage)
		// --help never prints a secret: secret defaults are hidden, URL
		// defaults shown with their password masked.
		if r == secret {
			f.DefValue = ""
		} else {
			f.DefValue = redactValue(f.DefValue, r)
		}
		if _, ok := v.(boolFlag); ok {
			f.NoOptDefVal = "true"
		}
		s.f = f
	}
	b.settings = append(b.settings, s)
}

type boolFlag interface{ IsBoolFlag() bool }

// registerFlags adds the bound flags of the given sections (every flag
// when none is given) to fs (a command's flag set). A flag may be added to
// several commands' flag sets: they share it, and load sees it as given
// whichever command parsed it.
func (b *binder) registerFlags(fs *pflag.FlagSet, sections ...Section) {
	for _, s := range b.settings {
		if s.f != nil && (len(sections) == 0 || slices.Contains(sections, s.section)) && fs.Lookup(s.flag) == nil {
			fs.AddFlag(s.f)
		}
	}
}

// load applies environment variables to every setting whose flag was not set
// on the command line. Values that do not parse are kept as problems and
// reported by Validate, together with every other problem.
func (b *binder) load(lookup LookupFunc) {
	b.loadErrs = nil
	for _, s := range b.settings {
		if s.flag != "" {
			if s.f != nil && s.f.Changed {
				continue
			}
		}
		for _, name := range s.env {
			raw, ok := lookup(name)
			if !ok || raw == "" {
				continue
			}
			prev := s.value.String()
			if err := s.value.Set(raw); err != nil {
				_ = s.value.Set(prev) // pflag zeroes the field on a failed parse; keep the default
				msg := fmt.Sprintf("cannot use %q: %v", raw, err)
				if s.redact != plain {
					// The parse error quotes the input, so it is left out.
					msg = fmt.Sprintf("cannot use the value: it is not a valid %s", s.value.Type())
				}
				b.loadErrs = append(b.loadErrs, Problem{Setting: name, Message: msg})
			}
			break
		}
	}
}

// lookup finds the setting bound to a flag name (or, for environment-only
// settings, to its first environment variable).
func (b *binder) lookup(name string) *setting {
	for _, s := range b.settings {
		if s.flag == name || (s.flag == "" && len(s.env) > 0 && s.env[0] == name) {
			return s
		}
	}
	panic("config: no setting named " + name) // a programming error, caught by tests
}

// problem builds a Problem for the setting bound to name.
func (b *binder) problem(name, format string, args ...any) Problem {
	return Problem{Setting: b.lookup(name).source(), Message: fmt.Sprintf(format, args...)}
}

// redacted renders every setting keyed by its primary name (first
// environment variable, else --flag) with secrets masked.
func (b *binder) redacted() map[string]string {
	out := make(map[string]string, len(b.settings))
	for _, s := range b.settings {
		key := "--" + s.flag
		if len(s.env) > 0 {
			key = s.env[0]
		}
		out[key] = redactValue(s.value.String(), s.redact)
	}
	return out
}

func redactValue(v string, r redaction) string {
	switch {
	case v == "" || r == plain:
		return v
	case r == urlSecret:
		return RedactURL(v)
	default:
		return redactedText
	}
}

// RedactURL masks the user info secret of a URL (the password, or a bare
// user name, which Redis treats as a password), and the value of every
// query parameter whose name says it is a secret (password=,
// sentinel_password=, token=, …: go-redis reads a Sentinel master's
// password from ?password=), and keeps the rest readable. It copes with
// values net/url rejects, such as multi-host Sentinel URLs
// ("redis-sentinel://:pw@h1:26379,h2:26379").
func RedactURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		if strings.Contains(raw, "@") {
			return redactedText
		}
		return redactQuery(raw)
	}
	// The last "@" ends the user info even when a password holds an
	// unescaped "/", "?" or "#"; an "@" in a path or query only makes the
	// masking wider, never narrower.
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return scheme + "://" + redactQuery(rest)
	}
	user, _, hasPass := strings.Cut(rest[:at], ":")
	if !hasPass {
		return scheme + "://REDACTED" + redactQuery(rest[at:])
	}
	return scheme + "://" + user + ":REDACTED" + redactQuery(rest[at:])
}

// redactQuery masks the values of secret parameters in the query of s
// (everything after its first "?", up to the end: a "#" inside a secret
// value is masked with it).
func redactQuery(s string) string {
	i := strings.IndexByte(s, '?')
	if i < 0 {
		return s
	}
	params := strings.Split(s[i+1:], "&")
	for j, p := range params {
		if k, v, ok := strings.Cut(p, "="); ok && v != "" && secretParam(k) {
			params[j] = k + "=" + redactedText
		}
	}
	return s[:i+1] + strings.Join(params, "&")
}

// secretWords mark a query parameter as a secret when its name holds one.
var secretWords = []string{"pass", "pwd", "secret", "token", "auth", "credential", "signature", "key"}

func secretParam(name string) bool {
	if u, err := url.QueryUnescape(name); err == nil {
		name = u
	}
	name = strings.ToLower(name)
	for _, w := range secretWords {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}
