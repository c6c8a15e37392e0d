package imageops_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

var layoutCreated = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// TestAffixTreeLayouts: sharded weights as a directory and as a .tar made
// by GNU tar give the same image (auto layout): one uncompressed layer per
// shard of 64 MiB and one gzip bundle of the rest, whatever the number of
// jobs; skopeo+umoci unpack every file byte for byte, extract returns them
// and remix carries the layers. The same tarball streamed (read in order)
// is cut as it arrives: the shards' layers are the same blobs.
func TestAffixTreeLayouts(t *testing.T) {
	dir, files := testenv.WeightsDir(t, testenv.WeightsSpec{Files: 4, FileSize: imageops.BigFileSize, Seed: 14})
	if err := os.MkdirAll(filepath.Join(dir, "tokenizer"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tokenizer", "vocab.txt"), []byte("hello\nworld\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("config.json", filepath.Join(dir, "cfg")); err != nil {
		t.Fatal(err)
	}
	tarPath := testenv.TarDir(t, dir)
	tarTree, err := imageops.TarFileTree(tarPath)
	if err != nil {
		t.Fatal(err)
	}

	forEachReg(t, func(t *testing.T, r regSetup) {
		base := r.SeedBase(t, "layouts", testenv.Docker)
		affix := func(name string, req imageops.AffixRequest, jobs int) *imageops.AffixResult {
			t.Helper()
			req.Base, req.Dest, req.Created = base.String(), r.User.Repo("layouts/"+name), layoutCreated
			res, err := imageops.Affix(context.Background(), req, r.opts(imageops.WithJobs(jobs))...)
			if err != nil {
				t.Fatalf("affix %s: %v", name, err)
			}
			return res
		}
		fromDir := affix("dir", imageops.AffixRequest{Tree: imageops.DirTree(dir)}, 4)
		fromTar := affix("tar", imageops.AffixRequest{Tree: tarTree}, 4)
		oneJob := affix("dir1", imageops.AffixRequest{Tree: imageops.DirTree(dir)}, 1)
		if fromDir.Digest != fromTar.Digest || fromDir.Digest != oneJob.Digest {
			t.Fatalf("image digests differ: dir %s, tar %s, dir with 1 job %s", fromDir.Digest, fromTar.Digest, oneJob.Digest)
		}

		if len(fromDir.Layers) != 5 {
			t.Fatalf("%d weights layers, want a bundle and 4 shards: %+v", len(fromDir.Layers), fromDir.Layers)
		}
		bundle := fromDir.Layers[0]
		if bundle.MediaType != string(types.DockerLayer) || bundle.Files != 2 || bundle.Source != imageops.LayerUploaded {
			t.Errorf("bundle layer %+v: want gzip with config.json and tokenizer/vocab.txt, uploaded", bundle)
		}
		for i, l := range fromDir.Layers[1:] {
			if l.MediaType != string(types.DockerUncompressedLayer) || l.Files != 1 || l.Size != l.UncompressedSize || l.Digest != l.DiffID ||
				l.ReadBytes != imageops.BigFileSize {
				t.Errorf("shard layer %d %+v: want one uncompressed file of %d bytes, read once", i+1, l, imageops.BigFileSize)
			}
		}
		if fromDir.ReadBytes != 4*imageops.BigFileSize+int64(len("hello\nworld\n"))+files[0].Size {
			t.Errorf("read %d content bytes, want every file once", fromDir.ReadBytes)
		}

		// The layers are what `layers` lists as weights, in order.
		infos, err := imageops.Layers(context.Background(), fromDir.Ref.String(), r.opts()...)
		if err != nil {
			t.Fatal(err)
		}
		var weights []string
		for _, li := range infos[0].Layers {
			if li.Weights == imageops.MarkedR8im {
				weights = append(weights, li.Digest.String())
			}
		}
		if len(weights) != 5 || weights[0] != bundle.Digest.String() || weights[4] != fromDir.Layers[4].Digest.String() {
			t.Errorf("layers lists weights layers %v, want the 5 affixed ones in order", weights)
		}

		root := r.unpack(t, fromDir.Ref.String(), nil)
		checkFiles(t, filepath.Join(root, "src/weights"), files, "unpacked")
		if l, err := os.Readlink(filepath.Join(root, "src/weights/cfg")); err != nil || l != "config.json" {
			t.Errorf("cfg unpacked as %q, %v; want the symlink to config.json", l, err)
		}

		// extract returns every file of every weights layer.
		out := filepath.Join(t.TempDir(), "out")
		ex, err := imageops.ExtractToDir(context.Background(), fromDir.Ref.String(), out, imageops.ExtractOptions{StripTarget: true}, r.opts()...)
		if err != nil {
			t.Fatal(err)
		}
		if ex.Files != len(files)+1 || len(ex.Layers) != 5 {
			t.Errorf("extract wrote %d files from %d layers, want %d from 5", ex.Files, len(ex.Layers), len(files)+1)
		}
		checkFiles(t, out, files, "extracted")

		// remix carries every weights layer onto another base.
		other := r.SeedBase(t, "layouts-other", testenv.Docker)
		rx, err := imageops.Remix(context.Background(), imageops.RemixRequest{Base: other.String(), Weights: fromDir.Ref.String(), Dest: r.User.Repo("layouts/remix")}, r.opts()...)
		if err != nil {
			t.Fatal(err)
		}
		infos, err = imageops.Layers(context.Background(), rx.Ref.String(), r.opts()...)
		if err != nil {
			t.Fatal(err)
		}
		var remixed []string
		for _, li := range infos[0].Layers {
			if li.Weights == imageops.MarkedR8im {
				remixed = append(remixed, li.Digest.String())
			}
		}
		if fmt.Sprint(remixed) != fmt.Sprint(weights) || len(rx.Added) != len(weights) {
			t.Errorf("the remix holds weights layers %v (added %d), want the 5 weights layers in order %v", remixed, len(rx.Added), weights)
		}

		// A stream is cut as it is read: small entries bundled until a
		// shard, which gets its own layer, the same blob as from the tree.
		st := affix("stream", imageops.AffixRequest{Weights: func() (io.ReadCloser, error) { return os.Open(tarPath) }}, 4)
		if len(st.Layers) != 6 || st.Layer.Files != len(files)+1 || st.Layers[0].MediaType != string(types.DockerLayer) || st.Layers[5].MediaType != string(types.DockerLayer) {
			t.Fatalf("streamed tarball: %+v, want cfg and config.json bundled, 4 shards, the tokenizer bundled", st.Layers)
		}
		for i := 1; i <= 4; i++ {
			if st.Layers[i].Digest != fromDir.Layers[i].Digest {
				t.Errorf("shard %d streamed is layer %s, from the tree %s", i, st.Layers[i].Digest, fromDir.Layers[i].Digest)
			}
		}
		root = r.unpack(t, st.Ref.String(), nil)
		checkFiles(t, filepath.Join(root, "src/weights"), files, "streamed, unpacked")
	})
}

// TestAffixPerFileLayout: every file its own layer, links and directories
// bundled.
func TestAffixPerFileLayout(t *testing.T) {
	dir, files := testenv.WeightsDir(t, testenv.WeightsSpec{Files: 3, Seed: 15})
	r := regSetup{testenv.Registries(t)[1].Start(t)}
	base := r.SeedBase(t, "perfile", testenv.OCI)
	res, err := imageops.Affix(context.Background(), imageops.AffixRequest{Base: base.String(), Dest: r.User.Repo("perfile/x"),
		Tree: imageops.DirTree(dir), Layout: imageops.LayoutPerFile, Created: layoutCreated}, r.opts()...)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Layers) != len(files) {
		t.Fatalf("%d layers for %d files: %+v", len(res.Layers), len(files), res.Layers)
	}
	for i, l := range res.Layers {
		if l.Files != 1 || l.MediaType != string(types.OCIUncompressedLayer) {
			t.Errorf("layer %d %+v: want one uncompressed file", i, l)
		}
	}
	root := r.unpack(t, res.Ref.String(), nil)
	checkFiles(t, filepath.Join(root, "src/weights"), files, "unpacked")
}

// TestAffixReusesKnownLayers: with a layer-digest cache, publishing the same
// weights to another repository of the registry mounts every layer (0 bytes
// read, 0 sent), to the same repository finds them; a changed file's layer
// alone is produced again; wrong cache entries are never trusted.
func TestAffixReusesKnownLayers(t *testing.T) {
	dir, files := testenv.WeightsDir(t, testenv.WeightsSpec{Files: 3, FileSize: 1 << 20, Seed: 16})
	cache := imageops.FileLayerDigests{Dir: t.TempDir()}
	forEachReg(t, func(t *testing.T, r regSetup) {
		base := r.SeedBase(t, "reuse", testenv.OCI)
		publish := func(repo string) *imageops.AffixResult {
			t.Helper()
			res, err := imageops.Affix(context.Background(), imageops.AffixRequest{Base: base.String(), Dest: r.User.Repo(repo),
				Tree: imageops.DirTree(dir), Layout: imageops.LayoutPerFile, Created: layoutCreated}, r.opts(imageops.WithLayerDigests(cache))...)
			if err != nil {
				t.Fatalf("publishing to %s: %v", repo, err)
			}
			return res
		}
		sources := func(res *imageops.AffixResult) (out []string) {
			for _, l := range res.Layers {
				out = append(out, l.Source)
			}
			return out
		}
		first := publish("reuse/a")
		if first.ReadBytes == 0 || first.Transfer.UploadedBytes < first.Layer.Size {
			t.Fatalf("first publish read %d, sent %d: want everything", first.ReadBytes, first.Transfer.UploadedBytes)
		}

		img := r.image(t, first.Ref.String(), testenv.Amd64)
		mf, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		second := publish("reuse/b")
		for _, l := range second.Layers {
			if l.Source != imageops.LayerMounted || !l.Cached {
				t.Errorf("publishing to another repository: layers %v; want every one mounted", sources(second))
				break
			}
		}
		if second.ReadBytes != 0 || second.Transfer.UploadedBytes != mf.Config.Size || second.Transfer.MountedBlobs < len(files) || second.Digest != first.Digest {
			t.Errorf("publishing to another repository read %d, sent %d, mounted %d blobs, gave %s; want 0 read, only the config (%d bytes) sent, at least %d mounted, %s",
				second.ReadBytes, second.Transfer.UploadedBytes, second.Transfer.MountedBlobs, second.Digest, mf.Config.Size, len(files), first.Digest)
		}
		third := publish("reuse/b")
		for _, l := range third.Layers {
			if l.Source != imageops.LayerFound {
				t.Errorf("publishing to the same repository again: layers %v; want every one found", sources(third))
				break
			}
		}

		// A changed shard (same size, new content and mtime): its layer
		// alone is read and sent.
		shard := filepath.Join(dir, files[2].Name)
		b, err := os.ReadFile(shard)
		if err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0xff
		if err := os.WriteFile(shard, b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b[0] ^= 0xff; _ = os.WriteFile(shard, b, 0o644) })
		changed := publish("reuse/b")
		got := sources(changed)
		if got[2] != imageops.LayerUploaded || changed.ReadBytes != files[2].Size || got[0] != imageops.LayerFound || got[1] != imageops.LayerFound {
			t.Errorf("one shard changed: layers %v, %d bytes read; want only layer 3 uploaded, %d bytes read", got, changed.ReadBytes, files[2].Size)
		}
		b[0] ^= 0xff
		if err := os.WriteFile(shard, b, 0o644); err != nil {
			t.Fatal(err)
		}

		// Wrong entries (every size off by one): nothing is trusted, every
		// layer is produced again, the image is the first one.
		entries, err := filepath.Glob(filepath.Join(cache.Dir, "*.json"))
		if err != nil || len(entries) == 0 {
			t.Fatalf("cache entries: %v, %v", entries, err)
		}
		for _, p := range entries {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var l imageops.CachedLayer
			if err := json.Unmarshal(b, &l); err != nil {
				t.Fatal(err)
			}
			l.Size++
			b, _ = json.Marshal(l)
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		wrong := publish("reuse/c")
		for _, l := range wrong.Layers {
			if l.Source != imageops.LayerUploaded || l.Cached {
				t.Errorf("with wrong cache entries: layers %v; want every one produced and uploaded", sources(wrong))
				break
			}
		}
		if wrong.Digest != first.Digest {
			t.Errorf("with wrong cache entries the image is %s, want %s", wrong.Digest, first.Digest)
		}
	})
}

// TestWeightsLayersCompose: the library edge composes with
// go-containerregistry: WeightsLayers + AppendWeights + remote.Write make
// the image Affix makes of the same weights.
func TestWeightsLayersCompose(t *testing.T) {
	dir, _ := testenv.WeightsDir(t, testenv.WeightsSpec{Files: 2, Seed: 17})
	r := regSetup{testenv.Registries(t)[0].Start(t)}
	base := r.SeedBase(t, "compose", testenv.Docker)
	want, err := imageops.Affix(context.Background(), imageops.AffixRequest{Base: base.String(), Dest: r.User.Repo("compose/affix"),
		Tree: imageops.DirTree(dir), Layout: imageops.LayoutPerFile, Created: layoutCreated}, r.opts()...)
	if err != nil {
		t.Fatal(err)
	}

	layers, err := imageops.WeightsLayers(context.Background(), imageops.DirTree(dir), imageops.WeightsOptions{Layout: imageops.LayoutPerFile, Docker: true})
	if err != nil {
		t.Fatal(err)
	}
	img, err := imageops.AppendWeights(r.image(t, base.String(), testenv.Amd64), "", layoutCreated, layers...)
	if err != nil {
		t.Fatal(err)
	}
	dest, err := name.ParseReference(r.User.Repo("compose/library:v1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(dest, img, r.User.RemoteOptions()...); err != nil {
		t.Fatal(err)
	}
	got, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != want.Digest.String() || len(layers) != len(want.Layers) {
		t.Errorf("composed image %s with %d weights layers; Affix made %s with %d", got, len(layers), want.Digest, len(want.Layers))
	}
}

// cutReader fails with a transient error once n bytes were read.
type cutReader struct {
	r io.ReadCloser
	n int64
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		return 0, errors.New("connection reset by peer")
	}
	if int64(len(p)) > c.n {
		p = p[:c.n]
	}
	n, err := c.r.Read(p)
	c.n -= int64(n)
	return n, err
}

func (c *cutReader) Close() error { return c.r.Close() }

// TestStreamRetryKeepsCommittedLayers: a stream whose source fails in the
// middle of the second shard is read again from the start; the layers the
// first pass committed are checked, not sent again.
func TestStreamRetryKeepsCommittedLayers(t *testing.T) {
	dir, files := testenv.WeightsDir(t, testenv.WeightsSpec{Files: 2, FileSize: imageops.BigFileSize, Seed: 18})
	tarPath := testenv.TarDir(t, dir)
	r := regSetup{testenv.Registries(t)[1].Start(t)}
	proxy := r.Proxy(t)
	base := r.SeedBase(t, "retry", testenv.OCI)
	opens := 0
	weights := func() (io.ReadCloser, error) {
		opens++
		f, err := os.Open(tarPath)
		if err != nil || opens > 1 {
			return f, err
		}
		return &cutReader{r: f, n: imageops.BigFileSize + 10<<20}, nil // into the second shard
	}
	res, err := imageops.Affix(context.Background(), imageops.AffixRequest{Base: base.String(), Dest: r.repo(proxy.Host, "retry/x"),
		Weights: weights, Created: layoutCreated}, r.opts()...)
	if err != nil {
		t.Fatal(err)
	}
	if opens != 2 || len(res.Layers) != 3 {
		t.Fatalf("%d opens, layers %+v; want 2 passes and config + 2 shards", opens, res.Layers)
	}
	for _, l := range res.Layers {
		if got := proxy.Blobs()[l.Digest.String()]; got != l.Size {
			t.Errorf("layer %s (%d bytes): %d bytes sent; want each byte once", l.Digest, l.Size, got)
		}
	}
	root := r.unpack(t, res.Ref.String(), nil)
	checkFiles(t, filepath.Join(root, "src/weights"), files, "unpacked")
}

// TestPublishVerifiesEveryBlob: after the manifest is pushed, every blob it
// references is asked for again; a registry that does not hold one fails
// the publish, naming the blob.
func TestPublishVerifiesEveryBlob(t *testing.T) {
	dir, _ := testenv.WeightsDir(t, testenv.WeightsSpec{Files: 1, Seed: 19})
	r := regSetup{testenv.Registries(t)[0].Start(t)}
	proxy := r.Proxy(t)
	base := r.SeedBase(t, "verify", testenv.OCI)
	var pushed atomic.Bool
	proxy.SetFaultFunc(func(req *http.Request) (testenv.Fault, bool) {
		if req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/manifests/") {
			pushed.Store(true)
		}
		if pushed.Load() && req.Method == http.MethodHead && strings.Contains(req.URL.Path, "/blobs/") {
			return testenv.Fault{Status: http.StatusNotFound}, true
		}
		return testenv.Fault{}, false
	})
	_, err := imageops.Affix(context.Background(), imageops.AffixRequest{Base: base.String(), Dest: r.repo(proxy.Host, "verify/x:v1"),
		Tree: imageops.DirTree(dir), Created: layoutCreated}, r.opts()...)
	if err == nil || !strings.Contains(err.Error(), "references blob sha256:") || !strings.Contains(err.Error(), "does not hold") {
		t.Fatalf("err = %v, want the verification to name a blob the registry does not hold", err)
	}
	if proxy.Injected() == 0 {
		t.Fatal("no HEAD was answered 404: the verification was not exercised")
	}
}

// checkFiles checks that every file is under dir with its sha256; what
// names the check in failures.
func checkFiles(t *testing.T, dir string, files []testenv.WeightsFile, what string) {
	t.Helper()
	for _, f := range files {
		if got := testenv.FileSHA256(t, filepath.Join(dir, f.Name)); got != f.SHA256 {
			t.Errorf("%s %s: sha256 %s, want %s", what, f.Name, got, f.SHA256)
		}
	}
}
