package archtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	docRef    = regexp.MustCompile(`docs/[A-Za-z0-9_.-]+\.(md|json)`)
	designRef = regexp.MustCompile(`(^|[^/A-Za-z])DESIGN\.md`)
)

// TestDocumentsReferencedExist: a clone is self-contained. Every docs/…
// file that code or documentation names is in the repository, and nothing
// names a DESIGN.md outside it (the design is docs/design.md).
func TestDocumentsReferencedExist(t *testing.T) {
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("finding the repository: %v", err)
	}
	root := strings.TrimSpace(string(top))
	out, err := exec.Command("git", "-C", root, "ls-files", "*.go", "*.md", "Makefile", "Dockerfile", "*.yml").Output()
	if err != nil {
		t.Fatalf("listing files: %v", err)
	}
	files := strings.Fields(string(out))
	if len(files) < 50 {
		t.Fatalf("only %d files listed; is this the repository?", len(files))
	}
	for _, f := range files {
		body, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, ref := range docRef.FindAllString(string(body), -1) {
			if _, err := os.Stat(filepath.Join(root, ref)); err != nil {
				t.Errorf("%s names %s, which is not in the repository", f, ref)
			}
		}
		if f != "internal/archtest/docs_test.go" && designRef.MatchString(string(body)) {
			t.Errorf("%s names a DESIGN.md; the design is docs/design.md", f)
		}
	}
}
