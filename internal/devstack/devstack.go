// Package devstack runs r8im's backing services inside one process for
// `worker --dev`: an embedded Redis (miniredis), an OCI registry
// (go-containerregistry's pkg/registry, blobs on disk) and an S3 endpoint
// (gofakes3 over a directory), all on loopback, plus the demo's base image,
// weights tarball and signed training event.
package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3afero"
	"github.com/spf13/afero"
)

// Bucket is the S3 bucket the stack creates for weights tarballs.
const Bucket = "weights"

// Options configure Start.
type Options struct {
	// DataDir holds the registry's blobs (DataDir/registry) and the S3
	// objects (DataDir/s3); it is created if missing. Queues, records and
	// image manifests live in memory and end with the process.
	DataDir string
	// Log receives the services' own messages (at debug level); nil
	// discards them.
	Log *slog.Logger
}

// Stack is the running set of services. Every address is on loopback.
type Stack struct {
	RedisURL    string // redis://127.0.0.1:port/0
	Registry    string // 127.0.0.1:port, spoken to over plain HTTP
	S3Endpoint  string // http://127.0.0.1:port, path-style buckets
	S3Region    string
	S3AccessKey string // gofakes3 does not check signatures; the keys only satisfy the AWS SDK
	S3SecretKey string
	DataDir     string

	redis   *miniredis.Miniredis
	servers []*http.Server
	wg      sync.WaitGroup
}

// Start starts Redis, the registry and S3 on free loopback ports and creates
// the weights bucket. Close stops them.
func Start(ctx context.Context, o Options) (_ *Stack, err error) {
	if o.DataDir == "" {
		return nil, errors.New("starting the dev stack: no data directory; pass --data-dir")
	}
	logger := o.Log
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Stack{DataDir: o.DataDir, S3Region: "us-east-1", S3AccessKey: "r8im-dev", S3SecretKey: randomHex(16)}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	// miniredis runs asynq and the record scripts unchanged (see
	// docs/architecture.md); ClockTTL makes key TTLs run on the wall clock
	// as in Redis (asynq's server heartbeats and locks expire), instead of
	// only on FastForward.
	s.redis = miniredis.NewMiniRedis()
	s.redis.ClockTTL(true)
	if err := s.redis.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("starting the embedded Redis: %w", err)
	}
	s.RedisURL = "redis://" + s.redis.Addr() + "/0"

	blobs := filepath.Join(o.DataDir, "registry")
	if err := os.MkdirAll(blobs, 0o700); err != nil {
		return nil, fmt.Errorf("creating the registry's blob directory: %w", err)
	}
	regLog := slog.NewLogLogger(logger.With("component", "registry").Handler(), slog.LevelDebug)
	if s.Registry, err = s.serve(registry.New(registry.WithBlobHandler(registry.NewDiskBlobHandler(blobs)), registry.Logger(regLog))); err != nil {
		return nil, fmt.Errorf("starting the embedded registry: %w", err)
	}

	s3dir := filepath.Join(o.DataDir, "s3")
	if err := os.MkdirAll(s3dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the S3 directory: %w", err)
	}
	backend, err := s3afero.MultiBucket(afero.NewBasePathFs(afero.NewOsFs(), s3dir))
	if err != nil {
		return nil, fmt.Errorf("opening the S3 directory %s: %w", s3dir, err)
	}
	if ok, err := backend.BucketExists(Bucket); err != nil {
		return nil, fmt.Errorf("looking for the %s bucket: %w", Bucket, err)
	} else if !ok {
		if err := backend.CreateBucket(Bucket); err != nil {
			return nil, fmt.Errorf("creating the %s bucket: %w", Bucket, err)
		}
	}
	fake := gofakes3.New(backend, gofakes3.WithLogger(s3Logger{logger.With("component", "s3")}))
	addr, err := s.serve(fake.Server())
	if err != nil {
		return nil, fmt.Errorf("starting the embedded S3: %w", err)
	}
	s.S3Endpoint = "http://" + addr
	return s, nil
}

// serve serves h on a free loopback port and returns its host:port.
func (s *Stack) serve(h http.Handler) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(discard{}, "", 0)}
	s.servers = append(s.servers, srv)
	s.wg.Go(func() { _ = srv.Serve(l) })
	return l.Addr().String(), nil
}

// Close stops every service. Data in DataDir stays.
func (s *Stack) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range s.servers {
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
	}
	s.wg.Wait()
	if s.redis != nil {
		s.redis.Close()
	}
}

// Env is the environment that points worker, enqueue and r8im at the stack
// (REDIS_URL, the S3 endpoint and keys, the registry).
func (s *Stack) Env() [][2]string {
	return [][2]string{
		{"REDIS_URL", s.RedisURL},
		{"R8IM_REGISTRY", s.Registry},
		{"AWS_ENDPOINT_URL_S3", s.S3Endpoint},
		{"AWS_REGION", s.S3Region},
		{"R8IM_S3_PATH_STYLE", "true"},
		{"AWS_ACCESS_KEY_ID", s.S3AccessKey},
		{"AWS_SECRET_ACCESS_KEY", s.S3SecretKey},
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// RandomSecret returns a fresh 32-byte hex secret, e.g. for signing events.
func RandomSecret() string { return randomHex(32) }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// s3Logger is gofakes3's logger over slog, at debug level.
type s3Logger struct{ l *slog.Logger }

func (g s3Logger) Print(level gofakes3.LogLevel, v ...any) {
	g.l.Debug(fmt.Sprint(v...), "level", string(level))
}
