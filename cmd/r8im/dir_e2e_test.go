package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/r8im/r8im/internal/testenv"
)

// writeTree writes files (relative path → content) under a new directory,
// in the given order, plus a symlink cfg -> config.json.
func writeTree(t *testing.T, files [][2]string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range files {
		p := filepath.Join(dir, f[0])
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f[1]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("config.json", filepath.Join(dir, "cfg")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestAffixDir: `r8im affix --dir` publishes a directory as if it were
// tarred in path order: the files land under the target byte for byte, the
// same tree written in another order gives the same image, and what a
// tarball may not hold (a fifo) is refused by name.
func TestAffixDir(t *testing.T) {
	reg := testenv.Registry(t)
	base := testenv.PushBase(t, reg.Host, "base/dir", testenv.OCI)
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	files := [][2]string{
		{"config.json", `{"model": "x"}`},
		{"model-00001-of-00002.safetensors", strings.Repeat("a", 300<<10)},
		{"model-00002-of-00002.safetensors", strings.Repeat("b", 200<<10)},
		{"tokenizer/vocab.txt", "hello\nworld\n"},
	}
	reversed := [][2]string{files[3], files[2], files[1], files[0]}
	var refs []string
	for i, tree := range [][][2]string{files, reversed} {
		dir := writeTree(t, tree)
		stdout, stderr, err := r8im(t, nil, "affix", "--base", base.String(), "--dest", reg.Host+"/models/dir",
			"--dir", dir, "--created", "2026-11-01T12:00:00Z")
		if err != nil {
			t.Fatalf("affix --dir (%d): %v\n%s", i, err, stderr)
		}
		refs = append(refs, strings.TrimSpace(stdout))
	}
	if refs[0] != refs[1] {
		t.Errorf("the same tree written in another order gave %s and %s", refs[0], refs[1])
	}
	root := testenv.Unpack(t, refs[0], nil)
	for _, f := range files {
		got, err := os.ReadFile(filepath.Join(root, "src/weights", f[0]))
		if err != nil || string(got) != f[1] {
			t.Fatalf("%s in the image: %d bytes, %v", f[0], len(got), err)
		}
	}
	if l, err := os.Readlink(filepath.Join(root, "src/weights/cfg")); err != nil || l != "config.json" {
		t.Errorf("cfg in the image -> %q, %v; want the symlink kept", l, err)
	}

	bad := writeTree(t, files[:1])
	if err := syscall.Mkfifo(filepath.Join(bad, "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := r8im(t, nil, "affix", "--base", base.String(), "--dest", reg.Host+"/models/dir-bad", "--dir", bad)
	if err == nil || !strings.Contains(err.Error()+stderr, "pipe") {
		t.Errorf("a directory holding a fifo: %v\n%s; want it refused, naming the fifo", err, stderr)
	}
	if _, _, err := r8im(t, nil, "affix", "--base", base.String(), "--dest", reg.Host+"/models/x", "--dir", bad, "--tar", "w.tar"); err == nil || !strings.Contains(err.Error(), "--tar and --dir") {
		t.Errorf("--tar with --dir: %v; want refused", err)
	}
}
