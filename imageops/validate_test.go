package imageops_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/r8im/r8im/imageops"
)

func TestCheckInputs(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string // "" for no error
	}{
		{"gzip default", imageops.CheckLevel(imageops.Gzip, 0), ""},
		{"gzip huffman", imageops.CheckLevel(imageops.Gzip, -2), ""},
		{"gzip -1", imageops.CheckLevel(imageops.Gzip, -1), "gzip level -1"},
		{"zstd 23", imageops.CheckLevel(imageops.Zstd, 23), "zstd level 23"},
		{"none with a level", imageops.CheckLevel(imageops.Uncompressed, 1), "level 1"},
		{"target default", imageops.CheckTarget(""), ""},
		{"target climbing", imageops.CheckTarget("/src/../etc"), "clean absolute"},
		{"target trailing slash", imageops.CheckTarget("/src/weights/"), "clean absolute"},
		{"target root", imageops.CheckTarget("/"), "below /"},
		{"dest with tag", imageops.CheckDestination("r8.im/acme/ft:v1"), ""},
		{"dest localhost", imageops.CheckDestination("localhost:5000/acme/ft"), ""},
		{"dest digest", imageops.CheckDestination("r8.im/acme/ft@sha256:" + strings.Repeat("a", 64)), "digest"},
		{"dest without host", imageops.CheckDestination("acme/ft"), "registry host"},
		{"dest bad tag", imageops.CheckDestination("r8.im/acme/ft:-x"), "not a tag"},
		{"dest dotdot", imageops.CheckDestination("r8.im/acme/../ft"), "path component"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			switch {
			case tc.want == "" && tc.err != nil:
				t.Fatalf("refused: %v", tc.err)
			case tc.want != "" && (tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) || !errors.Is(tc.err, imageops.ErrInvalid)):
				t.Fatalf("error %v; want an ErrInvalid saying %q", tc.err, tc.want)
			}
		})
	}
	for ref, want := range map[string]string{
		"r8.im/acme/base:v1": "", "r8.im/acme/base": "not an image reference", "acme/base:v1": "registry host",
	} {
		_, err := imageops.CheckReference(ref)
		if (want == "") != (err == nil) || want != "" && !strings.Contains(err.Error(), want) {
			t.Errorf("CheckReference(%q) = %v; want %q", ref, err, want)
		}
	}
}
