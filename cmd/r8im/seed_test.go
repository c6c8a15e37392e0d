package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

// TestSeedVerbs: the original r8im's forms work as its README shows them:
// report IMAGE, recompress IMAGE DEST, add-layer IMAGE LAYER, and clone
// copies an image with every blob mounted and nothing downloaded.
func TestSeedVerbs(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, reg testenv.RegistryEnv) {
		base := reg.SeedBase(t, "seed", testenv.OCI)
		tarPath, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 2, FileSize: 2 << 20, Seed: 41})

		// add-layer IMAGE LAYER: onto a copy the user owns, pushed to its repository by digest.
		stdout, stderr, err := r8im(t, nil, "clone", "--json", base.String(), reg.User.Repo("seed:v1"))
		if err != nil {
			t.Fatalf("clone: %v\n%s", err, stderr)
		}
		var cl imageops.CloneResult
		if err := json.Unmarshal([]byte(stdout), &cl); err != nil {
			t.Fatal(err)
		}
		if cl.Digest.String() != base.DigestStr() || cl.Transfer.DownloadedBytes != 0 || cl.Transfer.UploadedBytes > 4096 || cl.Transfer.MountedBlobs == 0 {
			t.Fatalf("clone gave %s (source %s), transfer %+v; want the same digest, every layer mounted, nothing downloaded", cl.Digest, base.DigestStr(), cl.Transfer)
		}
		image := reg.User.Repo("seed:v1")
		stdout, stderr, err = r8im(t, nil, "add-layer", image, tarPath)
		if err != nil {
			t.Fatalf("add-layer: %v\n%s", err, stderr)
		}
		added := strings.TrimSpace(stdout)
		if !strings.HasPrefix(added, reg.User.Repo("seed")+"@sha256:") {
			t.Fatalf("add-layer printed %q; want IMAGE's repository by digest", added)
		}

		// report IMAGE lists the new weights layer.
		stdout, stderr, err = r8im(t, nil, "report", added)
		if err != nil || !strings.Contains(stdout, "# weights") {
			t.Fatalf("report: %v\n%s%s", err, stdout, stderr)
		}

		// recompress IMAGE DEST: zstd with a positional destination.
		stdout, stderr, err = r8im(t, nil, "recompress", "--json", added, reg.User.Repo("seed:v1-zstd"))
		if err != nil {
			t.Fatalf("recompress: %v\n%s", err, stderr)
		}
		var z imageops.ZstdResult
		if err := json.Unmarshal([]byte(stdout), &z); err != nil || !strings.HasPrefix(z.Ref.String(), reg.User.Repo("seed")+"@sha256:") {
			t.Fatalf("recompress result %+v, %v", z, err)
		}
		if _, _, err := r8im(t, nil, "zstd", added); err == nil || !strings.Contains(err.Error(), "no destination") {
			t.Errorf("zstd without a destination: %v", err)
		}
	})
}
