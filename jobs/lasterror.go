package jobs

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/r8im/r8im/internal/untrusted"
)

// maxLastError caps a record's last_error, in bytes.
const maxLastError = 4096

// lastError is an error message fit for a record: escapes and control
// characters stripped (untrusted.Text); quoted inputs longer than 256 bytes
// shortened to their ends; and when still longer than maxLastError, its
// middle cut, so that what was being done and the reason both remain.
func lastError(msg string) string {
	s := shortenQuoted(untrusted.Text(msg, 3*len(msg)+1), 256)
	if len(s) <= maxLastError {
		return s
	}
	head, tail := s[:maxLastError/2], s[len(s)-maxLastError/2:]
	for len(head) > 0 && !utf8.ValidString(head) {
		head = head[:len(head)-1]
	}
	for len(tail) > 0 && !utf8.RuneStart(tail[0]) {
		tail = tail[1:]
	}
	return fmt.Sprintf("%s…[%d bytes cut]…%s", head, len(s)-len(head)-len(tail), tail)
}

// shortenQuoted shortens each double-quoted part of s (as %q writes them)
// longer than max to its first and last max/2 bytes.
func shortenQuoted(s string, max int) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '"')
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := i + 1
		for j < len(s) && s[j] != '"' {
			if s[j] == '\\' {
				j++
			}
			j++
		}
		if j >= len(s) { // unterminated: keep as is
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i+1])
		if q := s[i+1 : j]; len(q) > max {
			head, tail := q[:max/2], q[len(q)-max/2:]
			for len(head) > 0 && !utf8.ValidString(head) {
				head = head[:len(head)-1]
			}
			for len(tail) > 0 && !utf8.RuneStart(tail[0]) {
				tail = tail[1:]
			}
			fmt.Fprintf(&b, "%s…[%d bytes]…%s", head, len(q)-len(head)-len(tail), tail)
		} else {
			b.WriteString(q)
		}
		b.WriteByte('"')
		s = s[j+1:]
	}
}
