package imageops_test

import (
	"context"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

// A remix of an index whose platforms carry different weights reports the
// weights layers of every platform in Added, not only the last one's.
func TestRemixReportsEveryPlatform(t *testing.T) {
	aIdx, _ := testenv.WeightsIndex(t, testenv.OCI, testenv.SeedsWeights, testenv.WeightsSpec{Seed: 35}, testenv.Amd64, testenv.Arm64)
	var adds []mutate.IndexAddendum
	var want []v1.Hash
	for i, p := range []v1.Platform{testenv.Amd64, testenv.Arm64} {
		img, _ := testenv.WeightsImage(t, testenv.OCI, p, testenv.R8imWeights, testenv.WeightsSpec{Seed: uint64(36 + i)})
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		d, err := layers[len(layers)-1].Digest() // the weights layer
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, d)
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	bIdx := mutate.AppendManifests(empty.Index, adds...)
	forEachReg(t, func(t *testing.T, reg regSetup) {
		a := reg.push(t, reg.Host, "models/union-a:v1", aIdx)
		b := reg.push(t, reg.Host, "models/union-b:v1", bIdx)
		res, err := imageops.Remix(context.Background(), imageops.RemixRequest{Base: a.String(), Weights: b.String(), Dest: reg.repo(reg.Host, "models/union")},
			reg.opts(imageops.WithPlatform(nil))...)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range want {
			if !slices.Contains(res.Added, d) {
				t.Errorf("Added %v lacks %s: every platform's weights layers are added", res.Added, d)
			}
		}
	})
}
