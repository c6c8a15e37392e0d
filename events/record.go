package events

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"

	"github.com/r8im/r8im/internal/untrusted"
	"github.com/r8im/r8im/storage"
)

// PublicRecord is what GET /v1/events/{id} shows of a record: a copy in
// which every URL (callback_url, the weights URL among the inputs, any URL
// inside last_error) has lost its query, fragment and user info — presigned
// credentials live there — and last_error, which may quote what a registry
// or weights host answered, is passed through untrusted.Text (no control
// characters or terminal escapes, at most untrusted.MaxText bytes).
// Metadata is returned as the event's sender wrote it.
func PublicRecord(rec *storage.Record) *storage.Record {
	out := *rec
	if out.CallbackURL != "" {
		out.CallbackURL = untrusted.URL(out.CallbackURL)
	}
	out.Inputs = publicInputs(out.Inputs)
	out.LastError = PublicText(out.LastError)
	return &out
}

// urlInText finds URLs in free text: a scheme, "://" and everything up to
// a space or a quote.
var urlInText = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s"'<>]+`)

// PublicText is remote-written text made safe to return or print: control
// characters and escape sequences removed, at most untrusted.MaxText bytes,
// and every URL in it without its query, fragment or user info.
func PublicText(s string) string {
	if s == "" {
		return ""
	}
	return urlInText.ReplaceAllStringFunc(untrusted.Text(s, 0), untrusted.URL)
}

// publicInputs rewrites every string holding "://" in a task payload with
// untrusted.URL. Inputs that are not a JSON object are dropped: the
// receiver cannot tell what they hold.
func publicInputs(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return raw
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		return nil
	}
	out, err := json.Marshal(publicValue(v))
	if err != nil {
		return nil
	}
	return out
}

func publicValue(v any) any {
	switch t := v.(type) {
	case string:
		if strings.Contains(t, "://") {
			return untrusted.URL(t)
		}
	case map[string]any:
		for k, e := range t {
			t[k] = publicValue(e)
		}
	case []any:
		for i, e := range t {
			t[i] = publicValue(e)
		}
	}
	return v
}
