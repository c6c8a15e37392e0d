// Package untrusted makes text and URLs written by a remote party safe to
// store, log, print on a terminal or return from an HTTP answer.
//
// Anything a registry, weights host, callback receiver or event sender wrote
// (an error body, a header, a URL with a presigned query string) goes through
// Text or URL before it reaches a record, stderr or a response.
package untrusted

import (
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxText is the default cap, in bytes, on remote text kept by Text.
const MaxText = 512

// truncated marks text cut by Text.
const truncated = "…[truncated]"

// Text returns s with terminal escape sequences and control characters
// removed (newlines and tabs become spaces), invalid UTF-8 replaced, and at
// most max bytes kept (MaxText when max <= 0), cut on a rune boundary.
func Text(s string, max int) string {
	if max <= 0 {
		max = MaxText
	}
	var b strings.Builder
	b.Grow(min(len(s), max+len(truncated)))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == 0x1b: // ESC: drop the whole escape sequence
			i += escapeLen(s[i:])
			continue
		case r == '\n' || r == '\r' || r == '\t':
			r = ' '
		case r == utf8.RuneError && size == 1:
			r = '\uFFFD'
		case unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Bidi_Control, r):
			i += size
			continue
		}
		if b.Len()+utf8.RuneLen(r) > max {
			b.WriteString(truncated)
			break
		}
		b.WriteRune(r)
		i += size
	}
	return b.String()
}

// escapeLen is the length of the escape sequence at the start of s (which
// starts with ESC): CSI (ESC [ … final byte), OSC/DCS/APC/PM/SOS (up to BEL
// or ESC \), or ESC and one more byte.
func escapeLen(s string) int {
	if len(s) < 2 {
		return len(s)
	}
	switch s[1] {
	case '[':
		for j := 2; j < len(s); j++ {
			if s[j] >= 0x40 && s[j] <= 0x7e {
				return j + 1
			}
		}
		return len(s)
	case ']', 'P', '_', '^', 'X':
		for j := 2; j < len(s); j++ {
			if s[j] == 0x07 {
				return j + 1
			}
			if s[j] == 0x1b && j+1 < len(s) && s[j+1] == '\\' {
				return j + 2
			}
		}
		return len(s)
	}
	return 2
}

// URL returns raw without its user info, query string and fragment: what
// may be shown of a presigned or credentialed address. Text that does not
// parse as a URL is returned through Text, cut at its first '?'.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.IndexByte(raw, '?'); i >= 0 {
			raw = raw[:i]
		}
		return Text(raw, 0)
	}
	u.User = nil
	u.RawQuery = ""
	u.ForceQuery = false
	u.Fragment = ""
	u.RawFragment = ""
	return Text(u.String(), 2048)
}
