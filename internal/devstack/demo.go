package devstack

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// File is one regular file of a generated tarball.
type File struct {
	Name string
	Data []byte
}

// demoTime stamps everything the demo builds, so the same inputs give the
// same digests.
var demoTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// DemoWeights are the files of the demo's weights tarball: a 1 MiB
// pseudo-random "model" (the same bytes every time) and two small JSON
// files, named relative to the weights target (/src/weights).
func DemoWeights() []File {
	model := make([]byte, 1<<20)
	r := rand.NewChaCha8([32]byte{'r', '8', 'i', 'm'})
	_, _ = r.Read(model) // never fails
	return []File{
		{"config.json", []byte(`{"architecture": "demo", "hidden_size": 64}` + "\n")},
		{"model.safetensors", model},
		{"tokenizer.json", []byte(`{"version": "1.0", "vocab": {"r8im": 0}}` + "\n")},
	}
}

// Tar builds an uncompressed tarball of files (mode 0644, fixed times).
func Tar(files []File) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		_ = tw.WriteHeader(&tar.Header{Name: f.Name, Mode: 0o644, Size: int64(len(f.Data)), ModTime: demoTime, Typeflag: tar.TypeReg, Format: tar.FormatPAX})
		_, _ = tw.Write(f.Data) // a bytes.Buffer never fails
	}
	_ = tw.Close()
	return buf.Bytes()
}

// PushBase builds a small base image in process, the shape of a cog image
// without weights (an OS layer and a code layer under /src, Docker media
// types, fixed times), pushes it to repo and returns its digest reference.
func PushBase(ctx context.Context, repo string) (name.Digest, error) {
	r, err := name.NewRepository(repo)
	if err != nil {
		return name.Digest{}, fmt.Errorf("parsing %s: %w", repo, err)
	}
	img := empty.Image
	for _, l := range []struct {
		createdBy string
		files     []File
	}{
		{"ADD rootfs.tar /", []File{
			{"etc/os-release", []byte("NAME=\"r8im demo\"\nID=r8im-demo\n")},
			{"usr/local/bin/python", []byte("#!/bin/sh\necho 'demo python'\n")},
		}},
		{"COPY . /src", []File{
			{"src/cog.yaml", []byte("predict: predict.py:Predictor\n")},
			{"src/predict.py", []byte("class Predictor:\n    def predict(self, prompt: str) -> str:\n        return prompt\n")},
		}},
	} {
		data := Tar(l.files)
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
		if err != nil {
			return name.Digest{}, fmt.Errorf("building the base's layers: %w", err)
		}
		img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
			Created: v1.Time{Time: demoTime}, CreatedBy: l.createdBy,
		}})
		if err != nil {
			return name.Digest{}, fmt.Errorf("building the base image: %w", err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return name.Digest{}, fmt.Errorf("building the base image: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS, cf.Created = "amd64", "linux", v1.Time{Time: demoTime}
	cf.Config.WorkingDir = "/src"
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	cf.Config.Cmd = []string{"python", "-m", "cog.server.http"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return name.Digest{}, fmt.Errorf("building the base image: %w", err)
	}
	d, err := img.Digest()
	if err != nil {
		return name.Digest{}, fmt.Errorf("building the base image: %w", err)
	}
	ref := r.Tag("latest")
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		return name.Digest{}, fmt.Errorf("pushing the base image to %s: %w", ref, err)
	}
	return r.Digest(d.String()), nil
}

// PutObject uploads body to the stack's S3 with the AWS SDK, as a trainer
// would, and returns its s3:// URL.
func (s *Stack) PutObject(ctx context.Context, key string, body []byte) (string, error) {
	c := s3.New(s3.Options{
		Region:                     s.S3Region,
		BaseEndpoint:               aws.String(s.S3Endpoint),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(s.S3AccessKey, s.S3SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
	})
	url := "s3://" + Bucket + "/" + key
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(Bucket), Key: aws.String(key), Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body))),
	}); err != nil {
		return "", fmt.Errorf("uploading %s: %w", url, err)
	}
	return url, nil
}
