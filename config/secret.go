package config

import (
	"encoding/json"
	"log/slog"
)

// Secret is a credential (a token, a secret key). Every way of printing it —
// fmt's %v, %+v, %#v and %s, slog, encoding/json — shows "REDACTED", so a
// Config or any struct holding one can be logged safely. Convert with
// string(s) at the one place the credential is used.
type Secret string

const redactedText = "REDACTED"

func (s Secret) mask() string {
	if s == "" {
		return ""
	}
	return redactedText
}

func (s Secret) String() string                  { return s.mask() }
func (s Secret) GoString() string                { return `"` + s.mask() + `"` }
func (s Secret) LogValue() slog.Value            { return slog.StringValue(s.mask()) }
func (s Secret) MarshalJSON() ([]byte, error)    { return json.Marshal(s.mask()) }
func (s SecretURL) String() string               { return RedactURL(string(s)) }
func (s SecretURL) GoString() string             { return `"` + s.String() + `"` }
func (s SecretURL) LogValue() slog.Value         { return slog.StringValue(s.String()) }
func (s SecretURL) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// SecretURL is a URL that may carry a password (REDIS_URL). It prints with
// the password masked and the rest readable; string(u) gives the real URL.
type SecretURL string
