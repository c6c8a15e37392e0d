package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/r8im/r8im/internal/testenv"
)

// TestAffixedImageRuns: an image affixed by `r8im affix` runs. podman pulls
// it, and a command of the base image (busybox) prints the sha256 of every
// file under /src/weights, which must be the tarball's files, byte for byte.
func TestAffixedImageRuns(t *testing.T) {
	for _, rc := range testenv.Registries(t) {
		t.Run(rc.Name, func(t *testing.T) {
			reg := rc.Start(t)
			base := reg.Push(t, testenv.BaseNamespace+"/runnable:latest", testenv.RunnableBase(t, testenv.OCI))
			tarPath, files := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 3, FileSize: 1 << 20, Seed: 31})
			dest := reg.User.Repo("runs:v1")
			for _, kv := range reg.User.Env(t) {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			t.Setenv("XDG_CACHE_HOME", t.TempDir())
			args := []string{"affix", "--base", base.String(), "--dest", dest, "--tar", tarPath, "--compression", "zstd"}
			if reg.CA != nil {
				// Not SSL_CERT_FILE: Go reads it once per process, and
				// another test of this package may have loaded the roots.
				args = append(args, "--ca-file", reg.CA.File(t))
			}
			stdout, stderr, err := r8im(t, nil, args...)
			if err != nil {
				t.Fatalf("affix: %v\n%s", err, stderr)
			}
			ref := strings.TrimSpace(stdout)
			out := testenv.RunImageWith(t, testenv.RunOptions{DockerConfig: reg.User.DockerConfig(t)}, ref,
				"sh", "-c", "cd /src/weights && find . -type f | sort | xargs sha256sum")
			slices.SortFunc(files, func(a, b testenv.WeightsFile) int { return strings.Compare(a.Name, b.Name) })
			var want []string
			for _, f := range files {
				want = append(want, fmt.Sprintf("%s  ./%s", f.SHA256, f.Name))
			}
			got := strings.Split(strings.TrimSpace(out), "\n")
			if !slices.Equal(got, want) {
				t.Fatalf("in the running image:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
			}
		})
	}
}
