package imageops

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseReference feeds arbitrary strings to the reference parsers that
// every verb runs on user input. Properties: no panic; every failure is
// ErrInvalid (the worker turns those into permanent failures); a parsed
// reference prints a form that parses back to itself; a destination never
// carries a digest.
func FuzzParseReference(f *testing.F) {
	for _, s := range []string{
		"r8.im/acme/sdxl@sha256:d0b01c9e0d4bc94c8d642064b349261c0d5147a784dab8011c0adb77fe0b27d3",
		"r8.im/acme/sdxl:v1", "acme/sdxl", "localhost:5000/a/b/c:tag", "127.0.0.1:5000/x",
		"sdxl", "", " ", "UPPER/case", "a/b@sha256:short", "a:b:c", "[::1]:5000/x:y",
		"host/repo:" + strings.Repeat("t", 200), "ho st/repo", "r8.im/a/b:tag@sha256:" + strings.Repeat("0", 64),
	} {
		f.Add(s)
	}
	o := makeOptions(nil)
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := o.parseRef(s, "base")
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("parseRef(%q) error %v is not ErrInvalid", s, err)
			}
		} else {
			again, err := o.parseRef(ref.String(), "base")
			if err != nil || again.String() != ref.String() {
				t.Fatalf("parseRef(%q) = %s, which parses back as %v, %v", s, ref, again, err)
			}
		}
		repo, tag, err := o.parseDest(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("parseDest(%q) error %v is not ErrInvalid", s, err)
			}
			return
		}
		if strings.Contains(repo.String(), "@") || strings.Contains(tag, "@") {
			t.Fatalf("parseDest(%q) = %s, %q: a destination carries a digest", s, repo, tag)
		}
	})
}
