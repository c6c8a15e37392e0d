package imageops_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

// multiWeightsImage is an OCI image with four r8im weights layers, oldest
// first: two gzip shard layers, an uncompressed one (as the per-file layout
// makes them) and a small gzip one that deletes, replaces and links files
// of the older ones, so the output depends on reading them newest first.
// It returns the image and the digests of its weights layers, newest first.
// hashStrings is hs as strings.
func hashStrings(hs []v1.Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	return out
}

func multiWeightsImage(t *testing.T) (v1.Image, []string) {
	t.Helper()
	shards1, _ := testenv.WeightsLayer(t, testenv.OCI, testenv.WeightsSpec{Files: 2, FileSize: 512 << 10, Dir: "src/weights", Seed: 301})
	shards2 := testenv.LayerOf(t, testenv.OCI,
		testenv.Dir("src/"), testenv.Dir("src/weights/"), testenv.Dir("src/weights/extra/"),
		testenv.File("src/weights/extra/tokenizer.json", `{"vocab": 32000}`),
		testenv.File("src/weights/old.bin", "deleted by the newest layer"),
		testenv.File("src/weights/config.json", `{"from": "layer 2"}`))
	var plain bytes.Buffer
	if _, err := testenv.WriteWeights(&plain, testenv.WeightsSpec{Files: 1, FileSize: 768 << 10, Dir: "src/weights/big", Seed: 302}); err != nil {
		t.Fatal(err)
	}
	uncompressed := static.NewLayer(plain.Bytes(), types.OCIUncompressedLayer)
	newest := testenv.LayerOf(t, testenv.OCI,
		testenv.Dir("src/"), testenv.Dir("src/weights/"),
		testenv.Whiteout("src/weights/old.bin"),
		testenv.File("src/weights/config.json", `{"from": "the newest layer"}`),
		testenv.Symlink("src/weights/current", "extra/tokenizer.json"))

	img := testenv.BaseImage(t, testenv.OCI, testenv.Amd64)
	var digests []string
	for _, l := range []v1.Layer{shards1, shards2, uncompressed, newest} {
		img = testenv.AppendWeights(t, img, testenv.R8imWeights, l)
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = slices.Insert(digests, 0, d.String())
	}
	return img, digests
}

// blobGets is a transport under imageops that counts the GETs of the
// given blobs in flight: from a 200 answer until its body ends or is
// closed. With gate set, the first read from such a body waits (once per
// transport) until a second such
// GET is in flight, so that a download that overlaps no other is caught
// however fast the registry answers; the wait gives up after a while only
// so that code that never overlaps fails (max 1) instead of hanging.
type blobGets struct {
	base  http.RoundTripper
	blobs []string
	gate  bool

	mu         sync.Mutex
	inFlight   int
	max        int
	total      int
	overlapped bool
	waited     sync.Once
	second     chan struct{} // closed when two are first in flight
}

func newBlobGets(base http.RoundTripper, blobs []string, gate bool) *blobGets {
	return &blobGets{base: base, blobs: blobs, gate: gate, second: make(chan struct{})}
}

func (b *blobGets) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := b.base.RoundTrip(r)
	if err != nil || r.Method != http.MethodGet || resp.StatusCode != http.StatusOK ||
		!slices.ContainsFunc(b.blobs, func(d string) bool { return strings.HasSuffix(r.URL.Path, "/blobs/"+d) }) {
		return resp, err
	}
	b.mu.Lock()
	b.inFlight++
	b.total++
	b.max = max(b.max, b.inFlight)
	if b.inFlight == 2 && !b.overlapped {
		b.overlapped = true
		close(b.second)
	}
	b.mu.Unlock()
	resp.Body = &countedBody{ReadCloser: resp.Body, b: b}
	return resp, nil
}

func (b *blobGets) stats() (maxInFlight, total int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.max, b.total
}

type countedBody struct {
	io.ReadCloser
	b    *blobGets
	done sync.Once
}

func (c *countedBody) Read(p []byte) (int, error) {
	if c.b.gate {
		c.b.waited.Do(func() {
			select {
			case <-c.b.second:
			case <-time.After(30 * time.Second): // never reached when downloads overlap
			}
		})
	}
	n, err := c.ReadCloser.Read(p)
	if err != nil {
		c.end()
	}
	return n, err
}

func (c *countedBody) Close() error {
	c.end()
	return c.ReadCloser.Close()
}

func (c *countedBody) end() {
	c.done.Do(func() {
		c.b.mu.Lock()
		c.b.inFlight--
		c.b.mu.Unlock()
	})
}

// TestExtractJobs extracts an image with four weights layers one layer at
// a time and four at a time: the tar and the files are byte for byte the
// same, every weights blob is fetched once, and with four jobs two or more
// downloads are in flight together (with one, never).
func TestExtractJobs(t *testing.T) {
	ctx := context.Background()
	img, weights := multiWeightsImage(t)
	forEachReg(t, func(t *testing.T, reg regSetup) {
		ref := reg.push(t, reg.Host, "extract/jobs:latest", img).String()
		run := func(t *testing.T, jobs int, gate bool, dir string) ([]byte, *imageops.ExtractResult, *blobGets) {
			t.Helper()
			gets := newBlobGets(reg.Transport(), weights, gate)
			opts := []imageops.Option{imageops.WithTransport(gets), imageops.WithKeychain(reg.User.Keychain()), imageops.WithJobs(jobs)}
			var buf bytes.Buffer
			var res *imageops.ExtractResult
			var err error
			if dir != "" {
				res, err = imageops.ExtractToDir(ctx, ref, dir, imageops.ExtractOptions{StripTarget: true}, opts...)
			} else {
				res, err = imageops.Extract(ctx, ref, &buf, imageops.ExtractOptions{TempDir: t.TempDir()}, opts...)
			}
			if err != nil {
				t.Fatalf("extract with %d jobs: %v", jobs, err)
			}
			if !slices.Equal(hashStrings(res.Layers), weights) {
				t.Errorf("layers %v, want the four weights layers newest first %v", res.Layers, weights)
			}
			if _, total := gets.stats(); total != len(weights) {
				t.Errorf("%d weights blob GETs with %d jobs, want one per layer (%d)", total, jobs, len(weights))
			}
			return buf.Bytes(), res, gets
		}

		t.Run("tar", func(t *testing.T) {
			one, res1, _ := run(t, 1, false, "")
			four, res4, _ := run(t, 4, false, "")
			if !bytes.Equal(one, four) {
				t.Errorf("the tar with 4 jobs (%d bytes) differs from the one with 1 job (%d bytes)", len(four), len(one))
			}
			if res1.Files != res4.Files || res1.Bytes != res4.Bytes {
				t.Errorf("results differ: 1 job %+v, 4 jobs %+v", res1, res4)
			}
			got := readExtractTar(t, one)
			if got["src/weights/config.json"].body != `{"from": "the newest layer"}` {
				t.Errorf("config.json = %q, want the newest layer's", got["src/weights/config.json"].body)
			}
			if _, ok := got["src/weights/old.bin"]; ok {
				t.Error("old.bin, deleted by the newest layer, was written")
			}
			if _, ok := got["src/weights/big/model-00001-of-00001.safetensors"]; !ok {
				t.Errorf("the uncompressed layer's shard is missing; entries %v", slices.Sorted(maps.Keys(got)))
			}
		})
		t.Run("dir", func(t *testing.T) {
			d1, d4 := filepath.Join(t.TempDir(), "one"), filepath.Join(t.TempDir(), "four")
			run(t, 1, false, d1)
			run(t, 4, false, d4)
			one, four := testenv.TreeOf(t, d1), testenv.TreeOf(t, d4)
			if len(one) < 8 {
				t.Fatalf("extracted only %v", one)
			}
			for p, want := range one {
				if four[p] != want {
					t.Errorf("%s: %q with 4 jobs, %q with 1", p, four[p], want)
				}
			}
			for p := range four {
				if _, ok := one[p]; !ok {
					t.Errorf("%s only with 4 jobs (a temp file left?)", p)
				}
			}
		})
		t.Run("in flight", func(t *testing.T) {
			for _, tc := range []struct {
				jobs     int
				dir      bool
				min, max int
			}{
				{jobs: 1, min: 1, max: 1},
				{jobs: 1, dir: true, min: 1, max: 1},
				{jobs: 4, min: 2, max: 4},
				{jobs: 4, dir: true, min: 2, max: 4},
				{jobs: 2, dir: true, min: 2, max: 2},
			} {
				t.Run(fmt.Sprintf("jobs=%d/dir=%v", tc.jobs, tc.dir), func(t *testing.T) {
					dir := ""
					if tc.dir {
						dir = t.TempDir()
					}
					_, _, gets := run(t, tc.jobs, tc.jobs > 1, dir)
					if m, _ := gets.stats(); m < tc.min || m > tc.max {
						t.Errorf("%d weights blob GETs in flight at most, want %d to %d", m, tc.min, tc.max)
					}
				})
			}
		})
	})
}

// TestExtractJobsSubstitutedBlob substitutes the oldest weights layer,
// which four jobs download ahead into a temp file: the digest check fails,
// and the output directory holds nothing new, temp files included.
func TestExtractJobsSubstitutedBlob(t *testing.T) {
	reg := testenv.Registry(t)
	img, weights := multiWeightsImage(t)
	ref := testenv.Push(t, reg.Host+"/extract/jobs-substituted:latest", img).String()
	oldest := weights[len(weights)-1]
	proxy := testenv.SubstituteBlobs(t, reg.Host)
	planted := testenv.Tar(t, testenv.Dir("src/"), testenv.Dir("src/weights/"), testenv.File("src/weights/planted.bin", "planted by the registry"))
	proxy.Substitute(oldest, testenv.GzipOfSize(t, planted, testenv.BlobSize(t, ref, oldest)))
	viaProxy := strings.Replace(ref, reg.Host, proxy.Host, 1)

	for _, tc := range []struct {
		name string
		dir  bool
	}{{"dir", true}, {"tar", false}} {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "out")
			served := proxy.Served(oldest)
			var err error
			if tc.dir {
				_, err = imageops.ExtractToDir(context.Background(), viaProxy, dir, imageops.ExtractOptions{}, imageops.WithJobs(4))
			} else {
				_, err = imageops.Extract(context.Background(), viaProxy, io.Discard, imageops.ExtractOptions{TempDir: parent}, imageops.WithJobs(4))
			}
			if err == nil || !strings.Contains(err.Error(), "error verifying sha256 checksum") || !strings.Contains(err.Error(), oldest) {
				t.Fatalf("extract = %v; want the digest check of %s to fail", err, oldest)
			}
			if proxy.Served(oldest) == served {
				t.Fatal("the proxy did not substitute the layer")
			}
			if left := walkAll(t, parent); len(left) != 0 {
				t.Errorf("after the failure %s holds %q, want nothing", parent, left)
			}
		})
	}
}
