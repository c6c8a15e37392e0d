package testenv_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/redis/go-redis/v9"

	"github.com/r8im/r8im/internal/testenv"
)

func TestRedisAnswers(t *testing.T) {
	r := testenv.Redis(t)
	c := r.Client(t)
	ctx := context.Background()
	if got, err := c.Ping(ctx).Result(); err != nil || got != "PONG" {
		t.Fatalf("PING = %q, %v; want PONG", got, err)
	}
	if err := c.Set(ctx, "r8im:smoke", "value", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Get(ctx, "r8im:smoke").Result(); got != "value" {
		t.Fatalf("GET = %q, want value", got)
	}
}

func TestRegistryAnswers(t *testing.T) {
	reg := testenv.Registry(t)
	resp, err := http.Get("http://" + reg.Host + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
		t.Fatalf("GET /v2/ = %s %v; want 200 from a distribution registry", resp.Status, resp.Header)
	}
}

// TestBaseImagesReadableByOtherTools pushes every synthetic base variant to
// the real registry, reads it back, and unpacks it with skopeo + umoci.
func TestBaseImagesReadableByOtherTools(t *testing.T) {
	reg := testenv.Registry(t)
	cases := []struct {
		format    testenv.Format
		platforms []v1.Platform
		wantMT    types.MediaType
	}{
		{testenv.Docker, nil, types.DockerManifestSchema2},
		{testenv.OCI, nil, types.OCIManifestSchema1},
		{testenv.Docker, []v1.Platform{testenv.Amd64, testenv.Arm64}, types.DockerManifestList},
		{testenv.OCI, []v1.Platform{testenv.Amd64, testenv.Arm64}, types.OCIImageIndex},
	}
	for _, tc := range cases {
		t.Run(string(tc.wantMT), func(t *testing.T) {
			repo := "base/" + tc.format.String() + "-" + string(rune('0'+len(tc.platforms)))
			dig := testenv.PushBase(t, reg.Host, repo, tc.format, tc.platforms...)
			desc, err := remote.Get(dig)
			if err != nil {
				t.Fatalf("reading back %s: %v", dig, err)
			}
			if desc.MediaType != tc.wantMT {
				t.Fatalf("media type = %s, want %s", desc.MediaType, tc.wantMT)
			}
			platforms := tc.platforms
			if len(platforms) == 0 {
				platforms = []v1.Platform{testenv.Amd64}
			}
			for _, p := range platforms {
				p := p
				root := testenv.Unpack(t, dig.String(), &p)
				got, err := os.ReadFile(filepath.Join(root, "src/predict.py"))
				if err != nil || string(got) != testenv.Predict {
					t.Fatalf("%s: /src/predict.py = %q, %v", p, got, err)
				}
				arch, _ := os.ReadFile(filepath.Join(root, "etc/arch"))
				if strings.TrimSpace(string(arch)) != p.Architecture {
					t.Fatalf("%s: unpacked the wrong platform, /etc/arch = %q", p, arch)
				}
			}
		})
	}
}

func TestBaseImageIsDeterministic(t *testing.T) {
	for _, f := range []testenv.Format{testenv.Docker, testenv.OCI} {
		a, _ := testenv.BaseImage(t, f, testenv.Amd64).Digest()
		b, _ := testenv.BaseImage(t, f, testenv.Amd64).Digest()
		c, _ := testenv.BaseImage(t, f, testenv.Arm64).Digest()
		if a != b || a == c {
			t.Fatalf("%s: digests %s, %s (same platform) and %s (other platform)", f, a, b, c)
		}
		cfg, err := testenv.BaseImage(t, f, testenv.Amd64).ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		var layers int
		for _, h := range cfg.History {
			if !h.EmptyLayer {
				layers++
			}
		}
		if layers != 3 || len(cfg.RootFS.DiffIDs) != 3 || len(cfg.History) != 5 {
			t.Fatalf("%s: %d layer history entries, %d diffIDs, %d history entries; want 3, 3, 5", f, layers, len(cfg.RootFS.DiffIDs), len(cfg.History))
		}
	}
}

func TestS3PutGet(t *testing.T) {
	s := testenv.S3(t)
	path, _ := testenv.WeightsTar(t, testenv.WeightsSpec{Files: 2, FileSize: 1 << 20, Seed: 7})
	url := s.PutObject(t, "runs/1/weights.tar", path)
	if want := "s3://" + s.Bucket + "/runs/1/weights.tar"; url != want {
		t.Fatalf("PutObject = %s, want %s", url, want)
	}
	out, err := s.Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String("runs/1/weights.tar")})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, out.Body); err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(h.Sum(nil)), testenv.FileSHA256(t, path); got != want {
		t.Fatalf("object sha256 %s, file sha256 %s", got, want)
	}
}

func TestWeightsTarball(t *testing.T) {
	spec := testenv.WeightsSpec{Files: 3, FileSize: 300_000, Dir: "src/weights", Seed: 42}
	var a, b bytes.Buffer
	files, err := testenv.WriteWeights(&a, spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.WriteWeights(&b, spec); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("same spec gave different tarballs")
	}
	var other bytes.Buffer
	spec.Seed = 43
	if _, err := testenv.WriteWeights(&other, spec); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Bytes(), other.Bytes()) {
		t.Fatal("different seeds gave the same tarball")
	}
	if len(files) != 4 { // config.json + 3 shards
		t.Fatalf("got %d files, want 4", len(files))
	}
	seen := map[string]string{}
	var zeros, total int
	for _, m := range testenv.TarMembers(t, &a) {
		if m.Typeflag == tar.TypeReg && !strings.HasPrefix(m.Name, "src/weights/") {
			t.Fatalf("file %q is outside src/weights", m.Name)
		}
		sum := sha256.Sum256([]byte(m.Body))
		seen[m.Name] = hex.EncodeToString(sum[:])
		for _, c := range []byte(m.Body) {
			total++
			if c == 0 {
				zeros++
			}
		}
	}
	for _, f := range files {
		if seen[f.Name] != f.SHA256 {
			t.Fatalf("%s: tar holds sha256 %s, WriteWeights reported %s", f.Name, seen[f.Name], f.SHA256)
		}
	}
	if zeros*10 > total {
		t.Fatalf("%d of %d bytes are zero: not weight-like data", zeros, total)
	}
}

// TestStoppedServersLeaveNoProcess proves cleanup really stops each server.
func TestStoppedServersLeaveNoProcess(t *testing.T) {
	for _, v := range []string{"R8IM_TEST_REDIS_ADDR", "R8IM_TEST_REGISTRY", "R8IM_TEST_S3_ENDPOINT"} {
		t.Setenv(v, "") // servers of this test's own
	}
	var pids []int
	t.Run("start", func(t *testing.T) {
		for _, pid := range []int{testenv.Redis(t).PID(), testenv.Registry(t).PID(), testenv.S3(t).PID()} {
			if err := syscall.Kill(pid, 0); err != nil {
				t.Fatalf("server %d not running while the test runs: %v", pid, err)
			}
			pids = append(pids, pid)
		}
	})
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("server %d still exists after its test ended (kill -0: %v)", pid, err)
		}
	}
}

// PushBase answers the digest the registry serves, and tags :latest: on
// every kind of registry (the pattern of a table test over Registries).
func TestPushReturnsDigestReference(t *testing.T) {
	for _, rc := range testenv.Registries(t) {
		t.Run(rc.Name, func(t *testing.T) {
			reg := rc.Start(t)
			dig := reg.SeedBase(t, "digest", testenv.OCI)
			opts := reg.User.RemoteOptions() // alice may pull base/...
			img, err := remote.Image(dig, opts...)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := img.Digest()
			if got.String() != dig.DigestStr() {
				t.Fatalf("registry serves %s for %s", got, dig)
			}
			tag, err := name.ParseReference(reg.Host + "/base/digest:latest")
			if err != nil {
				t.Fatal(err)
			}
			tagged, err := remote.Image(tag, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if d, _ := tagged.Digest(); d != got {
				t.Fatalf(":latest is %s, want %s", d, got)
			}
		})
	}
}

// A Redis with a password refuses clients without it, and one with AOF
// (fsync always) keeps every acknowledged write across a crash and a
// restart on the same port.
func TestRedisPasswordAndRestart(t *testing.T) {
	r := testenv.Redis(t, testenv.RedisOptions{FsyncAlways: true, Password: "pw-0123456789"})
	ctx := context.Background()
	o := r.Options()
	o.Password = ""
	anon := redis.NewClient(o)
	defer anon.Close()
	if err := anon.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("PING without the password = %v; want NOAUTH", err)
	}
	c := r.Client(t)
	if err := c.Set(ctx, "r8im:kept", "yes", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.URL(), ":pw-0123456789@") {
		t.Fatalf("URL %s lacks the password", r.URL())
	}
	pid := r.PID()
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	r.Restart(t)
	if r.PID() == pid {
		t.Fatal("Restart did not start a new process")
	}
	if got, err := c.Get(ctx, "r8im:kept").Result(); err != nil || got != "yes" {
		t.Fatalf("after a crash and restart GET = %q, %v; want the acknowledged write", got, err)
	}
}

// The proxy attributes bytes to blobs: uploads under the digest their PUT
// commits, downloads under the digest fetched; in front of every kind of
// registry.
func TestProxyCountsBlobs(t *testing.T) {
	for _, rc := range testenv.Registries(t) {
		t.Run(rc.Name, func(t *testing.T) {
			reg := rc.Start(t)
			p := reg.Proxy(t)
			opts := reg.User.RemoteOptions()
			img := testenv.BaseImage(t, testenv.OCI, testenv.Amd64)
			testenv.PushWith(t, p.Host+"/"+testenv.TestUser+"/count:v1", img, opts...)
			layers, err := img.Layers()
			if err != nil {
				t.Fatal(err)
			}
			blobs := p.Blobs()
			var sum int64
			for _, l := range layers {
				d, _ := l.Digest()
				n, _ := l.Size()
				if blobs[d.String()] != n {
					t.Errorf("layer %s: %d bytes counted, want its size %d", d, blobs[d.String()], n)
				}
				sum += n
			}
			if blobs["uncommitted"] != 0 || p.Uploaded() < sum {
				t.Errorf("uncommitted %d, uploaded %d (layers %d)", blobs["uncommitted"], p.Uploaded(), sum)
			}
			p.Reset()
			d, _ := layers[0].Digest()
			ref, err := name.NewDigest(p.Host + "/" + testenv.TestUser + "/count@" + d.String())
			if err != nil {
				t.Fatal(err)
			}
			l, err := remote.Layer(ref, opts...)
			if err != nil {
				t.Fatal(err)
			}
			rc, err := l.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, rc)
			rc.Close()
			if got := p.Blobs(); got[d.String()] != n || len(got) != 1 {
				t.Errorf("after a download of %d bytes of %s: %v", n, d, got)
			}
		})
	}
}
