package jobs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/storage"
)

// sharedImages pushes n gzip images over repos repositories: every image has
// the same shared layers (one file each) and a layer of its own. It returns
// their references by tag (through e's proxy, as its user) and the files
// each image holds (path → bytes).
func sharedImages(t *testing.T, e *env, n, repos, shared int) ([]string, []map[string][]byte) {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 7))
	blob := func(size int) []byte {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(rng.IntN(16)) // compressible, so zstd and gzip differ
		}
		return b
	}
	layer := func(name string, body []byte) v1.Layer {
		tb := testenv.Tar(t, testenv.File(name, string(body)))
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tb)), nil })
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	var base []v1.Layer
	files := map[string][]byte{}
	for i := range shared {
		name, body := fmt.Sprintf("opt/shared/%d.bin", i), blob(96<<10)
		files[name] = body
		base = append(base, layer(name, body))
	}
	var refs []string
	var want []map[string][]byte
	for i := range n {
		name, body := fmt.Sprintf("srv/own-%d.bin", i), blob(32<<10)
		img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range base {
			var err error
			if img, err = mutate.AppendLayers(img, l); err != nil {
				t.Fatal(err)
			}
		}
		img, err = mutate.AppendLayers(img, layer(name, body))
		if err != nil {
			t.Fatal(err)
		}
		ref := e.repo(e.proxy.Host, fmt.Sprintf("bf/app%d:v%d", i%repos, i))
		testenv.PushWith(t, ref, img, e.user.RemoteOptions()...)
		refs = append(refs, ref)
		w := map[string][]byte{name: body}
		for k, v := range files {
			w[k] = v
		}
		want = append(want, w)
	}
	return refs, want
}

func TestBackfillConvertsSharedLayersOnce(t *testing.T) {
	const images, repos, shared = 20, 4, 3
	forEachReg(t, func(t *testing.T, reg testenv.RegistryEnv) {
		e := newEnv(t, reg)
		refs, want := sharedImages(t, e, images, repos, shared)
		cache := storage.NewLayerCache(e.rdb)
		batches := storage.NewBatches(e.records, time.Hour)
		rcv := newReceiver(t, 0)
		e.proxy.Reset()
		e.worker(t, 4, withCallbacks, func(h *jobs.Handler) {
			h.Cache, h.Batches = cache, batches
			h.Slots, h.RegistryConcurrency = storage.NewSemaphore(e.rdb), 3
		})

		ctx := context.Background()
		bf := &jobs.Backfill{Enqueuer: e.enq, Batches: batches, Options: e.opts(), Jobs: 4}
		run := func(id string, dry bool) *jobs.BackfillSummary {
			t.Helper()
			sum, err := bf.Run(ctx, jobs.BackfillRequest{Images: refs, BatchID: id, CallbackURL: rcv.URL, DryRun: dry})
			if err != nil {
				t.Fatalf("backfill %s: %v", id, err)
			}
			return sum
		}
		dry := run("dry", true)
		if dry.Enqueued != images || dry.ConvertBytes <= 0 {
			t.Fatalf("dry run: would queue %d (%d bytes), want %d images", dry.Enqueued, dry.ConvertBytes, images)
		}
		// The DB is the test's own (testenv.Redis): KEYS sees only its queues.
		if n, _ := e.rdb.Keys(ctx, "asynq:*:pending").Result(); len(n) != 0 {
			t.Fatalf("the dry run queued tasks: %v", n)
		}

		sum := run("bf-1", false)
		if sum.Enqueued != images || sum.Failed != 0 {
			t.Fatalf("backfill: %+v", sum)
		}
		st := waitBatch(t, batches, "bf-1", 3*time.Minute)
		if st.Succeeded != images {
			t.Fatalf("batch: %+v", st)
		}

		// Each distinct layer was converted once: 3 shared + 20 own (the
		// DB is the test's own, so no other test's conversions count).
		keys, err := e.rdb.Keys(ctx, "r8im:zstd:*").Result()
		if err != nil {
			t.Fatal(err)
		}
		var converted int64
		entries := 0
		for _, k := range keys {
			if strings.HasSuffix(k, ":lease") {
				continue
			}
			entries++
			size, _ := e.rdb.HGet(ctx, k, "size").Int64()
			converted += size
		}
		if entries != shared+images {
			t.Errorf("the cache holds %d conversions, want %d (each distinct layer once)", entries, shared+images)
		}
		var reused, saved int64
		for _, it := range sum.Items {
			rec, err := e.records.Get(ctx, it.TaskID)
			if err != nil {
				t.Fatal(err)
			}
			reused += rec.ReusedLayers
			saved += rec.SavedBytes
		}
		if want := int64(shared * (images - 1)); reused != want {
			t.Errorf("records say %d layers were reused from the cache, want %d", reused, want)
		}
		if st.SavedBytes != saved || saved <= 0 {
			t.Errorf("batch saved %d bytes, records %d", st.SavedBytes, saved)
		}
		// The registry received each converted blob once, nothing more.
		if up := e.proxy.Uploaded(); up != converted {
			t.Errorf("%d bytes uploaded, want %d: the size of each distinct conversion once", up, converted)
		}

		// The batch's callback fired once, signed.
		got := rcv.waitDeliveries(t, 1, time.Minute)
		var bs storage.BatchStatus
		b, _ := json.Marshal(got[0].body.Data)
		if err := json.Unmarshal(b, &bs); err != nil || got[0].err != nil || got[0].body.Type != jobs.EventBatchCompleted || bs.Succeeded != images {
			t.Errorf("batch callback: %s, type %q, signature error %v", b, got[0].body.Type, got[0].err)
		}

		// Every result is a valid image with the source's files.
		for i, it := range sum.Items {
			rec, _ := e.records.Get(ctx, it.TaskID)
			root := e.unpack(t, rec.Result)
			for name, body := range want[i] {
				b, err := os.ReadFile(filepath.Join(root, name))
				if err != nil || !bytes.Equal(b, body) {
					t.Errorf("%s: %s differs from the source (%v)", rec.Result, name, err)
				}
			}
		}

		// Running the same backfill again queues nothing; its batch is complete
		// as soon as it is sealed.
		again := run("bf-2", false)
		if again.Enqueued != 0 || again.Existing != images || !again.Completed {
			t.Errorf("re-run: %d queued, %d existing, completed %v; want 0, %d, true", again.Enqueued, again.Existing, again.Completed, images)
		}
		// The results themselves (tags ending -zstd) are skipped.
		var results []string
		for _, r := range refs {
			results = append(results, r+"-zstd")
		}
		sum3, err := bf.Run(ctx, jobs.BackfillRequest{Images: results, BatchID: "bf-3"})
		if err != nil || sum3.Skipped != images || sum3.Enqueued != 0 {
			t.Errorf("backfill of the results: %+v, %v; want all skipped", sum3, err)
		}
	})
}

func waitBatch(t *testing.T, b *storage.Batches, id string, timeout time.Duration) *storage.BatchStatus {
	t.Helper()
	var st *storage.BatchStatus
	testenv.Eventually(t, timeout, "batch "+id+" to complete", func() (bool, string) {
		var err error
		st, err = b.Status(context.Background(), id)
		return err == nil && st.CompletedAt != nil, fmt.Sprintf("%+v, %v", st, err)
	})
	return st
}
