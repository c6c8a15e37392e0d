package imageops_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

var created = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// fileOpener opens path on every call, as a retried upload needs.
func fileOpener(path string) imageops.Opener {
	return func() (io.ReadCloser, error) { return os.Open(path) }
}

// checkWeightsUnpacked unpacks ref with skopeo + umoci and checks that the
// base's code is untouched and every weights file has the right bytes at
// the target.
func checkWeightsUnpacked(t *testing.T, reg regSetup, ref string, p *v1.Platform, files []testenv.WeightsFile, stripPrefix, target string) {
	t.Helper()
	root := reg.unpack(t, ref, p)
	if got, err := os.ReadFile(filepath.Join(root, "src/predict.py")); err != nil || string(got) != testenv.Predict {
		t.Fatalf("/src/predict.py = %q, %v; the base's code must be untouched", got, err)
	}
	for _, f := range files {
		rel := strings.TrimPrefix(f.Name, stripPrefix)
		p := filepath.Join(root, target, rel)
		if got := testenv.FileSHA256(t, p); got != f.SHA256 {
			t.Fatalf("%s: sha256 %s, want %s", p, got, f.SHA256)
		}
	}
}

func TestAffix(t *testing.T) {
	seedsTar, seedsFiles := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 2, FileSize: 3 << 20, Dir: "src/weights", Seed: 1})
	relTar, relFiles := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 3, FileSize: 1 << 20, Seed: 2})

	cases := []struct {
		format      testenv.Format
		compression imageops.Compression
		seeds       bool // src/weights/... paths (else relative)
		manifest    types.MediaType
		layer       types.MediaType
	}{
		{testenv.Docker, imageops.Gzip, true, types.DockerManifestSchema2, types.DockerLayer},
		{testenv.Docker, imageops.Uncompressed, false, types.DockerManifestSchema2, types.DockerUncompressedLayer},
		{testenv.Docker, imageops.Zstd, true, types.OCIManifestSchema1, types.OCILayerZStd},
		{testenv.OCI, imageops.Gzip, false, types.OCIManifestSchema1, types.OCILayer},
		{testenv.OCI, imageops.Zstd, false, types.OCIManifestSchema1, types.OCILayerZStd},
		{testenv.OCI, imageops.Uncompressed, true, types.OCIManifestSchema1, types.OCIUncompressedLayer},
	}
	forEachReg(t, func(t *testing.T, reg regSetup) {
		proxy := reg.Proxy(t)
		for _, tc := range cases {
			t.Run(tc.format.String()+"/"+string(tc.compression), func(t *testing.T) {
				base := reg.SeedBase(t, tc.format.String(), tc.format)
				tarPath, files, strip := relTar, relFiles, ""
				if tc.seeds {
					tarPath, files, strip = seedsTar, seedsFiles, "src/weights/"
				}
				proxy.Reset()
				res, err := imageops.Affix(context.Background(), imageops.AffixRequest{
					Base: reg.via(proxy.Host, base.String()), Dest: reg.repo(proxy.Host, "models/"+tc.format.String()+"-"+string(tc.compression)+":v1"),
					Weights: fileOpener(tarPath), Compression: tc.compression, Created: created,
				}, reg.opts()...)
				if err != nil {
					t.Fatalf("Affix: %v", err)
				}
				ref, err := name.NewDigest(res.Ref.String())
				if err != nil {
					t.Fatalf("result ref %q: %v", res.Ref, err)
				}
				img, err := remote.Image(ref, reg.User.RemoteOptions()...)
				if err != nil {
					t.Fatal(err)
				}
				mf, _ := img.Manifest()
				cf, _ := img.ConfigFile()
				if mf.MediaType != tc.manifest {
					t.Errorf("manifest media type %s, want %s", mf.MediaType, tc.manifest)
				}
				last := mf.Layers[len(mf.Layers)-1]
				if last.MediaType != tc.layer || last.Digest.String() != res.Layer.Digest.String() {
					t.Errorf("weights layer %s %s, want %s %s", last.MediaType, last.Digest, tc.layer, res.Layer.Digest)
				}
				for _, l := range mf.Layers {
					if mf.MediaType == types.OCIManifestSchema1 && strings.Contains(string(l.MediaType), "docker") {
						t.Errorf("OCI manifest carries Docker layer type %s", l.MediaType)
					}
					if mf.MediaType == types.DockerManifestSchema2 && strings.Contains(string(l.MediaType), "zstd") {
						t.Errorf("Docker manifest carries a zstd layer")
					}
				}
				// Marked as weights three ways.
				h := cf.History[len(cf.History)-1]
				if !strings.HasSuffix(h.CreatedBy, " # weights") || h.Comment != "weights" || !h.Created.Time.Equal(created) {
					t.Errorf("last history entry %+v does not mark weights", h)
				}
				if cf.Config.Labels[imageops.LabelWeightsLayers] != res.Layer.Digest.String() || cf.Config.Labels["run.cog.version"] != "0.9.0" {
					t.Errorf("labels %v: want the weights layer label and the base's labels", cf.Config.Labels)
				}
				if tc.manifest == types.OCIManifestSchema1 && last.Annotations[imageops.AnnotationWeights] != "true" {
					t.Errorf("OCI weights layer annotations %v", last.Annotations)
				}
				// zstd must entropy-code fp16 weights, not store them raw.
				if tc.compression == imageops.Zstd && res.Layer.Size > res.Layer.UncompressedSize*95/100 {
					t.Errorf("zstd layer is %d bytes for %d uncompressed: weights should shrink ~10%%", res.Layer.Size, res.Layer.UncompressedSize)
				}
				if cf.RootFS.DiffIDs[len(cf.RootFS.DiffIDs)-1] != res.Layer.DiffID {
					t.Errorf("config diffID %s, result %s", cf.RootFS.DiffIDs[len(cf.RootFS.DiffIDs)-1], res.Layer.DiffID)
				}
				// No base layer byte moved: the base is in another repository of
				// the same registry, so every base layer is mounted.
				baseImg, _ := remote.Image(base, reg.User.RemoteOptions()...)
				bmf, _ := baseImg.Manifest()
				for _, l := range bmf.Layers {
					if n := proxy.Downloaded(l.Digest.String()); n != 0 {
						t.Errorf("base layer %s: %d bytes downloaded", l.Digest, n)
					}
				}
				if res.Transfer.MountedBlobs != len(bmf.Layers) {
					t.Errorf("mounted %d blobs, want the %d base layers", res.Transfer.MountedBlobs, len(bmf.Layers))
				}
				if up := proxy.Uploaded(); up < res.Layer.Size || up > res.Layer.Size+64<<10 {
					t.Errorf("%d bytes uploaded; want the weights layer (%d) plus config and no base layer", up, res.Layer.Size)
				}
				checkWeightsUnpacked(t, reg, res.Ref.String(), nil, files, strip, "src/weights")
			})
		}
	})
}

func TestAffixIsReproducible(t *testing.T) {
	tarPath, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Seed: 5})
	forEachReg(t, func(t *testing.T, reg regSetup) {
		base := reg.SeedBase(t, "repro", testenv.OCI)
		var refs []string
		for _, dest := range []string{"models/a", "models/a", "models/b:tagged"} {
			res, err := imageops.Affix(context.Background(), imageops.AffixRequest{
				Base: base.String(), Dest: reg.repo(reg.Host, dest), Weights: fileOpener(tarPath), Compression: imageops.Zstd, Created: created,
			}, reg.opts()...)
			if err != nil {
				t.Fatal(err)
			}
			refs = append(refs, res.Digest.String()+" "+res.Layer.Digest.String())
		}
		if refs[0] != refs[1] || refs[0] != refs[2] {
			t.Fatalf("same input and --created gave different digests: %v", refs)
		}
	})
}

func TestAffixIndex(t *testing.T) {
	forEachReg(t, func(t *testing.T, reg regSetup) {
		for _, f := range []testenv.Format{testenv.Docker, testenv.OCI} {
			t.Run(f.String(), func(t *testing.T) {
				base := reg.SeedBase(t, "index-"+f.String(), f, testenv.Amd64, testenv.Arm64)
				tarPath, files := testenv.WeightsTar(t, testenv.WeightsSpec{Seed: 9})

				res, err := imageops.Affix(context.Background(), imageops.AffixRequest{
					Base: base.String(), Dest: reg.repo(reg.Host, "models/index-"+f.String()+":all"), Weights: fileOpener(tarPath), Created: created,
				}, reg.opts(imageops.WithPlatform(nil))...)
				if err != nil {
					t.Fatal(err)
				}
				if len(res.Platforms) != 2 || !(types.MediaType(res.MediaType)).IsIndex() {
					t.Fatalf("--platform all gave %s with platforms %v; want an index of 2", res.MediaType, res.Platforms)
				}
				for _, p := range []v1.Platform{testenv.Amd64, testenv.Arm64} {
					checkWeightsUnpacked(t, reg, res.Ref.String(), &p, files, "", "src/weights")
				}

				one, err := imageops.Affix(context.Background(), imageops.AffixRequest{
					Base: base.String(), Dest: reg.repo(reg.Host, "models/index-"+f.String()+":arm"), Weights: fileOpener(tarPath), Created: created,
				}, reg.opts(imageops.WithPlatform(&testenv.Arm64))...)
				if err != nil {
					t.Fatal(err)
				}
				if types.MediaType(one.MediaType).IsIndex() {
					t.Fatalf("--platform linux/arm64 gave an index")
				}
				oneRef, err := name.NewDigest(one.Ref.String())
				if err != nil {
					t.Fatal(err)
				}
				img, err := remote.Image(oneRef, reg.User.RemoteOptions()...)
				if err != nil {
					t.Fatal(err)
				}
				cf, _ := img.ConfigFile()
				if cf.Architecture != "arm64" {
					t.Fatalf("--platform linux/arm64 gave a %s image", cf.Architecture)
				}
			})
		}
	})
}

// The base is on an open registry (pulled anonymously, as a public base
// is); the destination is each registry of the table.
func TestAffixFromAnotherRegistry(t *testing.T) {
	src := testenv.Registry(t)
	base := testenv.PushBase(t, src.Host, "base/far", testenv.Docker)
	tarPath, files := testenv.WeightsTar(t, testenv.WeightsSpec{Seed: 3})
	forEachReg(t, func(t *testing.T, dst regSetup) {
		res, err := imageops.Affix(context.Background(), imageops.AffixRequest{
			Base: base.String(), Dest: dst.repo(dst.Host, "models/far"), Weights: fileOpener(tarPath), Created: created,
		}, dst.opts()...)
		if err != nil {
			t.Fatal(err)
		}
		if !res.CrossRegistry || res.Transfer.MountedBlobs != 0 || res.Transfer.DownloadedBytes == 0 {
			t.Fatalf("cross-registry affix reported %+v (cross=%v); want a reported copy", res.Transfer, res.CrossRegistry)
		}
		checkWeightsUnpacked(t, dst, res.Ref.String(), nil, files, "", "src/weights")
	})
}

// A dropped connection mid-upload is retried by re-reading the input: the
// layer is rebuilt, not lost.
func TestAffixRetriesAFailedUpload(t *testing.T) {
	tarPath, files := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 2, FileSize: 2 << 20, Seed: 4})
	forEachReg(t, func(t *testing.T, reg regSetup) {
		proxy := reg.Proxy(t)
		base := reg.SeedBase(t, "retry", testenv.OCI)
		proxy.Inject(testenv.Fault{Method: "PATCH", PathContains: "/models/retry/blobs/uploads/", Count: 1})
		proxy.Inject(testenv.Fault{Method: "PUT", PathContains: "/models/retry/blobs/uploads/", Status: 503, Count: 1})
		before := proxy.Injected()
		res, err := imageops.Affix(context.Background(), imageops.AffixRequest{
			Base: base.String(), Dest: reg.repo(proxy.Host, "models/retry"), Weights: fileOpener(tarPath), Created: created,
		}, reg.opts()...)
		if err != nil {
			t.Fatalf("Affix after injected faults: %v", err)
		}
		if n := proxy.Injected() - before; n != 2 {
			t.Fatalf("%d of the 2 faults fired; the test did not make an upload fail", n)
		}
		checkWeightsUnpacked(t, reg, res.Ref.String(), nil, files, "", "src/weights")
	})
}

func TestAffixFromStdinReader(t *testing.T) {
	forEachReg(t, func(t *testing.T, reg regSetup) {
		base := reg.SeedBase(t, "stdin", testenv.OCI)
		var buf bytes.Buffer
		files, err := testenv.WriteWeights(&buf, testenv.WeightsSpec{Seed: 6})
		if err != nil {
			t.Fatal(err)
		}
		res, err := imageops.Affix(context.Background(), imageops.AffixRequest{
			Base: base.String(), Dest: reg.repo(reg.Host, "models/stdin"), Weights: imageops.OnceOpener(&buf), Created: created,
		}, reg.opts()...)
		if err != nil {
			t.Fatal(err)
		}
		checkWeightsUnpacked(t, reg, res.Ref.String(), nil, files, "", "src/weights")
	})
}

// Refused input leaves nothing in the registry: no tag, no manifest.
func TestAffixRefusesAndLeavesNothing(t *testing.T) {
	stray := filepath.Join(t.TempDir(), "stray.tar")
	writeTar(t, stray, map[string]string{"src/weights/model.bin": "w", "src/predict.py": "print('pwned')"})
	notTar := filepath.Join(t.TempDir(), "weights.zip")
	if err := os.WriteFile(notTar, []byte("PK\x03\x04 not a tarball at all, a zip"), 0o644); err != nil {
		t.Fatal(err)
	}
	good, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Seed: 8})
	forEachReg(t, func(t *testing.T, reg regSetup) {
		base := reg.SeedBase(t, "refuse", testenv.OCI)
		cases := []struct {
			name, base, tar string
			want            func(error) bool
		}{
			{"stray predict.py", base.String(), stray, func(err error) bool {
				var pe *imageops.PolicyError
				return errors.As(err, &pe) && strings.Contains(err.Error(), "src/predict.py")
			}},
			{"not a tar", base.String(), notTar, func(err error) bool { return errors.Is(err, imageops.ErrNotTar) }},
			{"missing base", reg.Host + "/base/nope:latest", good, func(err error) bool { return errors.Is(err, imageops.ErrNotFound) }},
			{"bad reference", "Not A Reference", good, func(err error) bool { return errors.Is(err, imageops.ErrInvalid) }},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				dest := reg.repo(reg.Host, "models/refused-"+strings.ReplaceAll(tc.name, " ", "-"))
				_, err := imageops.Affix(context.Background(), imageops.AffixRequest{
					Base: tc.base, Dest: dest + ":v1", Weights: fileOpener(tc.tar), Created: created,
				}, reg.opts()...)
				if err == nil || !tc.want(err) {
					t.Fatalf("Affix = %v; want the %s error", err, tc.name)
				}
				if herr := reg.head(t, dest+":v1"); herr == nil {
					t.Fatalf("a refused affix left %s in the registry", dest+":v1")
				}
			})
		}
	})
}

func TestAffixAllowOutsideTargetReplacesCode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "w.tar")
	// writeTar sorts names; "src/weights/..." after "src/predict.py" would
	// make the first entry decide a relative layout, so use a name that sorts
	// first under the target.
	writeTar(t, p, map[string]string{"src/weights/a.bin": "weights", "src/zz-predict.py": "new code"})
	forEachReg(t, func(t *testing.T, reg regSetup) {
		base := reg.SeedBase(t, "outside", testenv.Docker)
		res, err := imageops.Affix(context.Background(), imageops.AffixRequest{
			Base: base.String(), Dest: reg.repo(reg.Host, "models/outside"), Weights: fileOpener(p), Created: created, AllowOutsideTarget: true,
		}, reg.opts()...)
		if err != nil {
			t.Fatal(err)
		}
		root := reg.unpack(t, res.Ref.String(), nil)
		for file, want := range map[string]string{"src/zz-predict.py": "new code", "src/weights/a.bin": "weights", "src/predict.py": testenv.Predict} {
			if got, err := os.ReadFile(filepath.Join(root, file)); err != nil || string(got) != want {
				t.Errorf("/%s = %q, %v; want %q", file, got, err, want)
			}
		}
	})
}

// A registry that answers 429 with Retry-After: the failure carries the
// pause it asked for, for the worker's retry to honour.
func TestAffixReportsRetryAfter(t *testing.T) {
	tarPath, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Seed: 81})
	forEachReg(t, func(t *testing.T, reg regSetup) {
		proxy := reg.Proxy(t)
		base := reg.SeedBase(t, "busy", testenv.OCI)
		proxy.Inject(testenv.Fault{Method: "POST", PathContains: "/models/busy/blobs/uploads/", Status: 429, RetryAfter: "7", Count: 100})
		_, err := imageops.Affix(context.Background(), imageops.AffixRequest{
			Base: base.String(), Dest: reg.repo(proxy.Host, "models/busy"), Weights: fileOpener(tarPath), Created: created,
		}, reg.opts()...)
		var ra *imageops.RetryAfterError
		if !errors.As(err, &ra) || ra.After != 7*time.Second || imageops.IsPermanent(err) {
			t.Fatalf("Affix against a busy registry = %v; want a transient RetryAfterError of 7s", err)
		}
	})
}
