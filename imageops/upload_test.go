package imageops_test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

const testChunk = 1 << 20

// chunkedSetup is a registry behind a proxy shaped like a CDN front, a base
// image the test user may pull, and a weights tarball of about 6 MiB of
// incompressible shards.
type chunkedSetup struct {
	reg       testenv.RegistryEnv
	proxy     *testenv.Proxy
	proxyOpts []testenv.ProxyOption
	base      string
	tarPath   string
	files     []testenv.WeightsFile
}

// forEachRegistry runs f against distribution 2.8 and v3 with token auth
// and TLS, each behind its own proxy with opts.
func forEachRegistry(t *testing.T, f func(t *testing.T, s chunkedSetup), opts ...testenv.ProxyOption) {
	forEachReg(t, func(t *testing.T, reg regSetup) {
		proxy := reg.Proxy(t, opts...)
		base := reg.SeedBase(t, "chunked", testenv.OCI)
		tarPath, files := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 3, FileSize: 2 << 20, Seed: 21})
		f(t, chunkedSetup{reg: reg.RegistryEnv, proxy: proxy, proxyOpts: opts, base: base.String(), tarPath: tarPath, files: files})
	})
}

func (s chunkedSetup) affix(ctx context.Context, dest string, c imageops.Compression, opts ...imageops.Option) (*imageops.AffixResult, error) {
	opts = append([]imageops.Option{imageops.WithTransport(s.reg.Transport()), imageops.WithKeychain(s.reg.User.Keychain())}, opts...)
	return imageops.Affix(ctx, imageops.AffixRequest{
		Base: s.base, Dest: s.proxy.Host + "/" + testenv.TestUser + "/" + dest, Weights: fileOpener(s.tarPath), Created: created, Compression: c,
	}, opts...)
}

// affixTree publishes the tarball as a tree (indexed, its layer's size
// known in advance): an uncompressed layer is then sent in streamed chunks,
// nothing buffered.
func (s chunkedSetup) affixTree(ctx context.Context, dest string, opts ...imageops.Option) (*imageops.AffixResult, error) {
	tree, err := imageops.TarFileTree(s.tarPath)
	if err != nil {
		return nil, err
	}
	opts = append([]imageops.Option{imageops.WithTransport(s.reg.Transport()), imageops.WithKeychain(s.reg.User.Keychain())}, opts...)
	return imageops.Affix(ctx, imageops.AffixRequest{
		Base: s.base, Dest: s.proxy.Host + "/" + testenv.TestUser + "/" + dest, Tree: tree, Created: created, Compression: imageops.Uncompressed,
	}, opts...)
}

// inputs runs f for the tarball streamed (the layer buffered chunk by
// chunk) and as a tree (its known-size layer streamed chunk by chunk), each
// behind a new proxy of the setup's options.
func (s chunkedSetup) inputs(t *testing.T, dest string, f func(t *testing.T, s chunkedSetup, res *imageops.AffixResult, err error), opts ...imageops.Option) {
	t.Helper()
	t.Run("stream", func(t *testing.T) {
		s.proxy = s.reg.Proxy(t, s.proxyOpts...)
		res, err := s.affix(context.Background(), dest+"-stream", imageops.Uncompressed, opts...)
		f(t, s, res, err)
	})
	t.Run("tree", func(t *testing.T) {
		s.proxy = s.reg.Proxy(t, s.proxyOpts...)
		res, err := s.affixTree(context.Background(), dest+"-tree", opts...)
		f(t, s, res, err)
	})
}

// sent is what the proxy saw of the layer: bytes of PATCH bodies sent for
// it, refused or dropped ones included (the config blob is apart).
func (s chunkedSetup) sent(res *imageops.AffixResult) int64 {
	return s.proxy.Blobs()[res.Layer.Digest.String()]
}

// sentAll is sent plus the bytes of sessions never committed: a streamed
// first chunk that failed leaves its session for a new one.
func (s chunkedSetup) sentAll(res *imageops.AffixResult) int64 {
	return s.sent(res) + s.proxy.Blobs()["uncommitted"]
}

// check unpacks the image with skopeo and umoci as the test user.
func (s chunkedSetup) check(t *testing.T, res *imageops.AffixResult, files []testenv.WeightsFile) {
	t.Helper()
	root := testenv.UnpackWith(t, res.Ref.String(), testenv.UnpackOptions{DockerConfig: s.reg.User.DockerConfig(t)})
	for _, f := range files {
		if got := testenv.FileSHA256(t, filepath.Join(root, "src/weights", f.Name)); got != f.SHA256 {
			t.Fatalf("%s: sha256 %s, want %s", f.Name, got, f.SHA256)
		}
	}
}

func chunksFor(size, chunk int64) int { return int((size + chunk - 1) / chunk) }

func TestChunkedUpload(t *testing.T) {
	const limit = testChunk + 64<<10 // a front that caps bodies a little over the chunk
	forEachRegistry(t, func(t *testing.T, s chunkedSetup) {
		for _, c := range []imageops.Compression{imageops.Uncompressed, imageops.Gzip} {
			res, err := s.affix(context.Background(), "chunked-"+string(c), c, imageops.WithChunkSize(testChunk))
			if err != nil {
				t.Fatal(err)
			}
			if want := chunksFor(res.Layer.Size, testChunk); res.Transfer.Chunks != want || want < 4 {
				t.Errorf("%s: %d chunks for a %d-byte layer; want %d", c, res.Transfer.Chunks, res.Layer.Size, want)
			}
			if got := s.sent(res); got != res.Layer.Size {
				t.Errorf("%s: %d bytes sent for a %d-byte layer", c, got, res.Layer.Size)
			}
			s.check(t, res, s.files)

			// The same bytes in one request give the same image; the cap
			// refuses that request.
			one, err := s.affix(context.Background(), "one-"+string(c), c, imageops.WithChunkSize(0))
			if err != nil {
				t.Fatal(err)
			}
			if one.Digest != res.Digest || one.Transfer.Chunks != 0 {
				t.Errorf("%s: one request gave %s with %d chunks; chunked gave %s", c, one.Digest, one.Transfer.Chunks, res.Digest)
			}
		}
		if st := s.proxy.Stats(); st.LargestBody <= limit {
			t.Errorf("the largest body was %d bytes: the one-request uploads did not reach the proxy", st.LargestBody)
		}
	})
}

// Through a front that refuses bodies over the cap, every upload succeeds
// in chunks and no request is over the cap.
func TestChunkedUploadUnderABodyCap(t *testing.T) {
	const limit = testChunk + 64<<10
	forEachRegistry(t, func(t *testing.T, s chunkedSetup) {
		s.inputs(t, "capped", func(t *testing.T, s chunkedSetup, res *imageops.AffixResult, err error) {
			if err != nil {
				t.Fatal(err)
			}
			if st := s.proxy.Stats(); st.LargestBody > limit || st.TooLarge != 0 {
				t.Errorf("the front saw a %d-byte body (cap %d), refused %d", st.LargestBody, limit, st.TooLarge)
			}
			if want := chunksFor(res.Layer.Size, testChunk); res.Transfer.Chunks != want {
				t.Errorf("%d chunks for a %d-byte layer; want %d", res.Transfer.Chunks, res.Layer.Size, want)
			}
			s.check(t, res, s.files)
		}, imageops.WithChunkSize(testChunk))
	}, testenv.ProxyBodyCap(limit))
}

// A connection dropped during a chunk costs that chunk's resend, nothing else.
func TestChunkedUploadResendsADroppedChunk(t *testing.T) {
	const dropAt = 300 << 10
	forEachRegistry(t, func(t *testing.T, s chunkedSetup) {
		s.inputs(t, "drop", func(t *testing.T, s chunkedSetup, res *imageops.AffixResult, err error) {
			if err != nil {
				t.Fatal(err)
			}
			if st := s.proxy.Stats(); st.Dropped != 1 {
				t.Fatalf("%d connections dropped; want 1", st.Dropped)
			}
			if got := s.sentAll(res); got != res.Layer.Size+dropAt {
				t.Errorf("%d bytes sent for a %d-byte layer and a chunk dropped after %d: more than that chunk was resent", got, res.Layer.Size, dropAt)
			}
			if want := chunksFor(res.Layer.Size, testChunk); res.Transfer.Chunks != want {
				t.Errorf("%d chunks acknowledged; want %d (notes %q)", res.Transfer.Chunks, want, res.Transfer.Notes)
			}
			s.check(t, res, s.files)
		}, imageops.WithChunkSize(testChunk))
	}, testenv.ProxyDropPatchAfter(dropAt))
}

// A front that refuses bodies over half a chunk makes the chunk size halve
// for the rest of the upload.
func TestChunkedUploadHalvesOn413(t *testing.T) {
	const limit = testChunk/2 + 64<<10
	forEachRegistry(t, func(t *testing.T, s chunkedSetup) {
		s.inputs(t, "halve", func(t *testing.T, s chunkedSetup, res *imageops.AffixResult, err error) {
			if err != nil {
				t.Fatal(err)
			}
			st := s.proxy.Stats()
			if st.TooLarge != 1 || st.LargestForwarded > limit {
				t.Errorf("%d chunks refused, largest forwarded %d; want one refusal and nothing over %d (notes %q)", st.TooLarge, st.LargestForwarded, limit, res.Transfer.Notes)
			}
			if res.Transfer.ChunkSize != testChunk/2 || res.Transfer.Chunks != chunksFor(res.Layer.Size, testChunk/2) {
				t.Errorf("chunk size %d, %d chunks; want %d and %d", res.Transfer.ChunkSize, res.Transfer.Chunks, testChunk/2, chunksFor(res.Layer.Size, testChunk/2))
			}
			if !hasNote(res.Transfer, "413") {
				t.Errorf("no note says why the chunk size changed: %q", res.Transfer.Notes)
			}
			if got := s.sentAll(res); got != res.Layer.Size+testChunk {
				t.Errorf("%d bytes sent; want the layer's %d and the refused chunk's %d", got, res.Layer.Size, testChunk)
			}
			s.check(t, res, s.files)
		}, imageops.WithChunkSize(testChunk))
	}, testenv.ProxyBodyCap(limit))
}

// A registry that takes no chunked uploads gets the blob in one request.
func TestChunkedUploadFallsBack(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, s chunkedSetup) {
		res, err := s.affix(context.Background(), "refuse", imageops.Gzip, imageops.WithChunkSize(testChunk))
		if err != nil {
			t.Fatal(err)
		}
		if st := s.proxy.Stats(); st.RefusedChunks != 1 || res.Transfer.Chunks != 0 {
			t.Errorf("%d chunks refused, %d acknowledged; want the first refused and none sent after", st.RefusedChunks, res.Transfer.Chunks)
		}
		if !hasNote(res.Transfer, "one request") {
			t.Errorf("the result does not say the upload fell back: %q", res.Transfer.Notes)
		}
		if got := s.sent(res); got != res.Layer.Size {
			t.Errorf("%d bytes committed for a %d-byte layer", got, res.Layer.Size)
		}
		s.check(t, res, s.files)
	}, testenv.ProxyRefuseChunks())
}

// killAtPatch makes the n-th chunk's PATCH kill the run: ctx is cancelled
// while the proxy holds the request, so none of that chunk arrives.
func killAtPatch(s chunkedSetup, n int64) context.Context {
	ctx, kill := context.WithCancel(context.Background())
	var seen atomic.Int64
	s.proxy.SetFaultFunc(func(r *http.Request) (testenv.Fault, bool) {
		if r.Method != http.MethodPatch || seen.Add(1) != n {
			return testenv.Fault{}, false
		}
		kill()
		return testenv.Fault{Hold: make(chan struct{})}, true
	})
	return ctx
}

// An upload interrupted after some chunks is resumed by the next run with
// the same session store: the registry receives each byte once.
func TestUploadResumesAcrossRuns(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, s chunkedSetup) {
		type publish func(ctx context.Context, dest string, opts ...imageops.Option) (*imageops.AffixResult, error)
		stream := func(c imageops.Compression) publish {
			return func(ctx context.Context, dest string, opts ...imageops.Option) (*imageops.AffixResult, error) {
				return s.affix(ctx, dest, c, opts...)
			}
		}
		for c, affix := range map[string]publish{"none": stream(imageops.Uncompressed), "gzip": stream(imageops.Gzip), "tree": s.affixTree} {
			sessions := imageops.FileSessions{Dir: t.TempDir()}
			opts := []imageops.Option{imageops.WithChunkSize(testChunk), imageops.WithUploadSessions(sessions, "job-1")}
			dest := "resume-" + c
			s.proxy.Reset()
			if _, err := affix(killAtPatch(s, 4), dest, opts...); !errors.Is(err, context.Canceled) {
				t.Fatalf("%s: the interrupted run ended with %v", c, err)
			}
			if sent := s.proxy.Uploaded(); sent != 3*testChunk {
				t.Fatalf("%s: the interrupted run sent %d bytes; want 3 chunks", c, sent)
			}
			s.proxy.SetFaultFunc(nil)

			res, err := affix(context.Background(), dest, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if res.Transfer.ResumedBytes != 3*testChunk || !hasNote(res.Transfer, "resuming") {
				t.Errorf("%s: resumed %d bytes (notes %q); want %d", c, res.Transfer.ResumedBytes, res.Transfer.Notes, 3*testChunk)
			}
			if got := s.sent(res); got != res.Layer.Size {
				t.Errorf("%s: both runs sent %d bytes for a %d-byte layer", c, got, res.Layer.Size)
			}
			clean, err := affix(context.Background(), "clean-"+c, imageops.WithChunkSize(testChunk))
			if err != nil {
				t.Fatal(err)
			}
			if clean.Digest != res.Digest {
				t.Errorf("%s: resumed image %s, clean image %s", c, res.Digest, clean.Digest)
			}
			s.check(t, res, s.files)
		}
	})
}

// A saved session never splices another input onto its prefix: a changed
// tarball starts the layer again.
func TestUploadResumeRefusesAChangedInput(t *testing.T) {
	forEachRegistry(t, func(t *testing.T, s chunkedSetup) {
		sessions := imageops.FileSessions{Dir: t.TempDir()}
		opts := []imageops.Option{imageops.WithChunkSize(testChunk), imageops.WithUploadSessions(sessions, "job-1")}
		if _, err := s.affix(killAtPatch(s, 3), "changed", imageops.Uncompressed, opts...); !errors.Is(err, context.Canceled) {
			t.Fatalf("the interrupted run ended with %v", err)
		}
		s.proxy.SetFaultFunc(nil)

		other, files := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 3, FileSize: 2 << 20, Seed: 22})
		s.tarPath = other
		res, err := s.affix(context.Background(), "changed", imageops.Uncompressed, opts...)
		if err != nil {
			t.Fatal(err)
		}
		if !hasNote(res.Transfer, "input changed") {
			t.Errorf("no note says the saved session was dropped: %q", res.Transfer.Notes)
		}
		s.check(t, res, files)
	})
}

func hasNote(tr imageops.Transfer, s string) bool {
	for _, n := range tr.Notes {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

// A base on another registry is copied, and its big layers go in chunks
// like the weights: a front that caps request bodies takes every request.
func TestCrossRegistryCopyIsChunked(t *testing.T) {
	const limit = testChunk + 64<<10
	src := testenv.Registry(t)
	img, err := random.Image(3<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	big := testenv.PushWith(t, src.Host+"/far/big:v1", img)
	forEachRegistry(t, func(t *testing.T, s chunkedSetup) {
		s.base = big.String()
		res, err := s.affix(context.Background(), "far", imageops.Uncompressed, imageops.WithChunkSize(testChunk))
		if err != nil {
			t.Fatal(err)
		}
		st := s.proxy.Stats()
		if st.LargestBody > limit || st.TooLarge != 0 {
			t.Errorf("the front saw a %d-byte body (cap %d), refused %d", st.LargestBody, limit, st.TooLarge)
		}
		if !res.CrossRegistry || res.Transfer.DownloadedBytes < 6<<20 || res.Transfer.Chunks < 6+chunksFor(res.Layer.Size, testChunk) {
			t.Errorf("cross-registry %v, downloaded %d, %d chunks; want both 3 MiB base layers copied in chunks", res.CrossRegistry, res.Transfer.DownloadedBytes, res.Transfer.Chunks)
		}
		mf, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range mf.Layers {
			if got := s.proxy.Blobs()[l.Digest.String()]; got != l.Size {
				t.Errorf("base layer %s: %d bytes sent, want %d", l.Digest, got, l.Size)
			}
		}
	}, testenv.ProxyBodyCap(limit))
}

// zstd's recompressed layers and remix's cross-registry copies obey a
// front's body cap like affix's layers.
func TestZstdAndRemixUnderABodyCap(t *testing.T) {
	const limit = testChunk + 64<<10
	src := testenv.Registry(t)
	img, err := random.Image(3<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	big := testenv.PushWith(t, src.Host+"/far/big:v1", img)
	forEachRegistry(t, func(t *testing.T, s chunkedSetup) {
		opts := []imageops.Option{imageops.WithTransport(s.reg.Transport()), imageops.WithKeychain(s.reg.User.Keychain()), imageops.WithChunkSize(testChunk)}
		weights, err := s.affix(context.Background(), "weights", imageops.Uncompressed, imageops.WithChunkSize(testChunk))
		if err != nil {
			t.Fatal(err)
		}
		remixed, err := imageops.Remix(context.Background(), imageops.RemixRequest{
			Base: big.String(), Weights: weights.Ref.String(), Dest: s.proxy.Host + "/" + testenv.TestUser + "/remixed",
		}, opts...)
		if err != nil {
			t.Fatalf("remix: %v", err)
		}
		zres, err := imageops.Recompress(context.Background(), imageops.ZstdRequest{
			Source: remixed.Ref.String(), Dest: s.proxy.Host + "/" + testenv.TestUser + "/zstd",
		}, opts...)
		if err != nil {
			t.Fatalf("zstd: %v", err)
		}
		if st := s.proxy.Stats(); st.LargestBody > limit || st.TooLarge != 0 {
			t.Errorf("the front saw a %d-byte body (cap %d), refused %d", st.LargestBody, limit, st.TooLarge)
		}
		if remixed.Transfer.Chunks < 6 || zres.Transfer.Chunks < 6 {
			t.Errorf("remix sent %d chunks, zstd %d; want the 3 MiB layers in chunks", remixed.Transfer.Chunks, zres.Transfer.Chunks)
		}
	}, testenv.ProxyBodyCap(limit))
}

// A front far below the chunk size makes a streamed upload halve its chunk
// as often as it takes: attempts that learn a smaller chunk do not count
// against the bound.
func TestStreamedChunksHalveRepeatedly(t *testing.T) {
	const limit = 600 << 10 // 4 MiB → 2 → 1 → 512 KiB
	forEachRegistry(t, func(t *testing.T, s chunkedSetup) {
		res, err := s.affixTree(context.Background(), "halve-thrice", imageops.WithChunkSize(4*testChunk))
		if err != nil {
			t.Fatal(err)
		}
		if st := s.proxy.Stats(); st.TooLarge != 3 || st.LargestForwarded > limit {
			t.Errorf("%d chunks refused, largest forwarded %d; want 3 refusals and nothing over %d", st.TooLarge, st.LargestForwarded, limit)
		}
		if res.Transfer.ChunkSize != testChunk/2 {
			t.Errorf("chunk size %d, want %d (notes %q)", res.Transfer.ChunkSize, testChunk/2, res.Transfer.Notes)
		}
		s.check(t, res, s.files)
	}, testenv.ProxyBodyCap(limit))
}
