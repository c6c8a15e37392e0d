package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

func TestZstdCLI(t *testing.T) {
	reg := testenv.Registry(t)
	// A weights layer of ~2 MiB over base layers of a few hundred bytes.
	img, _ := testenv.WeightsImage(t, testenv.Docker, testenv.Amd64, testenv.R8imWeights, testenv.WeightsSpec{Files: 2, FileSize: 1536 << 10, Seed: 31})
	src := testenv.Push(t, reg.Host+"/src/cli:v1", img)

	// Default --min-size 1MiB: only the weights layer is recompressed.
	stdout, stderr, err := r8im(t, nil, "zstd", src.String(), "--dest", reg.Host+"/zstd/cli:v1")
	if err != nil {
		t.Fatalf("zstd: %v\n%s", err, stderr)
	}
	ref := strings.TrimSpace(stdout)
	if !strings.HasPrefix(ref, reg.Host+"/zstd/cli@sha256:") || strings.Count(stdout, "\n") != 1 {
		t.Fatalf("stdout = %q; want exactly the repo@sha256 line", stdout)
	}
	for _, want := range []string{"kept: below the minimum size", "1 of 4 layers recompressed", "→", "recompress", "took"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}

	stdout, stderr, err = r8im(t, nil, "zstd", src.String(), "--dest", reg.Host+"/zstd/cli-all", "--min-size", "0", "--level", "1", "--jobs", "2", "--json")
	if err != nil {
		t.Fatalf("zstd --json: %v\n%s", err, stderr)
	}
	var res imageops.ZstdResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("--json output: %v\n%s", err, stdout)
	}
	if res.MediaType != "application/vnd.oci.image.manifest.v1+json" || len(res.Layers) != 4 || len(res.Stages) != 4 {
		t.Fatalf("--json result %+v; want an OCI image, 4 layers, 4 stages", res)
	}
	for _, l := range res.Layers {
		if !l.Recompressed {
			t.Errorf("--min-size 0 kept layer %+v", l)
		}
	}

	// The result still reads as a weights image.
	stdout, _, err = r8im(t, nil, "layers", res.Ref.String(), "--json")
	if err != nil {
		t.Fatal(err)
	}
	var layers []imageops.LayersResult
	if err := json.Unmarshal([]byte(stdout), &layers); err != nil {
		t.Fatal(err)
	}
	if ls := layers[0].Layers; len(ls) != 4 || ls[3].Weights != imageops.MarkedR8im || ls[3].MediaType != "application/vnd.oci.image.layer.v1.tar+zstd" {
		t.Fatalf("layers of the result = %+v; want the zstd weights layer still marked", ls)
	}
}

func TestZstdCLIErrors(t *testing.T) {
	reg := testenv.Registry(t)
	src := testenv.PushBase(t, reg.Host, "src/clierr", testenv.OCI)
	dest := reg.Host + "/zstd/clierr"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"zstd", src.String(), "--dest", dest, "--min-size", "lots"}, "--min-size"},
		{[]string{"zstd", src.String(), "--dest", dest, "--min-size", "-1MiB"}, "--min-size"},
		{[]string{"zstd", src.String(), "--dest", dest, "--level", "99"}, "zstd level 99"},
		{[]string{"zstd", src.String(), "--dest", dest, "--level", "0"}, "--level 0"},
		{[]string{"zstd", src.String(), "--dest", dest, "--jobs", "0"}, "--jobs"},
		{[]string{"zstd", src.String()}, "dest"},
		{[]string{"zstd", "--dest", dest}, "arg"},
		{[]string{"zstd", reg.Host + "/src/missing:v1", "--dest", dest}, "not found"},
	} {
		_, _, err := r8im(t, nil, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("r8im %v = %v; want an error mentioning %q", tc.args, err, tc.want)
		}
	}
	stdout, _, err := r8im(t, nil, "zstd", "--help")
	if err != nil || !strings.Contains(stdout, "--min-size") || !strings.Contains(stdout, "Examples:") || !strings.Contains(stdout, "diffID") {
		t.Errorf("zstd --help (%v):\n%s", err, stdout)
	}
}
