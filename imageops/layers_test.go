package imageops_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

// blobGetCounter is a transport that counts GET requests of blobs by
// digest, to prove which blobs an operation downloaded, and sends every
// request on through next (the registry's transport).
type blobGetCounter struct {
	next http.RoundTripper
	mu   sync.Mutex
	gets map[string]int
}

func newBlobGetCounter(next http.RoundTripper) *blobGetCounter {
	return &blobGetCounter{next: next, gets: map[string]int{}}
}

func (c *blobGetCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
		c.mu.Lock()
		c.gets[path.Base(req.URL.Path)]++
		c.mu.Unlock()
	}
	return c.next.RoundTrip(req)
}

// of returns how many GETs the given blobs had in all.
func (c *blobGetCounter) of(digests ...v1.Hash) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, d := range digests {
		n += c.gets[d.String()]
	}
	return n
}

// layerDigests lists the layer digests of img, bottom first.
func layerDigests(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	mf, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Hash
	for _, l := range mf.Layers {
		out = append(out, l.Digest)
	}
	return out
}

// platformImages lists the images an artifact holds with their platform
// ("" for a single image).
func platformImages(t *testing.T, a remote.Taggable) map[string]v1.Image {
	t.Helper()
	switch a := a.(type) {
	case v1.Image:
		return map[string]v1.Image{"": a}
	case v1.ImageIndex:
		im, err := a.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]v1.Image{}
		for _, d := range im.Manifests {
			img, err := a.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			out[d.Platform.String()] = img
		}
		return out
	}
	t.Fatalf("%T is neither an image nor an index", a)
	return nil
}

func TestLayers(t *testing.T) {
	spec := testenv.WeightsSpec{Files: 2, FileSize: 32 << 10, Seed: 7}
	weightsImage := func(f testenv.Format, c testenv.Convention) func(t *testing.T) remote.Taggable {
		return func(t *testing.T) remote.Taggable {
			img, _ := testenv.WeightsImage(t, f, testenv.Amd64, c, spec)
			return img
		}
	}
	base := []imageops.WeightsKind{imageops.NotWeights, imageops.NotWeights, imageops.CopySrcLayer}
	arm64 := testenv.Arm64
	cases := []struct {
		name      string
		artifact  func(t *testing.T) remote.Taggable
		opts      []imageops.Option
		platforms []string // the results' platforms, in order
		mediaType types.MediaType
		kinds     []imageops.WeightsKind
		createdBy []string // per layer; nil: not checked
	}{
		{name: "docker image", artifact: func(t *testing.T) remote.Taggable { return testenv.BaseImage(t, testenv.Docker, testenv.Amd64) },
			platforms: []string{"linux/amd64"}, mediaType: types.DockerManifestSchema2, kinds: base},
		{name: "oci image", artifact: func(t *testing.T) remote.Taggable { return testenv.BaseImage(t, testenv.OCI, testenv.Amd64) },
			platforms: []string{"linux/amd64"}, mediaType: types.OCIManifestSchema1, kinds: base,
			createdBy: []string{"/bin/sh -c #(nop) ADD file:3b1a in / ", "RUN /bin/sh -c pip install cog==0.9.0 # buildkit", "COPY . /src # buildkit"}},
		{name: "docker index default platform", artifact: func(t *testing.T) remote.Taggable { return testenv.BaseIndex(t, testenv.Docker) },
			platforms: []string{"linux/amd64"}, mediaType: types.DockerManifestSchema2, kinds: base},
		{name: "oci index arm64", artifact: func(t *testing.T) remote.Taggable { return testenv.BaseIndex(t, testenv.OCI) },
			opts: []imageops.Option{imageops.WithPlatform(&arm64)}, platforms: []string{"linux/arm64/v8"}, mediaType: types.OCIManifestSchema1, kinds: base},
		{name: "oci index all platforms", artifact: func(t *testing.T) remote.Taggable { return testenv.BaseIndex(t, testenv.OCI) },
			opts: []imageops.Option{imageops.WithPlatform(nil)}, platforms: []string{"linux/amd64", "linux/arm64/v8"}, mediaType: types.OCIManifestSchema1, kinds: base},
		{name: "docker index all platforms with weights", artifact: func(t *testing.T) remote.Taggable {
			idx, _ := testenv.WeightsIndex(t, testenv.Docker, testenv.SeedsWeights, spec)
			return idx
		}, opts: []imageops.Option{imageops.WithPlatform(nil)}, platforms: []string{"linux/amd64", "linux/arm64/v8"},
			mediaType: types.DockerManifestSchema2, kinds: append(base, imageops.MarkedSeeds)},
		{name: "docker seeds marker", artifact: weightsImage(testenv.Docker, testenv.SeedsWeights),
			platforms: []string{"linux/amd64"}, mediaType: types.DockerManifestSchema2, kinds: append(base, imageops.MarkedSeeds)},
		{name: "oci cog marker", artifact: weightsImage(testenv.OCI, testenv.CogWeights),
			platforms: []string{"linux/amd64"}, mediaType: types.OCIManifestSchema1, kinds: append(base, imageops.MarkedCog)},
		{name: "docker cog marker", artifact: weightsImage(testenv.Docker, testenv.CogWeights),
			platforms: []string{"linux/amd64"}, mediaType: types.DockerManifestSchema2, kinds: append(base, imageops.MarkedCog)},
		{name: "oci r8im annotation and label", artifact: weightsImage(testenv.OCI, testenv.R8imWeights),
			platforms: []string{"linux/amd64"}, mediaType: types.OCIManifestSchema1, kinds: append(base, imageops.MarkedR8im)},
		{name: "docker r8im label only", artifact: weightsImage(testenv.Docker, testenv.R8imWeights),
			platforms: []string{"linux/amd64"}, mediaType: types.DockerManifestSchema2, kinds: append(base, imageops.MarkedR8im)},
		{name: "oci copy-src only", artifact: weightsImage(testenv.OCI, testenv.CopySrcWeights),
			platforms: []string{"linux/amd64"}, mediaType: types.OCIManifestSchema1, kinds: append(base, imageops.CopySrcLayer)},
		{name: "fewer history entries than layers", artifact: func(t *testing.T) remote.Taggable {
			img, _ := testenv.WeightsImage(t, testenv.OCI, testenv.Amd64, testenv.R8imWeights, spec)
			return testenv.TrimHistory(t, img, 1)
		}, platforms: []string{"linux/amd64"}, mediaType: types.OCIManifestSchema1, kinds: append(base, imageops.MarkedR8im),
			createdBy: []string{"/bin/sh -c #(nop) ADD file:3b1a in / ", "RUN /bin/sh -c pip install cog==0.9.0 # buildkit", "COPY . /src # buildkit", ""}},
	}
	forEachReg(t, func(t *testing.T, reg regSetup) {
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				artifact := tc.artifact(t)
				dig := reg.push(t, reg.Host, fmt.Sprintf("layers/case%d:latest", i), artifact)
				images := platformImages(t, artifact)
				counter := newBlobGetCounter(reg.Transport())
				got, err := imageops.Layers(context.Background(), dig.String(), reg.opts(append(tc.opts, imageops.WithTransport(counter))...)...)
				if err != nil {
					t.Fatalf("Layers: %v", err)
				}
				if len(got) != len(tc.platforms) {
					t.Fatalf("got %d results, want %d: %+v", len(got), len(tc.platforms), got)
				}
				for j, res := range got {
					if res.Platform != tc.platforms[j] {
						t.Errorf("result %d: platform %q, want %q", j, res.Platform, tc.platforms[j])
					}
					img := images[res.Platform]
					if len(images) == 1 {
						img = images[""]
					}
					if img == nil {
						t.Fatalf("result %d: no image for platform %q", j, res.Platform)
					}
					want, _ := img.Digest()
					if wantRef := dig.Context().Digest(want.String()).String(); res.Ref.String() != wantRef {
						t.Errorf("result %d: ref %s, want %s", j, res.Ref, wantRef)
					}
					if res.MediaType != string(tc.mediaType) {
						t.Errorf("result %d: media type %s, want %s", j, res.MediaType, tc.mediaType)
					}
					mf, _ := img.Manifest()
					if len(res.Layers) != len(tc.kinds) || len(mf.Layers) != len(tc.kinds) {
						t.Fatalf("result %d: %d layers (manifest %d), want %d", j, len(res.Layers), len(mf.Layers), len(tc.kinds))
					}
					var total, weights int64
					for k, li := range res.Layers {
						if li.Weights != tc.kinds[k] {
							t.Errorf("layer %d (%q): weights %q, want %q", k, li.CreatedBy, li.Weights, tc.kinds[k])
						}
						if li.Index != k || li.Digest != mf.Layers[k].Digest || li.Size != mf.Layers[k].Size || li.MediaType != string(mf.Layers[k].MediaType) {
							t.Errorf("layer %d: %+v does not match the manifest's %+v", k, li, mf.Layers[k])
						}
						if tc.createdBy != nil && li.CreatedBy != tc.createdBy[k] {
							t.Errorf("layer %d: created_by %q, want %q", k, li.CreatedBy, tc.createdBy[k])
						}
						total += li.Size
						if tc.kinds[k].IsWholeLayer() {
							weights += li.Size
						}
					}
					if res.TotalSize != total || res.WeightsSize != weights {
						t.Errorf("result %d: total %d weights %d, want %d and %d", j, res.TotalSize, res.WeightsSize, total, weights)
					}
					if n := counter.of(layerDigests(t, img)...); n != 0 {
						t.Errorf("result %d: Layers downloaded %d layer blobs; it must read manifests and configs only", j, n)
					}
				}
			})
		}
	})
}

func TestLayersErrors(t *testing.T) {
	forEachReg(t, func(t *testing.T, reg regSetup) {
		reg.push(t, reg.Host, "layers/exists:latest", testenv.BaseImage(t, testenv.OCI, testenv.Amd64))
		cases := []struct {
			name string
			ref  string
			is   error
			say  string
		}{
			{"missing repository", reg.repo(reg.Host, "layers/missing:latest"), imageops.ErrNotFound, "layers/missing"},
			{"missing tag", reg.repo(reg.Host, "layers/exists:nope"), imageops.ErrNotFound, "nope"},
			{"missing digest", reg.repo(reg.Host, "layers/exists@sha256:"+strings.Repeat("0", 64)), imageops.ErrNotFound, "sha256:000"},
			{"bad reference", "Not A Ref!", nil, "is not an image reference"},
			{"empty reference", " ", nil, "no image reference"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				_, err := imageops.Layers(context.Background(), tc.ref, reg.opts()...)
				if err == nil {
					t.Fatal("Layers succeeded")
				}
				if tc.is != nil && !errors.Is(err, tc.is) {
					t.Errorf("error %q is not %v", err, tc.is)
				}
				if !strings.Contains(err.Error(), tc.say) {
					t.Errorf("error %q does not say %q", err, tc.say)
				}
			})
		}
	})
}
