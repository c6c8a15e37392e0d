package imageops_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

// zstdSpec makes a weights layer of ~2 MiB compressed, above a 1 MiB
// --min-size, on top of base layers of a few hundred bytes.
var zstdSpec = testenv.WeightsSpec{Files: 2, FileSize: 1536 << 10, Seed: 21}

// pushZstdSource pushes a weights image (r8im convention: a config label,
// plus the layer annotation on OCI) for one platform, or an index of two,
// as the user to host/alice/repoTag.
func pushZstdSource(t *testing.T, reg regSetup, host, repoTag string, f testenv.Format, index bool) ([]testenv.WeightsFile, name.Digest) {
	t.Helper()
	if index {
		idx, files := testenv.WeightsIndex(t, f, testenv.R8imWeights, zstdSpec)
		return files, reg.push(t, host, repoTag, idx)
	}
	img, files := testenv.WeightsImage(t, f, testenv.Amd64, testenv.R8imWeights, zstdSpec)
	return files, reg.push(t, host, repoTag, img)
}

// recorder collects progress reports from concurrent jobs.
type recorder struct {
	mu     sync.Mutex
	events []imageops.Progress
}

func (r *recorder) report(p imageops.Progress) {
	r.mu.Lock()
	r.events = append(r.events, p)
	r.mu.Unlock()
}

func (r *recorder) last(stage string) (imageops.Progress, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.events) - 1; i >= 0; i-- {
		if r.events[i].Stage == stage {
			return r.events[i], true
		}
	}
	return imageops.Progress{}, false
}

// checkZstdImage compares one platform's result image with its source: OCI
// types, the config byte for byte, and each layer recompressed (or kept,
// for those in kept) with its source annotation.
func checkZstdImage(t *testing.T, src, out v1.Image, kept map[string]string) {
	t.Helper()
	smf, _ := src.Manifest()
	omf, err := out.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if omf.MediaType != types.OCIManifestSchema1 || omf.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("result manifest %s with config %s; want OCI types", omf.MediaType, omf.Config.MediaType)
	}
	sraw, _ := src.RawConfigFile()
	oraw, _ := out.RawConfigFile()
	if string(sraw) != string(oraw) || omf.Config.Digest != smf.Config.Digest {
		t.Errorf("the config changed: %s → %s", smf.Config.Digest, omf.Config.Digest)
	}
	scf, _ := src.ConfigFile()
	ocf, _ := out.ConfigFile()
	for what, pair := range map[string][2]any{
		"diffIDs":  {scf.RootFS.DiffIDs, ocf.RootFS.DiffIDs},
		"history":  {scf.History, ocf.History},
		"env":      {scf.Config.Env, ocf.Config.Env},
		"cmd":      {scf.Config.Cmd, ocf.Config.Cmd},
		"labels":   {scf.Config.Labels, ocf.Config.Labels},
		"created":  {scf.Created, ocf.Created},
		"author":   {scf.Author, ocf.Author},
		"platform": {scf.Architecture, ocf.Architecture},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			t.Errorf("config %s changed: %v → %v", what, pair[0], pair[1])
		}
	}
	if len(omf.Layers) != len(smf.Layers) {
		t.Fatalf("%d layers, source has %d", len(omf.Layers), len(smf.Layers))
	}
	for i, ol := range omf.Layers {
		sl := smf.Layers[i]
		if reason, ok := kept[sl.Digest.String()]; ok {
			if ol.Digest != sl.Digest || ol.MediaType != ociOf(sl.MediaType) {
				t.Errorf("layer %d (kept, %s): %s %s; want the same blob as %s", i, reason, ol.Digest, ol.MediaType, ociOf(sl.MediaType))
			}
			continue
		}
		if ol.MediaType != types.OCILayerZStd || ol.Digest == sl.Digest {
			t.Errorf("layer %d: %s %s; want a new zstd layer", i, ol.MediaType, ol.Digest)
		}
		if ol.Annotations[imageops.AnnotationSource] != sl.Digest.String() {
			t.Errorf("layer %d annotations %v; want %s=%s", i, ol.Annotations, imageops.AnnotationSource, sl.Digest)
		}
		for k, v := range sl.Annotations {
			if ol.Annotations[k] != v {
				t.Errorf("layer %d lost annotation %s=%s: %v", i, k, v, ol.Annotations)
			}
		}
	}
	// The weights layer stays marked, although the label names its old digest.
	if last := omf.Layers[len(omf.Layers)-1]; last.Annotations[imageops.AnnotationWeights] != "true" {
		t.Errorf("weights layer annotations %v; want %s=true", last.Annotations, imageops.AnnotationWeights)
	}
}

func ociOf(mt types.MediaType) types.MediaType {
	switch mt {
	case types.DockerLayer:
		return types.OCILayer
	case types.DockerUncompressedLayer:
		return types.OCIUncompressedLayer
	}
	return mt
}

// checkUnpacked unpacks one platform of ref with skopeo + umoci and checks
// the code and the weights.
func checkUnpacked(t *testing.T, reg regSetup, ref string, p *v1.Platform, files []testenv.WeightsFile) {
	t.Helper()
	root := reg.unpack(t, ref, p)
	if got, err := os.ReadFile(filepath.Join(root, "src/predict.py")); err != nil || string(got) != testenv.Predict {
		t.Fatalf("/src/predict.py = %q, %v", got, err)
	}
	for _, f := range files {
		if got := testenv.FileSHA256(t, filepath.Join(root, f.Name)); got != f.SHA256 {
			t.Fatalf("%s: sha256 %s, want %s", f.Name, got, f.SHA256)
		}
	}
}

func TestZstd(t *testing.T) {
	forEachReg(t, func(t *testing.T, reg regSetup) {
		proxy := reg.Proxy(t)
		for _, tc := range []struct {
			format testenv.Format
			index  bool
		}{
			{testenv.Docker, false},
			{testenv.OCI, false},
			{testenv.Docker, true},
			{testenv.OCI, true},
		} {
			kind := "image"
			if tc.index {
				kind = "index"
			}
			t.Run(tc.format.String()+"/"+kind, func(t *testing.T) {
				repo := tc.format.String() + "-" + kind
				files, src := pushZstdSource(t, reg, proxy.Host, "src/"+repo+":v1", tc.format, tc.index)
				platforms := []v1.Platform{testenv.Amd64}
				opts := reg.opts(imageops.WithJobs(3))
				if tc.index {
					platforms = append(platforms, testenv.Arm64)
					opts = append(opts, imageops.WithPlatform(nil))
				}
				var rec recorder
				proxy.Reset()
				res, err := imageops.Recompress(context.Background(), imageops.ZstdRequest{
					Source: src.String(), Dest: reg.repo(proxy.Host, "zstd/"+repo+":v1"),
				}, append(opts, imageops.WithProgress(rec.report))...)
				if err != nil {
					t.Fatalf("Recompress: %v", err)
				}

				wantType := types.OCIManifestSchema1
				if tc.index {
					wantType = types.OCIImageIndex
				}
				if res.MediaType != string(wantType) || res.Source.String() != src.String() || res.Tag != "v1" {
					t.Errorf("result %s from %s tag %q; want %s from %s tag v1", res.MediaType, res.Source, res.Tag, wantType, src)
				}
				if tc.index && len(res.Platforms) != 2 {
					t.Errorf("platforms %v; want 2", res.Platforms)
				}
				var stages []string
				for _, s := range res.Stages {
					stages = append(stages, s.Name)
				}
				if !slices.Equal(stages, []string{"resolve", "recompress", "push", "verify"}) {
					t.Errorf("stages %v", stages)
				}

				// Every distinct layer once; shared ones downloaded once.
				distinct := map[string]int64{}
				for _, p := range platforms {
					srcImg := reg.image(t, src.String(), p)
					checkZstdImage(t, srcImg, reg.image(t, res.Ref.String(), p), nil)
					mf, _ := srcImg.Manifest()
					for _, l := range mf.Layers {
						distinct[l.Digest.String()] = l.Size
					}
				}
				if len(res.Layers) != len(distinct) {
					t.Errorf("%d layers reported; the source has %d distinct layers", len(res.Layers), len(distinct))
				}
				var oldTotal, newTotal int64
				for _, l := range res.Layers {
					if !l.Recompressed || l.Reason != "" || l.OldSize != distinct[l.Source.String()] || l.NewSize <= 0 {
						t.Errorf("layer %+v; want recompressed with its sizes", l)
					}
					if n := proxy.Downloaded(l.Source.String()); n != l.OldSize {
						t.Errorf("layer %s: %d bytes downloaded, want it once (%d)", l.Source, n, l.OldSize)
					}
					oldTotal += l.OldSize
					newTotal += l.NewSize
				}
				// Only the new layers are uploaded: configs are mounted.
				if up := proxy.Uploaded(); up < newTotal || up > newTotal+16<<10 {
					t.Errorf("%d bytes uploaded; want the %d bytes of new layers", up, newTotal)
				}
				// Downloads: each source layer once, plus the configs.
				if d := res.Transfer.DownloadedBytes; d < oldTotal || d > oldTotal+16<<10 || res.Transfer.UploadedBytes < newTotal {
					t.Errorf("transfer %+v; want %d down, %d up", res.Transfer, oldTotal, newTotal)
				}
				if p, ok := rec.last("recompress"); !ok || p.Done != oldTotal || p.Total != oldTotal {
					t.Errorf("last recompress progress %+v; want %d of %d", p, oldTotal, oldTotal)
				}
				for _, p := range platforms {
					checkUnpacked(t, reg, res.Ref.String(), &p, files)
				}
			})
		}
	})
}

// Recompressing a recompressed image changes nothing: no layer is
// converted, no byte uploaded, and the result is the same manifest.
func TestZstdKeepsZstdLayers(t *testing.T) {
	forEachReg(t, func(t *testing.T, reg regSetup) {
		proxy := reg.Proxy(t)
		for _, index := range []bool{false, true} {
			kind := map[bool]string{false: "image", true: "index"}[index]
			t.Run(kind, func(t *testing.T) {
				_, src := pushZstdSource(t, reg, proxy.Host, "src/again-"+kind+":v1", testenv.Docker, index)
				opts := reg.opts(imageops.WithPlatform(nil))
				first, err := imageops.Recompress(context.Background(), imageops.ZstdRequest{Source: src.String(), Dest: reg.repo(proxy.Host, "zstd/once-"+kind)}, opts...)
				if err != nil {
					t.Fatal(err)
				}
				proxy.Reset()
				second, err := imageops.Recompress(context.Background(), imageops.ZstdRequest{Source: first.Ref.String(), Dest: reg.repo(proxy.Host, "zstd/twice-"+kind+":v2")}, opts...)
				if err != nil {
					t.Fatal(err)
				}
				if second.Digest != first.Digest {
					t.Errorf("second run gave %s, first %s; want the same manifest", second.Digest, first.Digest)
				}
				for _, l := range second.Layers {
					if l.Recompressed || l.Reason != imageops.ReasonZstd || l.Digest != l.Source {
						t.Errorf("layer %+v; want kept as already zstd", l)
					}
				}
				if up := proxy.Uploaded(); up != 0 {
					t.Errorf("%d blob bytes uploaded; want none (everything mounted)", up)
				}
				if second.Transfer.DownloadedBytes > 16<<10 || second.Transfer.MountedBlobs == 0 {
					t.Errorf("transfer %+v; want mounts and no layer downloaded (configs only)", second.Transfer)
				}
				out := reg.image(t, second.Ref.String(), testenv.Amd64)
				in := reg.image(t, src.String(), testenv.Amd64)
				ocf, _ := out.ConfigFile()
				icf, _ := in.ConfigFile()
				if !reflect.DeepEqual(ocf.RootFS.DiffIDs, icf.RootFS.DiffIDs) {
					t.Errorf("diffIDs changed: %v → %v", icf.RootFS.DiffIDs, ocf.RootFS.DiffIDs)
				}
			})
		}
	})
}

// Layers below MinSize keep their blob (under its OCI type) and are
// mounted, not re-uploaded.
func TestZstdMinSizeKeepsSmallLayers(t *testing.T) {
	forEachReg(t, func(t *testing.T, reg regSetup) {
		proxy := reg.Proxy(t)
		files, src := pushZstdSource(t, reg, proxy.Host, "src/minsize:v1", testenv.Docker, false)
		srcImg := reg.image(t, src.String(), testenv.Amd64)
		smf, _ := srcImg.Manifest()
		weights := smf.Layers[len(smf.Layers)-1]
		if weights.Size < 1<<20 {
			t.Fatalf("test setup: the weights layer is %d bytes; want more than 1 MiB", weights.Size)
		}

		proxy.Reset()
		res, err := imageops.Recompress(context.Background(), imageops.ZstdRequest{
			Source: src.String(), Dest: reg.repo(proxy.Host, "zstd/minsize"), MinSize: 1 << 20, Level: 1,
		}, reg.opts()...)
		if err != nil {
			t.Fatal(err)
		}
		kept := map[string]string{}
		var newSize int64
		for _, l := range res.Layers {
			if l.Source.String() == weights.Digest.String() {
				if !l.Recompressed {
					t.Errorf("weights layer %+v not recompressed", l)
				}
				newSize = l.NewSize
				continue
			}
			if l.Recompressed || l.Reason != imageops.ReasonSmall || l.Digest != l.Source || l.NewSize != l.OldSize {
				t.Errorf("small layer %+v; want kept below the minimum size", l)
			}
			kept[l.Source.String()] = l.Reason
			if n := proxy.Downloaded(l.Source.String()); n != 0 {
				t.Errorf("kept layer %s: %d bytes downloaded", l.Source, n)
			}
		}
		if len(kept) != len(smf.Layers)-1 {
			t.Errorf("%d layers kept; want the %d base layers", len(kept), len(smf.Layers)-1)
		}
		checkZstdImage(t, srcImg, reg.image(t, res.Ref.String(), testenv.Amd64), kept)
		if up := proxy.Uploaded(); up < newSize || up > newSize+16<<10 {
			t.Errorf("%d bytes uploaded; want only the new weights layer (%d)", up, newSize)
		}
		if res.Transfer.MountedBlobs < len(kept) || res.Transfer.MountedBytes == 0 {
			t.Errorf("transfer %+v; want the %d kept layers mounted, and their bytes counted", res.Transfer, len(kept))
		}
		checkUnpacked(t, reg, res.Ref.String(), nil, files)
	})
}

// A source layer whose content does not match its config's diffID fails
// the whole operation, and nothing reaches the destination.
func TestZstdRefusesCorruptSource(t *testing.T) {
	img, _ := testenv.WeightsImage(t, testenv.OCI, testenv.Amd64, testenv.R8imWeights, zstdSpec)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	bogus := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	cf.RootFS.DiffIDs[len(cf.RootFS.DiffIDs)-1] = bogus
	bad, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	forEachReg(t, func(t *testing.T, reg regSetup) {
		src := reg.push(t, reg.Host, "src/corrupt:v1", bad)
		good := reg.SeedBase(t, "good", testenv.OCI)

		for _, tc := range []struct {
			name string
			req  imageops.ZstdRequest
			want func(error) bool
		}{
			{"diffID mismatch", imageops.ZstdRequest{Source: src.String()}, func(err error) bool {
				return strings.Contains(err.Error(), "uncompressed content hashes to") && strings.Contains(err.Error(), "the config says "+bogus.String())
			}},
			{"level too high", imageops.ZstdRequest{Source: good.String(), Level: 23}, func(err error) bool { return errors.Is(err, imageops.ErrInvalid) }},
			{"negative min size", imageops.ZstdRequest{Source: good.String(), MinSize: -1}, func(err error) bool { return errors.Is(err, imageops.ErrInvalid) }},
			{"missing source", imageops.ZstdRequest{Source: reg.repo(reg.Host, "src/nope:v1")}, func(err error) bool { return errors.Is(err, imageops.ErrNotFound) }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				dest := reg.repo(reg.Host, "zstd/refused-"+strings.ToLower(strings.ReplaceAll(tc.name, " ", "-"))+":v1")
				tc.req.Dest = dest
				_, err := imageops.Recompress(context.Background(), tc.req, reg.opts()...)
				if err == nil || !tc.want(err) {
					t.Fatalf("Recompress = %v; want the %s error", err, tc.name)
				}
				if herr := reg.head(t, dest); herr == nil {
					t.Fatalf("a failed recompression left %s in the registry", dest)
				}
			})
		}
	})
}

// Converting one layer at a time or several at once gives the same image,
// byte for byte, with the layers in the source's order: the layer cache and
// resumed uploads rely on zstd output not depending on how the work was
// scheduled.
func TestZstdJobsGiveTheSameImage(t *testing.T) {
	forEachReg(t, func(t *testing.T, reg regSetup) {
		_, src := pushZstdSource(t, reg, reg.Host, "src/jobs:v1", testenv.Docker, false)
		var digests []string
		var layers [][]string
		for _, jobs := range []int{1, 4} {
			res, err := imageops.Recompress(context.Background(), imageops.ZstdRequest{
				Source: src.String(), Dest: reg.repo(reg.Host, "zstd/jobs-"+strconv.Itoa(jobs)+":v1"),
			}, reg.opts(imageops.WithJobs(jobs))...)
			if err != nil {
				t.Fatalf("Recompress with %d jobs: %v", jobs, err)
			}
			digests = append(digests, res.Digest.String())
			var ls []string
			for _, l := range res.Layers {
				ls = append(ls, l.Source.String()+"→"+l.Digest.String())
			}
			layers = append(layers, ls)
		}
		if digests[0] != digests[1] || !slices.Equal(layers[0], layers[1]) {
			t.Errorf("1 job: %s %v\n4 jobs: %s %v", digests[0], layers[0], digests[1], layers[1])
		}
		srcImg := reg.image(t, src.String(), testenv.Amd64)
		smf, _ := srcImg.Manifest()
		if len(smf.Layers) < 2 || len(layers[1]) != len(smf.Layers) {
			t.Fatalf("%d layers converted from %d; want every layer of a multi-layer source", len(layers[1]), len(smf.Layers))
		}
		for i, l := range smf.Layers {
			if !strings.HasPrefix(layers[1][i], l.Digest.String()+"→") {
				t.Errorf("result layer %d is %s; want the conversion of source layer %s", i, layers[1][i], l.Digest)
			}
		}
		checkZstdImage(t, srcImg, reg.image(t, reg.repo(reg.Host, "zstd/jobs-4:v1"), testenv.Amd64), nil)
	})
}

// A dropped upload is retried: the layer is converted again from the
// source, and the result is the same.
func TestZstdRetriesAFailedUpload(t *testing.T) {
	forEachReg(t, func(t *testing.T, reg regSetup) {
		proxy := reg.Proxy(t)
		files, src := pushZstdSource(t, reg, proxy.Host, "src/retry:v1", testenv.OCI, false)
		clean, err := imageops.Recompress(context.Background(), imageops.ZstdRequest{Source: src.String(), Dest: reg.repo(proxy.Host, "zstd/clean")}, reg.opts()...)
		if err != nil {
			t.Fatal(err)
		}
		proxy.Inject(testenv.Fault{Method: "PATCH", PathContains: "/zstd/retry/blobs/uploads/", Count: 1})
		proxy.Inject(testenv.Fault{Method: "PUT", PathContains: "/zstd/retry/blobs/uploads/", Status: 503, Count: 1})
		res, err := imageops.Recompress(context.Background(), imageops.ZstdRequest{Source: src.String(), Dest: reg.repo(proxy.Host, "zstd/retry")}, reg.opts()...)
		if err != nil {
			t.Fatalf("Recompress after injected faults: %v", err)
		}
		if res.Digest != clean.Digest {
			t.Errorf("retried conversion gave %s, a clean one %s", res.Digest, clean.Digest)
		}
		checkUnpacked(t, reg, res.Ref.String(), nil, files)
	})
}

// A source blob cut short or dropped on the wire is fetched again (the
// stream layer reopens its pass) and the result is the same image as a
// clean conversion: the blob is read without go-containerregistry's digest
// check, so this is the length and diffID checks at work.
func TestZstdSourceCutShort(t *testing.T) {
	forEachReg(t, func(t *testing.T, reg regSetup) {
		proxy := reg.Proxy(t)
		files, src := pushZstdSource(t, reg, proxy.Host, "src/short:v1", testenv.OCI, false)
		clean, err := imageops.Recompress(context.Background(), imageops.ZstdRequest{Source: src.String(), Dest: reg.repo(proxy.Host, "zstd/clean")}, reg.opts()...)
		if err != nil {
			t.Fatal(err)
		}
		img, err := remote.Image(src, reg.User.RemoteOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		big := m.Layers[0]
		for _, l := range m.Layers {
			if l.Size > big.Size {
				big = l
			}
		}
		for i, f := range []testenv.Fault{
			{Method: "GET", PathContains: "/blobs/" + big.Digest.String(), Truncate: true, Count: 1},
			{Method: "GET", PathContains: "/blobs/" + big.Digest.String(), Status: 0, Count: 1}, // connection dropped
		} {
			before := proxy.Injected()
			proxy.Inject(f)
			res, err := imageops.Recompress(context.Background(), imageops.ZstdRequest{Source: src.String(), Dest: reg.repo(proxy.Host, "zstd/short-"+strconv.Itoa(i))}, reg.opts()...)
			if err != nil {
				t.Fatalf("fault %d: %v", i, err)
			}
			if proxy.Injected() != before+1 {
				t.Fatalf("fault %d never fired", i)
			}
			if res.Digest != clean.Digest {
				t.Errorf("fault %d: the result is %s, a clean conversion %s", i, res.Digest, clean.Digest)
			}
			checkUnpacked(t, reg, res.Ref.String(), nil, files)
		}
	})
}

// BenchmarkRecompress converts a 256 MiB fp16 weights layer (plus the small
// base layers) through a local registry: download, gunzip, zstd, hash,
// upload. Bytes are the source's compressed bytes.
func BenchmarkRecompress(b *testing.B) {
	reg := testenv.Registry(b)
	img, _ := testenv.WeightsImage(b, testenv.OCI, testenv.Amd64, testenv.R8imWeights, testenv.WeightsSpec{Files: 4, FileSize: 64 << 20, Seed: 41})
	src := testenv.Push(b, reg.Host+"/src/bench:v1", img)
	mf, err := img.Manifest()
	if err != nil {
		b.Fatal(err)
	}
	var total int64
	for _, l := range mf.Layers {
		total += l.Size
	}
	for _, level := range []int{1, 3, 6} {
		b.Run("level"+strconv.Itoa(level), func(b *testing.B) {
			b.SetBytes(total)
			var res *imageops.ZstdResult
			for i := 0; b.Loop(); i++ {
				res, err = imageops.Recompress(context.Background(), imageops.ZstdRequest{
					Source: src.String(), Dest: reg.Host + "/zstd/bench-" + strconv.Itoa(level) + "-" + strconv.Itoa(i), Level: level,
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			var newTotal int64
			for _, l := range res.Layers {
				newTotal += l.NewSize
			}
			b.ReportMetric(float64(newTotal)/float64(total), "new/old")
			b.Logf("stages %+v transfer %+v", res.Stages, res.Transfer)
		})
	}
}
