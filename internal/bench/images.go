package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/r8im/r8im/internal/testenv"
)

// created is the fixed creation time of everything the benchmark builds.
const created = "2026-01-01T00:00:00Z"

var baseTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// pushBase pushes a small deterministic Docker base image with layers
// layers of 256 KiB (a stand-in for the OS and Python layers, which affix
// mounts and never moves) and returns its reference by digest.
func pushBase(ctx context.Context, ref string, layers int) (string, error) {
	img := empty.Image
	for i := 0; i < layers; i++ {
		var buf bytes.Buffer
		if _, err := testenv.WriteWeights(&buf, testenv.WeightsSpec{Files: 1, FileSize: 256 << 10, Dir: fmt.Sprintf("usr/lib/layer%d", i), Seed: uint64(1000 + i)}); err != nil {
			return "", err
		}
		tarBytes := buf.Bytes()
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tarBytes)), nil })
		if err != nil {
			return "", err
		}
		if img, err = mutate.Append(img, mutate.Addendum{Layer: l, History: v1.History{Created: v1.Time{Time: baseTime}, CreatedBy: fmt.Sprintf("RUN layer %d", i)}}); err != nil {
			return "", err
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Created = "linux", "amd64", v1.Time{Time: baseTime}
	cfg.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	cfg.Config.Cmd = []string{"python", "-m", "cog.server.http"}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return "", err
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", err
	}
	if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("pushing %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return r.Context().Digest(d.String()).String(), nil
}

// writeWeights writes the deterministic weights tarball of size bytes
// (shards files under src/weights) to path and returns its sha256.
func writeWeights(path string, size int64, shards int, seed uint64) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	_, err = testenv.WriteWeights(io.MultiWriter(f, h), testenv.WeightsSpec{Files: shards, FileSize: size / int64(shards), Dir: "src/weights", Seed: seed})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
