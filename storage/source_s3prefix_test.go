package storage

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/r8im/r8im/internal/testenv"
)

// TestS3Prefix: s3://bucket/prefix/ serves every object under the prefix as
// a tar, names relative to it, in the order a directory walk of the same
// tree gives (file:///dir/), folder markers skipped; an empty prefix is not
// found.
func TestS3Prefix(t *testing.T) {
	srv := testenv.S3(t)
	s, _ := testSources(t, s3Config(srv, "", testChunk, 4))
	dir := t.TempDir()
	files := map[string]string{
		"a.txt":                   "a",
		"a/config.json":           "{}",
		"model-00001.safetensors": strings.Repeat("w", 3*testChunk+5),
		"tok/vocab.txt":           "v",
	}
	var url string
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		url = srv.PutObject(t, "runs/9/"+name, p)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	srv.PutObject(t, "runs/9/tok/", empty) // a folder marker
	prefix := url[:strings.Index(url, "runs/9/")+len("runs/9/")]

	read := func(u string) []string {
		t.Helper()
		rc, _, err := s.Open(context.Background(), u)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		var names []string
		for _, m := range testenv.TarMembers(t, rc) {
			names = append(names, m.Name)
			if m.Typeflag == tar.TypeReg && m.Body != files[m.Name] {
				t.Errorf("%s: %d bytes, want %d", m.Name, len(m.Body), len(files[m.Name]))
			}
		}
		return names
	}
	fromS3, fromDir := read(prefix), read("file://"+dir+"/")
	if strings.Join(fromS3, " ") != strings.Join(fromDir, " ") || len(fromS3) != 6 {
		t.Errorf("S3 prefix entries %q; the same tree as a directory %q", fromS3, fromDir)
	}
	if _, _, err := s.Open(context.Background(), prefix+"none/"); !errors.Is(err, ErrNotFound) {
		t.Errorf("an empty prefix: %v; want not found", err)
	}
}
