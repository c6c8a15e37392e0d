package storage

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/internal/testenv"
)

// TestDirSource: file:///dir/ (a trailing slash) serves the directory as a
// tar in path order; without the slash a directory is refused with the hint.
func TestDirSource(t *testing.T) {
	s, _ := testSources(t, config.S3{ChunkSize: 1 << 20, Concurrency: 2})
	dir := t.TempDir()
	files := map[string]string{"b.safetensors": strings.Repeat("b", 70000), "a/config.json": "{}", "c.txt": "c"}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rc, size, err := s.Open(context.Background(), "file://"+dir+"/")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if size != -1 {
		t.Errorf("size %d; a directory's tar size is unknown until read", size)
	}
	var names []string
	for _, m := range testenv.TarMembers(t, rc) {
		names = append(names, m.Name)
		if m.Typeflag == tar.TypeReg && m.Body != files[m.Name] {
			t.Errorf("%s: %d bytes, want %d", m.Name, len(m.Body), len(files[m.Name]))
		}
	}
	if got := strings.Join(names, " "); got != "a/ a/config.json b.safetensors c.txt" {
		t.Errorf("entries %q; want path order", got)
	}

	_, _, err = s.Open(context.Background(), "file://"+dir)
	if !errors.Is(err, ErrInvalidURL) || !strings.Contains(err.Error(), "end the URL with /") {
		t.Errorf("a directory without the slash: %v", err)
	}
}
