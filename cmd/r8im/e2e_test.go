package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

// r8im runs the CLI in-process and returns stdout and stderr.
func r8im(t *testing.T, stdin []byte, args ...string) (string, string, error) {
	t.Helper()
	// The environment is not the configuration here, but for the CA file
	// forEachRegistry sets: SSL_CERT_FILE alone would depend on test order
	// (Go reads it once per process).
	root := newRoot(func(k string) (string, bool) {
		if k == "R8IM_CA_FILE" {
			return os.LookupEnv(k)
		}
		return "", false
	})
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(bytes.NewReader(stdin))
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), errOut.String(), err
}

// forEachRegistry runs f in a subtest for each registry of
// testenv.Registries (distribution 2.8, v3 with token auth and TLS), with
// the environment the in-process r8im reads set for the test user:
// DOCKER_CONFIG and, for TLS, SSL_CERT_FILE and SSL_CERT_DIR
// (reg.User.Env), and a private XDG_CACHE_HOME. It uses t.Setenv, so these
// tests cannot run in parallel.
func forEachRegistry(t *testing.T, f func(t *testing.T, reg testenv.RegistryEnv)) {
	t.Helper()
	for _, rc := range testenv.Registries(t) {
		t.Run(rc.Name, func(t *testing.T) {
			reg := rc.Start(t)
			for _, kv := range reg.User.Env(t) {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			t.Setenv("XDG_CACHE_HOME", t.TempDir())
			if reg.CA != nil {
				t.Setenv("R8IM_CA_FILE", reg.CA.File(t))
			}
			f(t, reg)
		})
	}
}

func TestAffixLayersExtractRoundTrip(t *testing.T) {
	tarPath, files := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 2, Seed: 11})
	forEachRegistry(t, func(t *testing.T, reg testenv.RegistryEnv) {
		base := reg.SeedBase(t, "cli", testenv.Docker)
		dest := reg.User.Repo("models/cli:v1")

		stdout, stderr, err := r8im(t, nil, "affix", "--base", base.String(), "--dest", dest, "--tar", tarPath, "--created", "2026-01-02T03:04:05Z")
		if err != nil {
			t.Fatalf("affix: %v\n%s", err, stderr)
		}
		ref := strings.TrimSpace(stdout)
		if !strings.HasPrefix(ref, reg.User.Repo("models/cli@sha256:")) || strings.Count(stdout, "\n") != 1 {
			t.Fatalf("stdout = %q; want exactly the repo@sha256 line", stdout)
		}
		if !strings.Contains(stderr, "upload") || !strings.Contains(stderr, "took") {
			t.Errorf("stderr lacks progress and timings:\n%s", stderr)
		}
		if !strings.Contains(stderr, "layer 1/1  sha256:") || !strings.Contains(stderr, "weights: 1 layers (1 uploaded); read ") {
			t.Errorf("stderr lacks the weights layers' summary:\n%s", stderr)
		}

		// Same again with --json: same digest (reproducible), machine-readable;
		// the layer is known (layer-digest cache) and in the registry, so
		// nothing is read or sent.
		stdout, _, err = r8im(t, nil, "affix", "--base", base.String(), "--dest", dest, "--tar", tarPath, "--created", "2026-01-02T03:04:05Z", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var res imageops.AffixResult
		if err := json.Unmarshal([]byte(stdout), &res); err != nil {
			t.Fatalf("--json output: %v\n%s", err, stdout)
		}
		if res.Ref.String() != ref || res.Layer.Files != len(files) || len(res.Layers) != 1 || len(res.Stages) != 4 {
			t.Fatalf("--json result %+v; want ref %s, %d files in 1 layer, 4 stages timed", res, ref, len(files))
		}
		if l := res.Layers[0]; l.Source != imageops.LayerFound || !l.Cached || res.ReadBytes != 0 || res.Transfer.UploadedBytes != 0 {
			t.Fatalf("publishing the same tarball again: layer %+v, %d bytes read, %d sent; want it found in the registry through the cache, 0 read, 0 sent", l, res.ReadBytes, res.Transfer.UploadedBytes)
		}

		stdout, _, err = r8im(t, nil, "layers", ref, "--json")
		if err != nil {
			t.Fatal(err)
		}
		var layers []imageops.LayersResult
		if err := json.Unmarshal([]byte(stdout), &layers); err != nil {
			t.Fatal(err)
		}
		ls := layers[0].Layers
		if len(ls) != 4 || ls[3].Weights != imageops.MarkedR8im || ls[3].Digest != res.Layer.Digest {
			t.Fatalf("layers = %+v; want 3 base layers and our weights layer last", ls)
		}
		stdout, _, err = r8im(t, nil, "layers", ref)
		if err != nil || !strings.Contains(stdout, "COPY weights /src/weights # weights") {
			t.Fatalf("layers table (%v):\n%s", err, stdout)
		}

		dir := t.TempDir()
		if _, stderr, err := r8im(t, nil, "extract", ref, "--dir", dir, "--strip-target"); err != nil {
			t.Fatalf("extract: %v\n%s", err, stderr)
		}
		for _, f := range files {
			if got := testenv.FileSHA256(t, filepath.Join(dir, f.Name)); got != f.SHA256 {
				t.Fatalf("extracted %s: sha256 %s, want %s", f.Name, got, f.SHA256)
			}
		}
		out := filepath.Join(t.TempDir(), "w.tar")
		if _, _, err := r8im(t, nil, "extract", ref, "-o", out); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(out); err != nil || st.Size() == 0 {
			t.Fatalf("extract -o wrote nothing: %v", err)
		}
	})
}

func TestAffixCLIErrors(t *testing.T) {
	tarPath, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Seed: 12})
	forEachRegistry(t, func(t *testing.T, reg testenv.RegistryEnv) {
		base := reg.SeedBase(t, "clierr", testenv.OCI)
		m := reg.User.Repo("m")
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"affix", "--base", base.String(), "--dest", m, "--tar", "/nope.tar"}, "/nope.tar"},
			{[]string{"affix", "--base", base.String(), "--dest", m, "--tar", tarPath, "--compression", "lz4"}, "lz4"},
			{[]string{"affix", "--base", base.String(), "--dest", m, "--tar", tarPath, "--created", "yesterday"}, "RFC 3339"},
			{[]string{"affix", "--base", base.String(), "--dest", m, "--tar", tarPath, "--platform", "amd64"}, "os/arch"},
			{[]string{"affix", "--base", base.String(), "--dest", m + "@sha256:" + strings.Repeat("a", 64), "--tar", tarPath}, "digest"},
			{[]string{"affix", "--base", base.String(), "--dest", m, "--tar", tarPath, "--compression", "gzip", "--level", "0"}, "--compression none"},
			{[]string{"affix", "--dest", m, "--tar", tarPath}, "base"},
			{[]string{"affix", "--base", base.String(), "--dest", m, "--tar", tarPath, "--layers", "per-shard"}, "auto, per-file or single"},
			{[]string{"affix", "--base", base.String(), "--dest", m, "--tar", tarPath, "--jobs", "0"}, "give 1 to 64"},
			{[]string{"layers", reg.User.Repo("missing:v1")}, "not found"},
		} {
			_, _, err := r8im(t, nil, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("r8im %v = %v; want an error mentioning %q", tc.args, err, tc.want)
			}
		}
	})
}

func TestRemixCLI(t *testing.T) {
	aImg, _ := testenv.WeightsImage(t, testenv.Docker, testenv.Amd64, testenv.SeedsWeights, testenv.WeightsSpec{Seed: 41})
	bImg, bFiles := testenv.WeightsImage(t, testenv.Docker, testenv.Amd64, testenv.CogWeights, testenv.WeightsSpec{Seed: 42})
	forEachRegistry(t, func(t *testing.T, reg testenv.RegistryEnv) {
		a := testenv.PushWith(t, reg.User.Repo("models/a:v1"), aImg, reg.User.RemoteOptions()...)
		b := testenv.PushWith(t, reg.User.Repo("models/b:v1"), bImg, reg.User.RemoteOptions()...)
		stdout, stderr, err := r8im(t, nil, "remix", "--base", a.String(), "--weights", b.String(), "--dest", reg.User.Repo("models/ab:v1"))
		if err != nil {
			t.Fatalf("remix: %v\n%s", err, stderr)
		}
		if !strings.Contains(stderr, "removed 1 weights layer(s) of the base, added 1") {
			t.Errorf("stderr: %s", stderr)
		}
		dir := t.TempDir()
		if _, stderr, err := r8im(t, nil, "extract", strings.TrimSpace(stdout), "--dir", dir, "--strip-target"); err != nil {
			t.Fatalf("extract: %v\n%s", err, stderr)
		}
		for _, f := range bFiles {
			if got := testenv.FileSHA256(t, filepath.Join(dir, strings.TrimPrefix(f.Name, "src/weights/"))); got != f.SHA256 {
				t.Fatalf("%s: got sha256 %s, want B's %s", f.Name, got, f.SHA256)
			}
		}
	})
}
