package cli

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/r8im/r8im/imageops"
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

// TestEveryRemedyHasAHint: each imageops.Remedy is told to r8im's users in
// their settings' names, and an error that has a remedy gets the hint once.
func TestEveryRemedyHasAHint(t *testing.T) {
	for _, r := range []imageops.Remedy{
		imageops.RemedyCredentials, imageops.RemedyRootCAs, imageops.RemedyMaxManifestSize,
		imageops.RemedyMaxWeightsSize, imageops.RemedyMaxTarEntries, imageops.RemedyMaxNameLength,
		imageops.RemedyPlatform, imageops.RemedyAllowOutsideTarget,
	} {
		if h, ok := hints[r]; !ok || !strings.Contains(h.cli, "--") {
			t.Errorf("remedy %q has no CLI hint naming a flag: %+v", r, h)
		}
	}
	err := fmt.Errorf("pushing: %w", imageops.ErrUnauthorized)
	got := WithHint(WithHint(err))
	if !errors.Is(got, imageops.ErrUnauthorized) || strings.Count(got.Error(), "hint:") != 1 || !strings.Contains(got.Error(), "COG_TOKEN") {
		t.Errorf("WithHint twice = %q; want the error, one hint naming COG_TOKEN", got)
	}
	if w := WorkerHint(err); strings.Contains(w, "--") || !strings.Contains(w, "COG_TOKEN") {
		t.Errorf("WorkerHint = %q; want variables, no flags", w)
	}
	if plain := errors.New("x"); WithHint(plain) != plain {
		t.Errorf("an error without remedies changed")
	}
}
