package imageops_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

// linkAttacks are the tarballs of issue 12 (each link inside the target by
// its text, outside once resolved through another) and of issue 15 (a name
// climbing with ".." that used to be moved under the target), with the
// entries each must be refused for.
func linkAttacks(t *testing.T) map[string]struct {
	tar     []byte
	refused []string
} {
	return map[string]struct {
		tar     []byte
		refused []string
	}{
		"passwd through s": {makeTar(t, tarReg("src/weights/model.bin", "w"), tarSymlink("src/weights/s", "."),
			tarSymlink("src/weights/e", "s/s/s/../../../etc/passwd")), []string{"src/weights/e"}},
		"predict.py through code": {makeTar(t, tarReg("src/weights/model.bin", "w"), tarSymlink("src/weights/s", "."),
			tarSymlink("src/weights/code", "s/.."), tarReg("src/weights/code/predict.py", "pwned")), []string{"src/weights/code", "src/weights/code/predict.py"}},
		"cron through dotdot": {makeTar(t, tarReg("src/weights/../../etc/cron.d/x", "* * * * * root pwn")), []string{"src/weights/../../etc/cron.d/x"}},
	}
}

// TestAffixRefusesLinkAttacks affixes each attack onto a base in a real
// registry, as `r8im affix` and the worker do: refused, permanently, with
// the entries named, and nothing pushed.
func TestAffixRefusesLinkAttacks(t *testing.T) {
	reg := testenv.Registry(t)
	base := testenv.PushBase(t, reg.Host, "base/links", testenv.OCI)
	i := 0
	for label, attack := range linkAttacks(t) {
		i++
		t.Run(label, func(t *testing.T) {
			dest := reg.Host + "/models/links-" + string(rune('a'+i)) + ":v1"
			_, err := imageops.Affix(context.Background(), imageops.AffixRequest{
				Base: base.String(), Dest: dest, Created: created,
				Weights: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(attack.tar)), nil },
			})
			var pe *imageops.PolicyError
			if !errors.As(err, &pe) || !imageops.IsPermanent(err) {
				t.Fatalf("Affix = %v; want a permanent *PolicyError", err)
			}
			var got []string
			for _, v := range pe.Violations {
				got = append(got, v.Entry)
				if !strings.Contains(err.Error(), "\n  - "+v.Entry+": ") {
					t.Errorf("the error does not name %s:\n%v", v.Entry, err)
				}
			}
			if strings.Join(got, ",") != strings.Join(attack.refused, ",") {
				t.Errorf("refused %q, want %q", got, attack.refused)
			}
			tag, _ := name.ParseReference(dest)
			if _, herr := remote.Head(tag); herr == nil {
				t.Errorf("a refused affix left %s in the registry", tag)
			}
		})
	}
}

// TestAffixTrickyLinksStayInTarget affixes weights whose links go through
// other links, climb out of the target and back, are absolute or dangle —
// all allowed — and unpacks the image with skopeo + umoci: no file lands
// outside /src/weights, the base's files are untouched, and every symlink,
// resolved in the unpacked tree as the kernel would in the container,
// stays in /src/weights.
func TestAffixTrickyLinksStayInTarget(t *testing.T) {
	reg := testenv.Registry(t)
	base := testenv.PushBase(t, reg.Host, "base/tricky", testenv.Docker)
	tricky := makeTar(t,
		tarReg("src/weights/model.bin", "weights"),
		tarDir("src/weights/v2/"), tarReg("src/weights/v2/config.json", "{}"),
		tarSymlink("src/weights/latest", "v2"),
		tarSymlink("src/weights/cfg", "latest/config.json"),
		tarSymlink("src/weights/up", "../weights/model.bin"),
		tarSymlink("src/weights/abs", "/src/weights/v2/config.json"),
		tarSymlink("src/weights/v2/back", "../latest/../model.bin"),
		tarHardlink("src/weights/cfg2", "src/weights/latest/config.json"),
		tarHardlink("src/weights/cfg3", "src/weights/cfg"),
		tarReg("src/weights/a/b/../c.bin", "c"),
		tarSymlink("src/weights/later", "future/x"),
	)
	res, err := imageops.Affix(context.Background(), imageops.AffixRequest{
		Base: base.String(), Dest: reg.Host + "/models/tricky:v1", Created: created,
		Weights: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tricky)), nil },
	})
	if err != nil {
		t.Fatalf("Affix: %v", err)
	}
	baseRoot := testenv.Unpack(t, base.String(), nil)
	root := testenv.Unpack(t, res.Ref.String(), nil)

	baseFiles := map[string]string{}
	walkTree(t, baseRoot, func(p string, fi fs.FileInfo) {
		baseFiles[p] = describe(t, baseRoot, p, fi)
	})
	var links []string
	walkTree(t, root, func(p string, fi fs.FileInfo) {
		if want, ok := baseFiles[p]; ok {
			if got := describe(t, root, p, fi); got != want && p != "src" {
				t.Errorf("/%s changed: %s, was %s", p, got, want)
			}
			return
		}
		if p != "src/weights" && !strings.HasPrefix(p, "src/weights/") {
			t.Errorf("/%s is outside the target /src/weights", p)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			links = append(links, p)
		}
	})
	for p := range baseFiles {
		if _, err := os.Lstat(filepath.Join(root, p)); err != nil {
			t.Errorf("/%s of the base is gone: %v", p, err)
		}
	}
	if len(links) != 7 {
		t.Errorf("symlinks %q; want the 7 of the tarball (the hard link cfg3 is one too)", links)
	}
	for _, p := range links {
		got, err := resolveInRoot(root, p)
		if err != nil {
			t.Errorf("/%s: %v", p, err)
			continue
		}
		if got != "src/weights" && !strings.HasPrefix(got, "src/weights/") {
			t.Errorf("/%s resolves to /%s, outside the target", p, got)
		}
	}
	if b, err := os.ReadFile(filepath.Join(root, "src/weights/a/c.bin")); err != nil || string(b) != "c" {
		t.Errorf("src/weights/a/c.bin = %q, %v", b, err)
	}
}

func walkTree(t *testing.T, root string, f func(p string, fi fs.FileInfo)) {
	t.Helper()
	err := filepath.Walk(root, func(p string, fi fs.FileInfo, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		f(filepath.ToSlash(rel), fi)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// describe is a file's type and content, a symlink's target.
func describe(t *testing.T, root, p string, fi fs.FileInfo) string {
	t.Helper()
	full := filepath.Join(root, p)
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		l, _ := os.Readlink(full)
		return "symlink to " + l
	case fi.IsDir():
		return "directory"
	}
	b, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	return "file " + string(b)
}

// resolveInRoot resolves the path p (relative to root) on the real tree as
// the kernel does inside a container whose root is root: absolute symlinks
// start at root, ".." at root stays there; at most 40 symlinks. Missing
// names are kept as they are (nothing beyond them can be a link).
func resolveInRoot(root, p string) (string, error) {
	cur, rest, links := ".", strings.Split(p, "/"), 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, c)
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > 40 {
			return "", errors.New("too many levels of symbolic links")
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(target, "/") {
			cur = "."
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return cur, nil
}
