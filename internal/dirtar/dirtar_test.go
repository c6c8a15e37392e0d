package dirtar

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/r8im/r8im/internal/testenv"
)

func TestWriteOrderLinksAndChanges(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"b", "a.txt", "a/z", "a/y/x"} {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../../etc/passwd", filepath.Join(dir, "l")); err != nil {
		t.Fatal(err)
	}
	rc, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range testenv.TarMembers(t, rc) {
		got = append(got, h.Name)
		if h.Name == "l" && (h.Typeflag != tar.TypeSymlink || h.Linkname != "../../etc/passwd") {
			t.Errorf("the symlink was followed or changed: %+v", h.Header)
		}
		if h.Uname != "" || h.Gname != "" {
			t.Errorf("%s carries owner names %q/%q", h.Name, h.Uname, h.Gname)
		}
	}
	if want := "a/ a/y/ a/y/x a/z a.txt b l"; strings.Join(got, " ") != want {
		t.Errorf("entries %q; want %q (each directory's entries by name)", strings.Join(got, " "), want)
	}

	// A file that grows while it is read fails the stream, for good.
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	w := &growOnWrite{path: filepath.Join(dir, "a/y/x")}
	err = Write(w, root)
	var p interface{ Permanent() bool }
	if !errors.Is(err, ErrChanged) || !errors.As(err, &p) || !p.Permanent() || !strings.Contains(err.Error(), "a/y/x") {
		t.Errorf("a file changed while read: %v; want ErrChanged naming it, permanent", err)
	}
}

// growOnWrite appends to path when its header is written: the file changes
// between its Lstat and its read.
type growOnWrite struct {
	path string
	done bool
}

func (g *growOnWrite) Write(p []byte) (int, error) {
	if !g.done && bytes.Contains(p, []byte("a/y/x")) {
		g.done = true
		f, err := os.OpenFile(g.path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return 0, err
		}
		_, _ = f.WriteString("more")
		f.Close()
	}
	return len(p), nil
}
