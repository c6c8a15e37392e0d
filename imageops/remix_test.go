package imageops_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

func remoteImage(t *testing.T, reg regSetup, ref string) (*v1.Manifest, *v1.ConfigFile) {
	t.Helper()
	d, err := name.NewDigest(ref)
	if err != nil {
		t.Fatalf("%q: %v", ref, err)
	}
	img, err := remote.Image(d, reg.User.RemoteOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	mf, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return mf, cf
}

func TestRemix(t *testing.T) {
	ctx := context.Background()
	oldTar, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Seed: 21})

	cases := []struct {
		name     string
		aFormat  testenv.Format
		bWeights func(t *testing.T, reg regSetup) (string, []testenv.WeightsFile) // pushes B, returns its ref
		wantMT   types.MediaType
	}{
		{"docker A, seeds-style docker B", testenv.Docker, func(t *testing.T, reg regSetup) (string, []testenv.WeightsFile) {
			img, files := testenv.WeightsImage(t, testenv.Docker, testenv.Amd64, testenv.SeedsWeights, testenv.WeightsSpec{Seed: 22})
			return reg.push(t, reg.Host, "weights/seeds:v1", img).String(), files
		}, types.DockerManifestSchema2},
		{"oci A, cog-style oci B", testenv.OCI, func(t *testing.T, reg regSetup) (string, []testenv.WeightsFile) {
			img, files := testenv.WeightsImage(t, testenv.OCI, testenv.Amd64, testenv.CogWeights, testenv.WeightsSpec{Seed: 23})
			return reg.push(t, reg.Host, "weights/cog:v1", img).String(), files
		}, types.OCIManifestSchema1},
		{"docker A, zstd B from affix", testenv.Docker, func(t *testing.T, reg regSetup) (string, []testenv.WeightsFile) {
			p, files := testenv.WeightsTar(t, testenv.WeightsSpec{Seed: 24})
			base := reg.SeedBase(t, "for-b", testenv.OCI)
			res, err := imageops.Affix(ctx, imageops.AffixRequest{Base: base.String(), Dest: reg.repo(reg.Host, "weights/zstd"), Weights: fileOpener(p), Compression: imageops.Zstd, Created: created}, reg.opts()...)
			if err != nil {
				t.Fatal(err)
			}
			return res.Ref.String(), files
		}, types.OCIManifestSchema1},
	}
	forEachReg(t, func(t *testing.T, reg regSetup) {
		proxy := reg.Proxy(t)
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				// A: a base with old weights affixed.
				base := reg.SeedBase(t, "remix-"+tc.aFormat.String(), tc.aFormat)
				a, err := imageops.Affix(ctx, imageops.AffixRequest{Base: base.String(), Dest: reg.repo(reg.Host, "models/a-"+tc.aFormat.String()), Weights: fileOpener(oldTar), Created: created}, reg.opts()...)
				if err != nil {
					t.Fatal(err)
				}
				bRef, bFiles := tc.bWeights(t, reg)
				aRef := reg.via(proxy.Host, a.Ref.String())
				bRef = reg.via(proxy.Host, bRef)

				proxy.Reset()
				res, err := imageops.Remix(ctx, imageops.RemixRequest{Base: aRef, Weights: bRef, Dest: reg.repo(proxy.Host, "models/remixed:v1")}, reg.opts()...)
				if err != nil {
					t.Fatalf("Remix: %v", err)
				}
				if len(res.Removed) != 1 || res.Removed[0] != a.Layer.Digest || len(res.Added) != 1 {
					t.Fatalf("removed %v added %v; want A's weights layer out and B's in", res.Removed, res.Added)
				}
				mf, cf := remoteImage(t, reg, reg.via(reg.Host, res.Ref.String()))
				bmf, bcf := remoteImage(t, reg, reg.via(reg.Host, bRef))
				amf, acf := remoteImage(t, reg, a.Ref.String())
				if mf.MediaType != tc.wantMT {
					t.Errorf("manifest %s, want %s", mf.MediaType, tc.wantMT)
				}
				// Layers: A's three code layers, then B's weights layer.
				if len(mf.Layers) != 4 || mf.Layers[3].Digest.String() != res.Added[0].String() {
					t.Fatalf("layers %v", mf.Layers)
				}
				for i := 0; i < 3; i++ {
					if mf.Layers[i].Digest != amf.Layers[i].Digest || cf.RootFS.DiffIDs[i] != acf.RootFS.DiffIDs[i] {
						t.Errorf("layer %d is not A's", i)
					}
				}
				if cf.RootFS.DiffIDs[3] != bcf.RootFS.DiffIDs[len(bcf.RootFS.DiffIDs)-1] || mf.Layers[3].Digest != bmf.Layers[len(bmf.Layers)-1].Digest {
					t.Errorf("last layer/diffID is not B's weights")
				}
				// History lines up with the layers, empty-layer entries included.
				var nonEmpty []v1.History
				for _, h := range cf.History {
					if !h.EmptyLayer {
						nonEmpty = append(nonEmpty, h)
					}
				}
				if len(nonEmpty) != len(mf.Layers) || len(cf.History) != len(acf.History) {
					t.Fatalf("history has %d entries (%d with layers) for %d layers; A had %d", len(cf.History), len(nonEmpty), len(mf.Layers), len(acf.History))
				}
				if !strings.Contains(nonEmpty[2].CreatedBy, "COPY . /src") || !strings.HasSuffix(strings.TrimSpace(nonEmpty[3].CreatedBy), "# weights") && !strings.Contains(nonEmpty[3].CreatedBy, "--from=weights") {
					t.Errorf("history out of line: %+v", nonEmpty)
				}
				// A's config kept.
				if strings.Join(cf.Config.Env, ",") != strings.Join(acf.Config.Env, ",") || strings.Join(cf.Config.Cmd, " ") != strings.Join(acf.Config.Cmd, " ") || cf.Config.Labels["run.cog.version"] != "0.9.0" {
					t.Errorf("A's config not kept: %+v", cf.Config)
				}
				// Zero layer bytes moved, as seen by the registry.
				for _, l := range mf.Layers {
					if n := proxy.Downloaded(l.Digest.String()); n != 0 {
						t.Errorf("layer %s: %d bytes downloaded", l.Digest, n)
					}
				}
				if up := proxy.Uploaded(); up > 16<<10 {
					t.Errorf("%d bytes uploaded; a remix on one registry should send only its config", up)
				}
				if res.Transfer.MountedBlobs == 0 {
					t.Errorf("nothing mounted: %+v", res.Transfer)
				}
				checkWeightsUnpacked(t, reg, reg.via(reg.Host, res.Ref.String()), nil, bFiles, "src/weights/", "src/weights")
			})
		}
	})
}

func TestRemixIndexAndErrors(t *testing.T) {
	ctx := context.Background()
	aIdx, _ := testenv.WeightsIndex(t, testenv.OCI, testenv.SeedsWeights, testenv.WeightsSpec{Seed: 31}, testenv.Amd64, testenv.Arm64)
	bIdx, bFiles := testenv.WeightsIndex(t, testenv.OCI, testenv.R8imWeights, testenv.WeightsSpec{Seed: 32}, testenv.Amd64, testenv.Arm64)
	forEachReg(t, func(t *testing.T, reg regSetup) {
		a := reg.push(t, reg.Host, "models/a-index:v1", aIdx)
		b := reg.push(t, reg.Host, "models/b-index:v1", bIdx)

		res, err := imageops.Remix(ctx, imageops.RemixRequest{Base: a.String(), Weights: b.String(), Dest: reg.repo(reg.Host, "models/remix-index")}, reg.opts(imageops.WithPlatform(nil))...)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Platforms) != 2 {
			t.Fatalf("platforms %v, want 2", res.Platforms)
		}
		for _, p := range []v1.Platform{testenv.Amd64, testenv.Arm64} {
			checkWeightsUnpacked(t, reg, res.Ref.String(), &p, bFiles, "src/weights/", "src/weights")
		}
		// Reproducible: the same inputs give the same digest.
		again, err := imageops.Remix(ctx, imageops.RemixRequest{Base: a.String(), Weights: b.String(), Dest: reg.repo(reg.Host, "models/remix-index")}, reg.opts(imageops.WithPlatform(nil))...)
		if err != nil || again.Digest != res.Digest {
			t.Fatalf("second remix = %v, %v; want digest %s", again, err, res.Digest)
		}

		plain := reg.SeedBase(t, "noweights", testenv.OCI)
		_, err = imageops.Remix(ctx, imageops.RemixRequest{Base: a.String(), Weights: plain.String(), Dest: reg.repo(reg.Host, "models/never:v1")}, reg.opts()...)
		if !errors.Is(err, imageops.ErrNoWeights) {
			t.Fatalf("remix with a B without weights = %v; want ErrNoWeights", err)
		}
		if err := reg.head(t, reg.repo(reg.Host, "models/never:v1")); err == nil {
			t.Fatal("a failed remix left a tag behind")
		}
	})
}
