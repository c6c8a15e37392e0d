package untrusted

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestText(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "manifest unknown", "manifest unknown"},
		{"newlines", "a\nb\r\nc\td", "a b  c d"},
		{"csi", "red \x1b[31mERROR\x1b[0m done", "red ERROR done"},
		{"osc title", "x\x1b]0;pwned\x07y", "xy"},
		{"osc st", "x\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\y", "xlinky"},
		{"c0 and c1", "a\x00b\x7fc\u0085d\u009be", "abcde"},
		{"bidi", "abc\u202edcba", "abcdcba"},
		{"bad utf8", "a\xffb", "a\uFFFDb"},
		{"lone esc", "a\x1b", "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Text(tc.in, 0); got != tc.want {
				t.Errorf("Text(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestTextCaps(t *testing.T) {
	got := Text(strings.Repeat("é", 1000), 101)
	if !strings.HasSuffix(got, truncated) || !utf8.ValidString(got) {
		t.Fatalf("cut text %q is not marked or not valid UTF-8", got)
	}
	if n := len(strings.TrimSuffix(got, truncated)); n > 101 || n < 99 {
		t.Errorf("kept %d bytes, want at most 101", n)
	}
	if got := Text(strings.Repeat("a", 10000), 0); len(got) != MaxText+len(truncated) {
		t.Errorf("default cap kept %d bytes", len(got))
	}
}

func TestURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://bucket.s3.example.com/w.tar?X-Amz-Signature=abc&X-Amz-Credential=k": "https://bucket.s3.example.com/w.tar",
		"https://user:pass@host/p#frag":                                              "https://host/p",
		"s3://bucket/key":                                                            "s3://bucket/key",
		"%zz?secret=1":                                                               "%zz",
	} {
		if got := URL(in); got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzText(f *testing.F) {
	f.Add("a\x1b[31mb\x1b]0;t\x07c", 20)
	f.Fuzz(func(t *testing.T, s string, max int) {
		got := Text(s, max)
		if !utf8.ValidString(got) {
			t.Fatalf("invalid UTF-8 out of %q", s)
		}
		for _, r := range got {
			if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
				t.Fatalf("control %U kept from %q", r, s)
			}
		}
		limit := max
		if limit <= 0 {
			limit = MaxText
		}
		if len(got) > limit+len(truncated) {
			t.Fatalf("%d bytes kept, cap %d", len(got), limit)
		}
	})
}
