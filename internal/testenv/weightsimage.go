package testenv

import (
	"bytes"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Convention is how an image marks its weights layers.
type Convention int

const (
	// SeedsWeights: history created_by ending " # weights", comment "weights"
	// (the original r8im tool).
	SeedsWeights Convention = iota
	// CogWeights: cog's separate layer, COPY --from=weights --link.
	CogWeights
	// R8imWeights: config label im.r8.weights.layers, plus the layer
	// annotation im.r8.weights=true on OCI images.
	R8imWeights
	// CopySrcWeights: no marker; the weights are files under src/weights of
	// a `COPY . /src` layer.
	CopySrcWeights
)

func (c Convention) String() string { return [...]string{"seeds", "cog", "r8im", "copy-src"}[c] }

// The markers, spelled out here so that tests do not depend on the code they
// test.
const (
	SeedsCreatedBy   = "COPY weights /src/weights # weights"
	CogCreatedBy     = "COPY --from=weights --link /src/weights /src/weights # buildkit"
	CopySrcCreatedBy = "COPY . /src # buildkit"
	R8imCreatedBy    = "r8im affix"
	R8imAnnotation   = "im.r8.weights"
	R8imLabel        = "im.r8.weights.layers"
)

// LayerFromTar makes a gzip layer of format f from an uncompressed tar.
func LayerFromTar(t testing.TB, f Format, tarBytes []byte) v1.Layer {
	t.Helper()
	mt := types.DockerLayer
	if f == OCI {
		mt = types.OCILayer
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBytes)), nil
	}, tarball.WithMediaType(mt))
	if err != nil {
		t.Fatalf("building layer: %v", err)
	}
	return l
}

// LayerOf makes a gzip layer of format f holding entries.
func LayerOf(t testing.TB, f Format, entries ...Entry) v1.Layer {
	t.Helper()
	return LayerFromTar(t, f, Tar(t, entries...))
}

// WeightsLayer makes a layer of format f from the WriteWeights tarball of
// spec and returns its files.
func WeightsLayer(t testing.TB, f Format, spec WeightsSpec) (v1.Layer, []WeightsFile) {
	t.Helper()
	var buf bytes.Buffer
	files, err := WriteWeights(&buf, spec)
	if err != nil {
		t.Fatalf("writing weights: %v", err)
	}
	return LayerFromTar(t, f, buf.Bytes()), files
}

// AppendWeights puts layer on top of img, marked as weights per convention
// c. For R8imWeights the layer's digest joins the config label, and on OCI
// images the layer gets the annotation too.
func AppendWeights(t testing.TB, img v1.Image, c Convention, layer v1.Layer) v1.Image {
	t.Helper()
	add := mutate.Addendum{Layer: layer, History: v1.History{Created: v1.Time{Time: BaseCreated}}}
	switch c {
	case SeedsWeights:
		add.History.CreatedBy, add.History.Comment = SeedsCreatedBy, "weights"
	case CogWeights:
		add.History.CreatedBy = CogCreatedBy
	case CopySrcWeights:
		add.History.CreatedBy = CopySrcCreatedBy
	case R8imWeights:
		add.History.CreatedBy = R8imCreatedBy
		if mt, err := img.MediaType(); err == nil && mt == types.OCIManifestSchema1 {
			add.Annotations = map[string]string{R8imAnnotation: "true"}
		}
	}
	out, err := mutate.Append(img, add)
	if err != nil {
		t.Fatalf("appending a %s weights layer: %v", c, err)
	}
	if c != R8imWeights {
		return out
	}
	digest, err := layer.Digest()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := out.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	if cfg.Config.Labels == nil {
		cfg.Config.Labels = map[string]string{}
	}
	if prev := cfg.Config.Labels[R8imLabel]; prev != "" {
		cfg.Config.Labels[R8imLabel] = prev + "," + digest.String()
	} else {
		cfg.Config.Labels[R8imLabel] = digest.String()
	}
	if out, err = mutate.ConfigFile(out, cfg); err != nil {
		t.Fatal(err)
	}
	return out
}

// WeightsImage is BaseImage(f, p) plus one weights layer of spec (with
// Dir "src/weights" unless set) in convention c, and the weights files.
// For CopySrcWeights the layer also carries code files outside the
// weights directory (src/predict.py, src/extra.py), as COPY . /src does.
func WeightsImage(t testing.TB, f Format, p v1.Platform, c Convention, spec WeightsSpec) (v1.Image, []WeightsFile) {
	t.Helper()
	if spec.Dir == "" {
		spec.Dir = "src/weights"
	}
	var buf bytes.Buffer
	files, err := WriteWeights(&buf, spec)
	if err != nil {
		t.Fatalf("writing weights: %v", err)
	}
	tarBytes := buf.Bytes()
	if c == CopySrcWeights {
		tarBytes = withCode(t, tarBytes)
	}
	return AppendWeights(t, BaseImage(t, f, p), c, LayerFromTar(t, f, tarBytes)), files
}

// withCode prepends code files to a weights tar, as a COPY . /src layer of
// a repository holding its weights would have them.
func withCode(t testing.TB, weights []byte) []byte {
	t.Helper()
	entries := []Entry{Dir("src/"), File("src/predict.py", Predict+"# v2\n"), File("src/extra.py", "X = 1\n")}
	for _, m := range TarMembers(t, bytes.NewReader(weights)) {
		if m.Name != "src/" {
			entries = append(entries, Entry{Name: m.Name, Type: m.Typeflag, Body: m.Body, Mode: m.Mode})
		}
	}
	return Tar(t, entries...)
}

// WeightsIndex is an index (format f) of WeightsImage for each platform,
// all with the same weights.
func WeightsIndex(t testing.TB, f Format, c Convention, spec WeightsSpec, platforms ...v1.Platform) (v1.ImageIndex, []WeightsFile) {
	t.Helper()
	if len(platforms) == 0 {
		platforms = []v1.Platform{Amd64, Arm64}
	}
	var adds []mutate.IndexAddendum
	var files []WeightsFile
	for _, p := range platforms {
		p := p
		img, fs := WeightsImage(t, f, p, c, spec)
		files = fs
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	idx := mutate.AppendManifests(empty.Index, adds...)
	if f == OCI {
		return mutate.IndexMediaType(idx, types.OCIImageIndex), files
	}
	return mutate.IndexMediaType(idx, types.DockerManifestList), files
}

// TrimHistory removes the last n history entries that describe a layer, so
// that the image has fewer history entries than layers (hand-made images
// do).
func TrimHistory(t testing.TB, img v1.Image, n int) v1.Image {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	for i := len(cfg.History) - 1; i >= 0 && n > 0; i-- {
		if !cfg.History[i].EmptyLayer {
			cfg.History = append(cfg.History[:i], cfg.History[i+1:]...)
			n--
		}
	}
	out, err := mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
