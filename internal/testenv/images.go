package testenv

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Format is the manifest family of a synthetic image.
type Format int

const (
	Docker Format = iota // Docker schema2 manifest, config and gzip layers
	OCI                  // OCI manifest, config and gzip layers
)

func (f Format) String() string { return [...]string{"docker", "oci"}[f] }

// Predict is the content of /src/predict.py in every base image, so tests can
// check that an operation left the model's code untouched.
const Predict = "from cog import BasePredictor\n\nclass Predictor(BasePredictor):\n    def predict(self, prompt: str) -> str:\n        return prompt\n"

// BaseCreated is the creation time of every synthetic base image.
var BaseCreated = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// file is one entry of a synthetic layer.
type file struct {
	name string
	body string
}

// BaseImage builds a cog-like base image for one platform: an OS layer, a
// Python dependencies layer and a `COPY . /src` code layer holding
// /src/predict.py, with empty-layer history entries (ENV, CMD) in between, as
// docker build writes them. Contents differ per platform, so per-platform
// digests differ. The image is deterministic.
func BaseImage(t testing.TB, f Format, p v1.Platform) v1.Image {
	t.Helper()
	return baseImage(t, f, p, nil)
}

// baseImage is BaseImage, with first (if not nil) as its first layer.
func baseImage(t testing.TB, f Format, p v1.Platform, first *mutate.Addendum) v1.Image {
	t.Helper()
	layerType := types.DockerLayer
	if f == OCI {
		layerType = types.OCILayer
	}
	layers := []struct {
		files     []file
		createdBy string
	}{
		{[]file{{"etc/os-release", "ID=debian\nVERSION_ID=12\n"}, {"etc/arch", p.Architecture + "\n"}},
			"/bin/sh -c #(nop) ADD file:3b1a in / "},
		{[]file{{"usr/local/lib/python3.11/site-packages/cog/__init__.py", "__version__ = '0.9.0'\n"}},
			"RUN /bin/sh -c pip install cog==0.9.0 # buildkit"},
		{[]file{{"src/predict.py", Predict}, {"src/cog.yaml", "predict: predict.py:Predictor\n"}},
			"COPY . /src # buildkit"},
	}
	img := empty.Image
	var err error
	if first != nil {
		if img, err = mutate.Append(img, *first); err != nil {
			t.Fatalf("appending the first layer: %v", err)
		}
	}
	for i, l := range layers {
		layer, lerr := tarball.LayerFromOpener(tarOpener(l.files), tarball.WithMediaType(layerType))
		if lerr != nil {
			t.Fatalf("building base layer %d: %v", i, lerr)
		}
		img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
			Created: v1.Time{Time: BaseCreated}, CreatedBy: l.createdBy,
		}})
		if err != nil {
			t.Fatalf("appending base layer %d: %v", i, err)
		}
		if i == 0 { // an empty layer between real ones, as ENV lines make
			img = appendEmptyHistory(t, img, "ENV PATH=/usr/local/bin:/usr/bin:/bin")
		}
	}
	img = appendEmptyHistory(t, img, `CMD ["python", "-m", "cog.server.http"]`)
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.Created = v1.Time{Time: BaseCreated}
	cfg.OS, cfg.Architecture, cfg.Variant = p.OS, p.Architecture, p.Variant
	cfg.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONUNBUFFERED=1"}
	cfg.Config.Cmd = []string{"python", "-m", "cog.server.http"}
	cfg.Config.WorkingDir = "/src"
	cfg.Config.Labels = map[string]string{"run.cog.version": "0.9.0"}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	if f == OCI {
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	return img
}

func appendEmptyHistory(t testing.TB, img v1.Image, createdBy string) v1.Image {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.History = append(cfg.History, v1.History{Created: v1.Time{Time: BaseCreated}, CreatedBy: createdBy, EmptyLayer: true})
	out, err := mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tarOpener serves an uncompressed tar of files, with parent directories and
// fixed metadata so that layers are reproducible.
func tarOpener(files []file) tarball.Opener {
	var entries []Entry
	dirs := map[string]bool{}
	for _, f := range files {
		for _, d := range parents(f.name) {
			if !dirs[d] {
				dirs[d] = true
				entries = append(entries, Dir(d+"/"))
			}
		}
		entries = append(entries, File(f.name, f.body))
	}
	var buf bytes.Buffer
	_ = WriteTar(&buf, entries...) // plain names and bodies: nothing to refuse
	b := buf.Bytes()
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// parents lists the directories above a slash path: "a/b/c" → "a", "a/b".
func parents(p string) []string {
	var out []string
	for i := 0; i < len(p); i++ {
		if p[i] == '/' {
			out = append(out, p[:i])
		}
	}
	return out
}

// Amd64 and Arm64 are the platforms synthetic indexes carry.
var (
	Amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}
	Arm64 = v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
)

// BaseIndex builds a multi-platform index (an OCI index, or a Docker manifest
// list for the Docker format) of BaseImage for each platform.
func BaseIndex(t testing.TB, f Format, platforms ...v1.Platform) v1.ImageIndex {
	t.Helper()
	if len(platforms) == 0 {
		platforms = []v1.Platform{Amd64, Arm64}
	}
	var adds []mutate.IndexAddendum
	for _, p := range platforms {
		p := p
		adds = append(adds, mutate.IndexAddendum{Add: BaseImage(t, f, p), Descriptor: v1.Descriptor{Platform: &p}})
	}
	idx := mutate.AppendManifests(empty.Index, adds...)
	if f == OCI {
		return mutate.IndexMediaType(idx, types.OCIImageIndex)
	}
	return mutate.IndexMediaType(idx, types.DockerManifestList)
}

// Push writes an image or index to ref (host/repo:tag) with the default
// keychain and returns the digest reference host/repo@sha256:….
func Push(t testing.TB, ref string, artifact remote.Taggable) name.Digest {
	t.Helper()
	return PushWith(t, ref, artifact, remote.WithAuthFromKeychain(authn.DefaultKeychain))
}

// PushWith is Push with go-containerregistry options (a Login's
// RemoteOptions for a TLS or token-auth registry).
func PushWith(t testing.TB, ref string, artifact remote.Taggable, opts ...remote.Option) name.Digest {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatalf("parsing %q: %v", ref, err)
	}
	switch a := artifact.(type) {
	case v1.Image:
		err = remote.Write(r, a, opts...)
	case v1.ImageIndex:
		err = remote.WriteIndex(r, a, opts...)
	default:
		t.Fatalf("Push: %T is neither an image nor an index", artifact)
	}
	if err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	d, err := artifact.(interface{ Digest() (v1.Hash, error) }).Digest()
	if err != nil {
		t.Fatal(err)
	}
	dig, err := name.NewDigest(fmt.Sprintf("%s@%s", r.Context().Name(), d))
	if err != nil {
		t.Fatal(err)
	}
	return dig
}

// PushBase pushes BaseImage (one platform) or BaseIndex (several) of format f
// to host/repo:latest and returns its digest reference.
func PushBase(t testing.TB, host, repo string, f Format, platforms ...v1.Platform) name.Digest {
	t.Helper()
	return Push(t, host+"/"+repo+":latest", baseArtifact(t, f, platforms))
}

// baseArtifact is BaseIndex for several platforms, else BaseImage (amd64
// by default).
func baseArtifact(t testing.TB, f Format, platforms []v1.Platform) remote.Taggable {
	t.Helper()
	if len(platforms) > 1 {
		return BaseIndex(t, f, platforms...)
	}
	p := Amd64
	if len(platforms) == 1 {
		p = platforms[0]
	}
	return BaseImage(t, f, p)
}
