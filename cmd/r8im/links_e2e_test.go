package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/r8im/r8im/internal/testenv"
)

// TestAffixCLIRefusesLinkAttacks runs `r8im affix` on the tarballs of
// issues 12 and 15: each is refused, naming the entries, and nothing is
// pushed.
func TestAffixCLIRefusesLinkAttacks(t *testing.T) {
	reg := testenv.Registry(t)
	base := testenv.PushBase(t, reg.Host, "base/cli-links", testenv.OCI)
	for _, tc := range []struct {
		name    string
		entries []testenv.Entry
		say     []string
	}{
		{"passwd-through-s", []testenv.Entry{testenv.File("src/weights/model.bin", "w"), testenv.Symlink("src/weights/s", "."),
			testenv.Symlink("src/weights/e", "s/s/s/../../../etc/passwd")},
			[]string{"src/weights/e: it is a symlink", "resolves to /etc/passwd (following the symlink /src/weights/s)"}},
		{"predict-through-code", []testenv.Entry{testenv.File("src/weights/model.bin", "w"), testenv.Symlink("src/weights/s", "."),
			testenv.Symlink("src/weights/code", "s/.."), testenv.File("src/weights/code/predict.py", "pwned")},
			[]string{"src/weights/code: it is a symlink", "src/weights/code/predict.py: its path goes through /src/weights/code"}},
		{"cron-through-dotdot", []testenv.Entry{testenv.File("src/weights/../../etc/cron.d/x", "* * * * * root pwn")},
			[]string{`src/weights/../../etc/cron.d/x: its path climbs out of its first directory through ".."`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "w.tar")
			if err := os.WriteFile(p, testenv.Tar(t, tc.entries...), 0o644); err != nil {
				t.Fatal(err)
			}
			dest := reg.Host + "/models/cli-" + tc.name + ":v1"
			stdout, stderr, err := r8im(t, nil, "affix", "--base", base.String(), "--dest", dest, "--tar", p)
			if err == nil {
				t.Fatalf("affix accepted it:\n%s%s", stdout, stderr)
			}
			for _, s := range tc.say {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("the error does not say %q:\n%v", s, err)
				}
			}
			tag, _ := name.ParseReference(dest)
			if _, herr := remote.Head(tag); herr == nil {
				t.Errorf("a refused affix left %s in the registry", tag)
			}
		})
	}
}

// TestExtractCLISubstitutedBlobLeavesNothing runs `r8im extract --dir`
// against a registry that serves another tarball for the weights layer:
// the digest check fails and --dir holds nothing new.
func TestExtractCLISubstitutedBlobLeavesNothing(t *testing.T) {
	reg := testenv.Registry(t)
	img, _ := testenv.WeightsImage(t, testenv.OCI, testenv.Amd64, testenv.R8imWeights, testenv.WeightsSpec{Files: 1, Seed: 90})
	dig := testenv.Push(t, reg.Host+"/models/cli-substituted:latest", img)
	mf, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	layer := mf.Layers[len(mf.Layers)-1]
	proxy := testenv.SubstituteBlobs(t, reg.Host)
	planted := testenv.Tar(t, testenv.File("src/weights/planted.bin", "planted by the registry"))
	proxy.Substitute(layer.Digest.String(), testenv.GzipOfSize(t, planted, int(layer.Size)))

	dir := filepath.Join(t.TempDir(), "weights")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := r8im(t, nil, "extract", strings.Replace(dig.String(), reg.Host, proxy.Host, 1), "--dir", dir)
	if err == nil || !strings.Contains(err.Error(), "error verifying sha256 checksum") {
		t.Fatalf("extract = %v; want the digest check to fail\n%s", err, stderr)
	}
	if proxy.Served(layer.Digest.String()) == 0 {
		t.Fatal("the proxy did not substitute the layer")
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("--dir holds %v (%v) after the failure; want nothing", entries, err)
	}
}
