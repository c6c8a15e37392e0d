package devstack_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/config"
	"github.com/r8im/r8im/internal/devstack"
	"github.com/r8im/r8im/storage"
)

func start(t *testing.T) *devstack.Stack {
	t.Helper()
	st, err := devstack.Start(context.Background(), devstack.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

// TestS3ServesTheWorkersReads reads objects from the embedded S3 with the
// worker's own S3 code: a large object in parallel ranged GETs pinned by
// ETag (If-Match), a small one in one GET, and a missing key and bucket as
// "not found".
func TestS3ServesTheWorkersReads(t *testing.T) {
	ctx := context.Background()
	st := start(t)
	big := make([]byte, 5<<20+123)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(big)
	bigURL, err := st.PutObject(ctx, "runs/1/weights.tar", big)
	if err != nil {
		t.Fatal(err)
	}
	smallURL, err := st.PutObject(ctx, "runs/2/weights.tar", []byte("small"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.NewWorker().S3
	cfg.Endpoint, cfg.Region, cfg.PathStyle = st.S3Endpoint, st.S3Region, true
	cfg.AccessKeyID, cfg.SecretAccessKey = config.Secret(st.S3AccessKey), config.Secret(st.S3SecretKey)
	cfg.ChunkSize, cfg.Concurrency = 1<<20, 4
	sources, err := storage.NewSources(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for url, want := range map[string][]byte{bigURL: big, smallURL: []byte("small")} {
		rc, size, err := sources.Open(ctx, url)
		if err != nil {
			t.Fatalf("opening %s: %v", url, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || size != int64(len(want)) || !bytes.Equal(got, want) {
			t.Fatalf("%s: read %d of %d bytes (size %d), equal %v, err %v", url, len(got), len(want), size, bytes.Equal(got, want), err)
		}
	}
	for _, url := range []string{"s3://" + devstack.Bucket + "/runs/none.tar", "s3://no-such-bucket/weights.tar"} {
		_, _, err := sources.Open(ctx, url)
		if !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("opening %s = %v; want storage.ErrNotFound", url, err)
		}
	}
}

// TestRedisExpiresKeysOnTheWallClock checks the miniredis option the stack
// relies on: TTLs run out in real time, as in Redis (asynq's heartbeats and
// leases depend on it).
func TestRedisExpiresKeysOnTheWallClock(t *testing.T) {
	st := start(t)
	opts, err := redis.ParseURL(st.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", "v", 200*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	if n, err := rdb.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("a key with a 200ms TTL still exists after 400ms (%d, %v)", n, err)
	}
}

// TestRegistryKeepsBlobsOnDisk pushes the demo base and finds its blobs in
// DataDir/registry, named by digest.
func TestRegistryKeepsBlobsOnDisk(t *testing.T) {
	st := start(t)
	ref, err := devstack.PushBase(context.Background(), st.Registry+"/demo/base")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ref.String(), st.Registry+"/demo/base@sha256:") {
		t.Fatalf("PushBase = %s", ref)
	}
	entries, err := os.ReadDir(filepath.Join(st.DataDir, "registry", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 { // two layers and the config
		t.Errorf("%d blobs on disk, want 3 (2 layers, 1 config)", len(entries))
	}
	// The same inputs give the same image.
	again, err := devstack.PushBase(context.Background(), st.Registry+"/demo/base")
	if err != nil || again != ref {
		t.Errorf("a second PushBase = %s, %v; want %s again", again, err, ref)
	}
}

func TestStartNeedsADataDir(t *testing.T) {
	_, err := devstack.Start(context.Background(), devstack.Options{})
	if err == nil || !strings.Contains(err.Error(), "--data-dir") {
		t.Fatalf("Start without a data dir = %v; want an error naming --data-dir", err)
	}
}
