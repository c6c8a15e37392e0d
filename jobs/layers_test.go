package jobs_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
	"github.com/r8im/r8im/jobs"
	"github.com/r8im/r8im/storage"
)

// s3Gets counts the GETs a worker's Sources send to S3.
type s3Gets struct {
	rt   http.RoundTripper
	gets atomic.Int64
}

func (c *s3Gets) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet && !strings.Contains(r.URL.RawQuery, "list-type") {
		c.gets.Add(1)
	}
	return c.rt.RoundTrip(r)
}

// TestAffixLayersFromS3Prefix: a worker publishes sharded weights under an
// S3 prefix in the auto layout: the same image as imageops.Affix of the same
// files as a local directory (one uncompressed layer per shard, one gzip
// bundle), recorded layer by layer. Published again to another repository,
// nothing is read from S3 and no weights layer crosses the registry's
// front: every layer is mounted, through the layer-digest cache in Redis.
func TestAffixLayersFromS3Prefix(t *testing.T) {
	dir, files := testenv.WeightsDir(t, testenv.WeightsSpec{Files: 2, FileSize: imageops.BigFileSize, Seed: 64})
	forEachReg(t, func(t *testing.T, reg testenv.RegistryEnv) {
		e := newEnv(t, reg)
		var prefix string
		for _, f := range files {
			url := e.s3.PutObject(t, "runs/65/out/"+f.Name, filepath.Join(dir, f.Name))
			prefix = url[:strings.Index(url, "out/")+len("out/")]
		}
		want, err := imageops.Affix(context.Background(), imageops.AffixRequest{Base: e.base, Dest: e.repo(e.proxy.Host, "models/local"),
			Tree: imageops.DirTree(dir), Created: created}, e.opts()...)
		if err != nil {
			t.Fatal(err)
		}

		counter := &s3Gets{rt: http.DefaultTransport}
		e.worker(t, 1, func(h *jobs.Handler) {
			var s3cfg config.S3
			s3cfg.Endpoint, s3cfg.Region, s3cfg.PathStyle = e.s3.Endpoint, e.s3.Region, true
			s3cfg.AccessKeyID, s3cfg.SecretAccessKey = config.Secret(e.s3.AccessKey), config.Secret(e.s3.SecretKey)
			s3cfg.ChunkSize, s3cfg.Concurrency = 4<<20, 4
			sources, err := storage.NewSources(context.Background(), s3cfg, storage.WithHTTPClient(&http.Client{Transport: counter}))
			if err != nil {
				t.Fatal(err)
			}
			h.Sources, h.LayerDigests, h.Jobs = sources, storage.NewLayerDigests(e.rdb, time.Hour), 4
		})
		first := e.waitFor(t, e.affix(t, "run-65", prefix, e.repo(e.proxy.Host, "models/layers:65")).ID, 2*time.Minute)
		if first.State != storage.StateSucceeded {
			t.Fatalf("record %+v", first)
		}
		if _, digest, _ := strings.Cut(first.Result, "@"); digest != want.Digest.String() {
			t.Fatalf("the worker published %s from the S3 prefix; the same files as a directory give %s", first.Result, want.Digest)
		}
		if len(first.Layers) != 3 || first.Layers[0].Files != 1 || first.Layers[1].MediaType != "application/vnd.oci.image.layer.v1.tar" {
			t.Errorf("record layers %+v: want the config.json bundle and 2 uncompressed shards", first.Layers)
		}
		if first.DownloadedBytes != files[0].Size+2*imageops.BigFileSize || counter.gets.Load() == 0 {
			t.Errorf("first publish read %d bytes in %d GETs, want every file once", first.DownloadedBytes, counter.gets.Load())
		}

		counter.gets.Store(0)
		e.proxy.Reset()
		second := e.waitFor(t, e.affix(t, "run-65b", prefix, e.repo(e.proxy.Host, "models/layers-again:65")).ID, 2*time.Minute)
		if second.State != storage.StateSucceeded {
			t.Fatalf("record %+v", second)
		}
		for _, l := range second.Layers {
			if l.Source != imageops.LayerMounted || !l.Cached || l.ReadBytes != 0 {
				t.Errorf("published again: layer %+v, want mounted through the cache, nothing read", l)
			}
			if n := e.proxy.Blobs()[l.Digest]; n != 0 {
				t.Errorf("published again: %d bytes of layer %s crossed the registry's front", n, l.Digest)
			}
		}
		if n := counter.gets.Load(); n != 0 || second.DownloadedBytes != 0 {
			t.Errorf("published again: %d GETs to S3, %d bytes read; want none", n, second.DownloadedBytes)
		}
	})
}
