package jobs

import (
	"strings"
	"testing"
)

func TestLastError(t *testing.T) {
	long := strings.Repeat("a", 300000)
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"escapes", "fetching base: \x1b]0;pwned\x07\x1b[31mowned\r\nnext", []string{"fetching base: owned  next"}},
		{"a long quoted input", `base: "r8.im/` + long + `:v1" is not an image reference (` + `"r8.im/` + long + `:v1": bad)`,
			[]string{`base: "r8.im/aaa`, `…[`, `aaa:v1" is not an image reference`, `": bad)`}},
		{"long unquoted text", strings.Repeat("x", 10000) + " the reason", []string{"xxx", "bytes cut]…", "the reason"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := lastError(tc.in)
			if len(got) > maxLastError+64 {
				t.Errorf("%d bytes, want at most about %d", len(got), maxLastError)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("lastError = %.400q; lacks %q", got, w)
				}
			}
			if strings.ContainsAny(got, "\x1b\x07\r\n") {
				t.Errorf("lastError = %q holds control characters", got)
			}
		})
	}
}
