package imageops_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

const testChunk = 1 << 20

// chunkedSetup is a registry behind a counting proxy, a base image on it and
// a weights tarball of about 6 MiB of incompressible shards.
type chunkedSetup struct {
	proxy   *testenv.Proxy
	base    string
	tarPath string
	files   []testenv.WeightsFile
}

func newChunkedSetup(t *testing.T, name string) chunkedSetup {
	t.Helper()
	reg := testenv.Registry(t)
	proxy := testenv.CountingProxy(t, reg.Host)
	base := testenv.PushBase(t, reg.Host, "base/"+name, testenv.OCI)
	tarPath, files := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 3, FileSize: 2 << 20, Seed: 21})
	return chunkedSetup{proxy: proxy, base: base.String(), tarPath: tarPath, files: files}
}

func (s chunkedSetup) affix(ctx context.Context, dest string, c imageops.Compression, opts ...imageops.Option) (*imageops.AffixResult, error) {
	return imageops.Affix(ctx, imageops.AffixRequest{
		Base: s.base, Dest: s.proxy.Host + "/" + dest, Weights: fileOpener(s.tarPath), Created: created, Compression: c,
	}, opts...)
}

func chunksFor(size, chunk int64) int { return int((size + chunk - 1) / chunk) }

// nthPatch returns a fault function that applies f to the n-th chunked
// PATCH (1-based) and counts the PATCHes it saw.
func nthPatch(n int64, f testenv.Fault, seen *atomic.Int64) func(*http.Request) (testenv.Fault, bool) {
	return func(r *http.Request) (testenv.Fault, bool) {
		if r.Method != http.MethodPatch || r.Header.Get("Content-Range") == "" {
			return testenv.Fault{}, false
		}
		return f, seen.Add(1) == n
	}
}

func TestChunkedUpload(t *testing.T) {
	for _, c := range []imageops.Compression{imageops.Uncompressed, imageops.Gzip} {
		t.Run(string(c), func(t *testing.T) {
			s := newChunkedSetup(t, "chunked-"+string(c))
			res, err := s.affix(context.Background(), "models/chunked", c, imageops.WithChunkSize(testChunk))
			if err != nil {
				t.Fatal(err)
			}
			if want := chunksFor(res.Layer.Size, testChunk); res.Transfer.Chunks != want || want < 4 {
				t.Errorf("%d chunks for a %d-byte layer; want %d", res.Transfer.Chunks, res.Layer.Size, want)
			}
			if got := s.proxy.Uploaded(); got != res.Layer.Size {
				t.Errorf("the registry received %d bytes for a %d-byte layer", got, res.Layer.Size)
			}
			checkWeightsUnpacked(t, res.Ref, nil, s.files, "", "src/weights")

			// The same bytes in one request give the same image.
			one, err := s.affix(context.Background(), "models/one", c, imageops.WithChunkSize(0))
			if err != nil {
				t.Fatal(err)
			}
			if one.Digest != res.Digest || one.Transfer.Chunks != 0 {
				t.Errorf("one request gave %s with %d chunks; chunked gave %s", one.Digest, one.Transfer.Chunks, res.Digest)
			}
		})
	}
}

// A connection dropped during a chunk costs that chunk's resend, nothing else.
func TestChunkedUploadResendsADroppedChunk(t *testing.T) {
	s := newChunkedSetup(t, "drop")
	var seen atomic.Int64
	s.proxy.SetFaultFunc(nthPatch(3, testenv.Fault{}, &seen)) // Status 0: the connection drops mid-body
	res, err := s.affix(context.Background(), "models/drop", imageops.Uncompressed, imageops.WithChunkSize(testChunk))
	if err != nil {
		t.Fatal(err)
	}
	if s.proxy.Injected() != 1 {
		t.Fatalf("the fault fired %d times", s.proxy.Injected())
	}
	if got := s.proxy.Uploaded(); got != res.Layer.Size {
		t.Errorf("the registry received %d bytes for a %d-byte layer: more than the dropped chunk was resent", got, res.Layer.Size)
	}
	if want := chunksFor(res.Layer.Size, testChunk); res.Transfer.Chunks != want {
		t.Errorf("%d chunks acknowledged; want %d", res.Transfer.Chunks, want)
	}
	checkWeightsUnpacked(t, res.Ref, nil, s.files, "", "src/weights")
}

// A front that refuses bodies over half a chunk makes the chunk size halve.
func TestChunkedUploadHalvesOn413(t *testing.T) {
	s := newChunkedSetup(t, "cap")
	s.proxy.SetFaultFunc(func(r *http.Request) (testenv.Fault, bool) {
		return testenv.Fault{Status: http.StatusRequestEntityTooLarge}, r.Method == http.MethodPatch && r.ContentLength > testChunk/2
	})
	res, err := s.affix(context.Background(), "models/cap", imageops.Uncompressed, imageops.WithChunkSize(testChunk))
	if err != nil {
		t.Fatal(err)
	}
	if s.proxy.Injected() != 1 {
		t.Errorf("%d chunks were refused; after the first 413 every chunk should fit", s.proxy.Injected())
	}
	if res.Transfer.ChunkSize != testChunk/2 || res.Transfer.Chunks != chunksFor(res.Layer.Size, testChunk/2) {
		t.Errorf("chunk size %d, %d chunks; want %d and %d", res.Transfer.ChunkSize, res.Transfer.Chunks, testChunk/2, chunksFor(res.Layer.Size, testChunk/2))
	}
	if !hasNote(res.Transfer, "413") {
		t.Errorf("no note says why the chunk size changed: %q", res.Transfer.Notes)
	}
	if got := s.proxy.Uploaded(); got != res.Layer.Size {
		t.Errorf("the registry received %d bytes for a %d-byte layer", got, res.Layer.Size)
	}
	checkWeightsUnpacked(t, res.Ref, nil, s.files, "", "src/weights")
}

// A registry that takes no chunked uploads gets the blob in one request.
func TestChunkedUploadFallsBack(t *testing.T) {
	s := newChunkedSetup(t, "refuse")
	s.proxy.SetFaultFunc(func(r *http.Request) (testenv.Fault, bool) {
		return testenv.Fault{Status: http.StatusRequestedRangeNotSatisfiable}, r.Method == http.MethodPatch && r.Header.Get("Content-Range") != ""
	})
	res, err := s.affix(context.Background(), "models/refuse", imageops.Gzip, imageops.WithChunkSize(testChunk))
	if err != nil {
		t.Fatal(err)
	}
	if s.proxy.Injected() != 1 || res.Transfer.Chunks != 0 {
		t.Errorf("%d chunks refused, %d acknowledged; want the first refused and none sent after", s.proxy.Injected(), res.Transfer.Chunks)
	}
	if !hasNote(res.Transfer, "one request") {
		t.Errorf("the result does not say the upload fell back: %q", res.Transfer.Notes)
	}
	if got := s.proxy.Uploaded(); got != res.Layer.Size {
		t.Errorf("the registry received %d bytes for a %d-byte layer", got, res.Layer.Size)
	}
	checkWeightsUnpacked(t, res.Ref, nil, s.files, "", "src/weights")
}

// An upload interrupted after some chunks is resumed by the next run with
// the same session store: the registry receives each byte once.
func TestUploadResumesAcrossRuns(t *testing.T) {
	for _, c := range []imageops.Compression{imageops.Uncompressed, imageops.Gzip} {
		t.Run(string(c), func(t *testing.T) {
			s := newChunkedSetup(t, "resume-"+string(c))
			sessions := imageops.FileSessions{Dir: t.TempDir()}
			opts := []imageops.Option{imageops.WithChunkSize(testChunk), imageops.WithUploadSessions(sessions, "job-1")}

			ctx, kill := context.WithCancel(context.Background())
			var seen atomic.Int64
			s.proxy.SetFaultFunc(func(r *http.Request) (testenv.Fault, bool) {
				if r.Method != http.MethodPatch || seen.Add(1) != 4 {
					return testenv.Fault{}, false
				}
				kill() // the process dies while sending the fourth chunk
				return testenv.Fault{Hold: make(chan struct{})}, true
			})
			if _, err := s.affix(ctx, "models/resume", c, opts...); !errors.Is(err, context.Canceled) {
				t.Fatalf("the interrupted run ended with %v", err)
			}
			sent := s.proxy.Uploaded()
			if sent != 3*testChunk {
				t.Fatalf("the interrupted run sent %d bytes; want 3 chunks", sent)
			}
			s.proxy.SetFaultFunc(nil)

			res, err := s.affix(context.Background(), "models/resume", c, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if res.Transfer.ResumedBytes != sent || !hasNote(res.Transfer, "resuming") {
				t.Errorf("resumed %d bytes (notes %q); want %d", res.Transfer.ResumedBytes, res.Transfer.Notes, sent)
			}
			if got := s.proxy.Uploaded(); got != res.Layer.Size {
				t.Errorf("both runs sent %d bytes for a %d-byte layer", got, res.Layer.Size)
			}
			clean, err := s.affix(context.Background(), "models/clean", c, imageops.WithChunkSize(testChunk))
			if err != nil {
				t.Fatal(err)
			}
			if clean.Digest != res.Digest {
				t.Errorf("resumed image %s, clean image %s", res.Digest, clean.Digest)
			}
			checkWeightsUnpacked(t, res.Ref, nil, s.files, "", "src/weights")
		})
	}
}

// A saved session never splices another input onto its prefix: a changed
// tarball starts the layer again.
func TestUploadResumeRefusesAChangedInput(t *testing.T) {
	s := newChunkedSetup(t, "changed")
	sessions := imageops.FileSessions{Dir: t.TempDir()}
	opts := []imageops.Option{imageops.WithChunkSize(testChunk), imageops.WithUploadSessions(sessions, "job-1")}
	ctx, kill := context.WithCancel(context.Background())
	var seen atomic.Int64
	s.proxy.SetFaultFunc(func(r *http.Request) (testenv.Fault, bool) {
		if r.Method != http.MethodPatch || seen.Add(1) != 3 {
			return testenv.Fault{}, false
		}
		kill()
		return testenv.Fault{Hold: make(chan struct{})}, true
	})
	if _, err := s.affix(ctx, "models/changed", imageops.Uncompressed, opts...); !errors.Is(err, context.Canceled) {
		t.Fatalf("the interrupted run ended with %v", err)
	}
	s.proxy.SetFaultFunc(nil)

	other, files := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 3, FileSize: 2 << 20, Seed: 22})
	s.tarPath = other
	res, err := s.affix(context.Background(), "models/changed", imageops.Uncompressed, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if !hasNote(res.Transfer, "input changed") {
		t.Errorf("no note says the saved session was dropped: %q", res.Transfer.Notes)
	}
	checkWeightsUnpacked(t, res.Ref, nil, files, "", "src/weights")
}

func hasNote(tr imageops.Transfer, s string) bool {
	for _, n := range tr.Notes {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}
