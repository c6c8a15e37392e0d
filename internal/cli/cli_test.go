package cli

import (
	"strings"
	"testing"
)

func TestSafeText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"invalid configuration (2 problems):\n  - A: x\n  - B: y", "invalid configuration (2 problems):\n  - A: x\n  - B: y"},
		{"fetching base: MANIFEST_UNKNOWN: \x1b]0;pwned\x07\x1b[2J\x1b[31mowned\r", "fetching base: MANIFEST_UNKNOWN: owned "},
		{"bell\x07 and\tnul\x00", "bell and nul"},
	} {
		if got := SafeText(tc.in); got != tc.want {
			t.Errorf("SafeText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	long := SafeText(strings.Repeat("x\n", 1000))
	if n := strings.Count(long, "\n"); n != 100 {
		t.Errorf("%d lines kept of 1000, want 100 and a mark", n)
	}
}
