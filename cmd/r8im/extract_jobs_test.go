package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/r8im/r8im/internal/testenv"
)

// TestExtractCLIJobs extracts an image with four weights layers with
// --jobs 1 and --jobs 4: the tar (-o) and the files (--dir) are byte for
// byte the same, and no temp file is left next to either.
func TestExtractCLIJobs(t *testing.T) {
	img := testenv.BaseImage(t, testenv.OCI, testenv.Amd64)
	for _, l := range []v1.Layer{
		first(testenv.WeightsLayer(t, testenv.OCI, testenv.WeightsSpec{Files: 2, Dir: "src/weights", Seed: 401})),
		first(testenv.WeightsLayer(t, testenv.OCI, testenv.WeightsSpec{Files: 1, Dir: "src/weights/b", Seed: 402})),
		first(testenv.WeightsLayer(t, testenv.OCI, testenv.WeightsSpec{Files: 1, Dir: "src/weights/c", Seed: 403})),
		testenv.LayerOf(t, testenv.OCI, testenv.Dir("src/"), testenv.Dir("src/weights/"),
			testenv.Whiteout("src/weights/b"), testenv.File("src/weights/config.json", `{"newest": true}`)),
	} {
		img = testenv.AppendWeights(t, img, testenv.R8imWeights, l)
	}
	forEachRegistry(t, func(t *testing.T, reg testenv.RegistryEnv) {
		ref := testenv.PushWith(t, reg.User.Repo("models/cli-jobs:v1"), img, reg.User.RemoteOptions()...).String()

		tars, dirs := t.TempDir(), t.TempDir()
		for _, jobs := range []string{"1", "4"} {
			if _, stderr, err := r8im(t, nil, "extract", ref, "-o", filepath.Join(tars, "w"+jobs+".tar"), "--jobs", jobs); err != nil {
				t.Fatalf("extract -o --jobs %s: %v\n%s", jobs, err, stderr)
			}
			_, stderr, err := r8im(t, nil, "extract", ref, "--dir", filepath.Join(dirs, "w"+jobs), "--jobs", jobs)
			if err != nil {
				t.Fatalf("extract --dir --jobs %s: %v\n%s", jobs, err, stderr)
			}
			if !strings.Contains(stderr, "from 4 layer(s)") {
				t.Errorf("--jobs %s: stderr does not say 4 layers were read:\n%s", jobs, stderr)
			}
		}
		one, _ := os.ReadFile(filepath.Join(tars, "w1.tar"))
		four, _ := os.ReadFile(filepath.Join(tars, "w4.tar"))
		if len(one) == 0 || !bytes.Equal(one, four) {
			t.Errorf("the tar with --jobs 4 (%d bytes) differs from the one with --jobs 1 (%d bytes)", len(four), len(one))
		}
		if entries, _ := os.ReadDir(tars); len(entries) != 2 {
			t.Errorf("next to the tars: %v, want only w1.tar and w4.tar", entries)
		}
		t1, t4 := testenv.TreeOf(t, filepath.Join(dirs, "w1")), testenv.TreeOf(t, filepath.Join(dirs, "w4"))
		if fmt.Sprint(t1) != fmt.Sprint(t4) {
			t.Errorf("--dir differs:\n--jobs 1: %v\n--jobs 4: %v", t1, t4)
		}
		if _, ok := t1["src/weights/c/model-00001-of-00001.safetensors"]; !ok || len(t1) < 6 {
			t.Errorf("--dir holds %v, want the shards of every layer", t1)
		}
		if _, ok := t1["src/weights/b"]; ok {
			t.Error("src/weights/b, deleted by the newest layer, was written")
		}
	})
}

func first[A, B any](a A, _ B) A { return a }

// TestExtractCLIJobsFlag refuses --jobs outside 1..64 before any network
// access, and documents the flag.
func TestExtractCLIJobsFlag(t *testing.T) {
	for _, jobs := range []string{"0", "-1", "65"} {
		_, _, err := r8im(t, nil, "extract", "localhost:1/x/y:v1", "-o", filepath.Join(t.TempDir(), "w.tar"), "--jobs", jobs)
		if err == nil || !strings.Contains(err.Error(), "--jobs "+jobs+": give 1 to 64") {
			t.Errorf("--jobs %s: %v; want it refused, naming 1 to 64", jobs, err)
		}
	}
	out, _, err := r8im(t, nil, "extract", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--jobs int", "weights layers downloaded at once (1 to 64) (default 4)", "--dir ./weights --jobs 8"} {
		if !strings.Contains(out, want) {
			t.Errorf("extract --help lacks %q:\n%s", want, out)
		}
	}
}
