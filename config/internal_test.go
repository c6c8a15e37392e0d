package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// quietValue is a pflag.Value whose Set always fails without quoting its
// input, so any echo of the input comes from load itself.
type quietValue struct{}

func (quietValue) String() string     { return "" }
func (quietValue) Type() string       { return "quiet" }
func (quietValue) Set(s string) error { return errors.New("rejected") }

// No secret setting can currently fail to parse (they are all strings), so
// the masking of unparseable secret values in load is reachable only by
// binding a failing value with a secret redaction here.
func TestLoadMasksUnparseableSecretValues(t *testing.T) {
	const (
		name = "R8IM_TEST_SETTING"
		raw  = "not-a-number-7c1f9e"
	)
	values := []struct {
		name  string
		value func() pflag.Value
	}{
		{"quiet error", func() pflag.Value { return quietValue{} }},
		{"pflag int, whose error quotes the input", func() pflag.Value { return intVar(new(int), 3) }},
	}
	for _, v := range values {
		for _, r := range []struct {
			name   string
			redact redaction
		}{{"plain", plain}, {"secret", secret}, {"urlSecret", urlSecret}} {
			t.Run(v.name+"/"+r.name, func(t *testing.T) {
				b := newBinder()
				b.bind(v.value(), "test-setting", "", []string{name}, r.redact, "a test setting")
				b.load(func(key string) (string, bool) {
					if key == name {
						return raw, true
					}
					return "", false
				})
				if len(b.loadErrs) != 1 {
					t.Fatalf("loadErrs = %v, want one problem", b.loadErrs)
				}
				p := b.loadErrs[0]
				if p.Setting != name {
					t.Errorf("Setting = %q, want %q", p.Setting, name)
				}
				if strings.TrimSpace(p.Message) == "" {
					t.Error("empty Message")
				}
				quoted := strings.Contains(p.String(), raw)
				switch {
				case r.redact == plain && !quoted:
					t.Errorf("problem %q does not show the plain value %q", p, raw)
				case r.redact != plain && quoted:
					t.Errorf("problem %q quotes the secret value", p)
				}
			})
		}
	}
}

// A secret's default never reaches --help.
func TestSecretDefaultsAreNotInUsage(t *testing.T) {
	tests := []struct {
		name   string
		redact redaction
		def    string
		secret string
	}{
		{"secret", secret, "default-secret-2d9b", "default-secret-2d9b"},
		{"url password", urlSecret, "redis://:default-pw-2d9b@h:6379/0", "default-pw-2d9b"},
		{"url bare user", urlSecret, "redis://default-pw-2d9b@h:6379/0", "default-pw-2d9b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s string
			b := newBinder()
			b.bind(stringVar(&s, tt.def), "test-secret", "", []string{"R8IM_TEST_SECRET"}, tt.redact, "a test secret")
			if s != tt.def {
				t.Errorf("value = %q, want the default %q", s, tt.def)
			}
			if f := b.fs.Lookup("test-secret"); strings.Contains(f.DefValue, tt.secret) {
				t.Errorf("DefValue = %q shows the secret", f.DefValue)
			}
			if usage := b.fs.FlagUsages(); strings.Contains(usage, tt.secret) {
				t.Errorf("usage shows the default secret:\n%s", usage)
			}
		})
	}
}

// Every flag name a Validate method passes to problem must be bound; lookup
// panics otherwise.
func TestProblemNamesAreBound(t *testing.T) {
	w := NewWorker()
	for _, name := range []string{
		"redis-url", "registry", "docker-config", "s3-endpoint", "s3-chunk-size", "s3-concurrency",
		"log-level", "log-format", "concurrency", "queues", "shutdown-timeout", "http-addr", "record-ttl",
	} {
		p := w.b.problem(name, "x")
		if !strings.Contains(p.Setting, "--"+name) {
			t.Errorf("problem(%q).Setting = %q, want it to name --%s", name, p.Setting, name)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("lookup of an unbound name did not panic")
		}
	}()
	w.b.lookup("no-such-setting")
}

func TestSettingSource(t *testing.T) {
	tests := []struct {
		s    setting
		want string
	}{
		{setting{flag: "s3-endpoint", env: []string{"AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"}},
			"AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL or --s3-endpoint"},
		{setting{env: []string{"AWS_ACCESS_KEY_ID"}}, "AWS_ACCESS_KEY_ID"},
		{setting{flag: "only-flag"}, "--only-flag"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.s.source(); got != tt.want {
				t.Errorf("source() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRedactValue(t *testing.T) {
	tests := []struct {
		v      string
		r      redaction
		want   string
		hidden string
	}{
		{"", secret, "", ""},
		{"", urlSecret, "", ""},
		{"tok-81c2", plain, "tok-81c2", ""},
		{"tok-81c2", secret, "REDACTED", "tok-81c2"},
		{"redis://:pw-81c2@h:6379/0", urlSecret, "redis://:REDACTED@h:6379/0", "pw-81c2"},
	}
	for _, tt := range tests {
		got := redactValue(tt.v, tt.r)
		if got != tt.want {
			t.Errorf("redactValue(%q, %d) = %q, want %q", tt.v, tt.r, got, tt.want)
		}
		if tt.hidden != "" && strings.Contains(got, tt.hidden) {
			t.Errorf("redactValue(%q, %d) = %q keeps %q", tt.v, tt.r, got, tt.hidden)
		}
	}
}
