package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// S3Server is an S3 endpoint with a bucket created for the calling test.
type S3Server struct {
	Endpoint  string // http://host:port
	Region    string
	AccessKey string
	SecretKey string
	Bucket    string
	*server   // nil for an external endpoint
}

// Env returns the environment a worker would be configured with to read
// from this server.
func (s *S3Server) Env() []string {
	return []string{
		"AWS_ENDPOINT_URL_S3=" + s.Endpoint, "AWS_REGION=" + s.Region,
		"AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"R8IM_S3_PATH_STYLE=true",
	}
}

// Client returns an S3 client for this server.
func (s *S3Server) Client() *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(s.Endpoint),
		Region:       s.Region,
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	})
}

// S3 starts MinIO (the pinned build from BinDir) on a free loopback port and
// creates a fresh bucket, or uses R8IM_TEST_S3_ENDPOINT with AWS_ACCESS_KEY_ID
// and AWS_SECRET_ACCESS_KEY, creating (and at the end emptying and deleting)
// a uniquely named bucket there.
func S3(t testing.TB) *S3Server {
	t.Helper()
	srv := &S3Server{Region: "us-east-1", Bucket: "r8im-test-" + randomHex(t, 6)}
	if ep := os.Getenv("R8IM_TEST_S3_ENDPOINT"); ep != "" {
		srv.Endpoint = ep
		srv.AccessKey, srv.SecretKey = os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
		createBucket(t, srv)
		t.Cleanup(func() { deleteBucket(srv) })
		return srv
	}
	srv.AccessKey, srv.SecretKey = "r8imtest", randomHex(t, 16)
	bin := Binary(t, "minio")
	data := t.TempDir()
	env := []string{
		"MINIO_ROOT_USER=" + srv.AccessKey, "MINIO_ROOT_PASSWORD=" + srv.SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CI_CD=1",
	}
	s, port := startServer(t, bin, env, func(port int) []string {
		return []string{"server", "--quiet", "--address", addr(port), "--console-address", addr(freePort(t)), data}
	}, func(ctx context.Context, port int) error {
		return HTTPOK(ctx, "http://"+addr(port)+"/minio/health/ready")
	})
	srv.Endpoint, srv.server = "http://"+addr(port), s
	createBucket(t, srv)
	return srv
}

func createBucket(t testing.TB, s *S3Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(s.Bucket)})
		if err == nil {
			return
		}
		// MinIO answers /minio/health/ready a moment before it serves
		// requests (XMinioServerNotInitialized, 503) on a loaded machine.
		if !strings.Contains(err.Error(), "XMinioServerNotInitialized") || ctx.Err() != nil {
			t.Fatalf("creating bucket %s at %s: %v", s.Bucket, s.Endpoint, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// deleteBucket tidies an external endpoint; errors are ignored because the
// test is over and the bucket name is unique.
func deleteBucket(s *S3Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.Client()
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(s.Bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			break
		}
		var ids []types.ObjectIdentifier
		for _, o := range page.Contents {
			ids = append(ids, types.ObjectIdentifier{Key: o.Key})
		}
		if len(ids) > 0 {
			_, _ = c.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: aws.String(s.Bucket), Delete: &types.Delete{Objects: ids}})
		}
	}
	_, _ = c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(s.Bucket)})
}

// PutObject uploads the file at path under key and returns its s3:// URL.
func (s *S3Server) PutObject(t testing.TB, key, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// A seekable body lets the SDK sign the payload without buffering it.
	if _, err := s.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(key), Body: f}); err != nil {
		t.Fatalf("putting s3://%s/%s: %v", s.Bucket, key, err)
	}
	return "s3://" + s.Bucket + "/" + strings.TrimPrefix(key, "/")
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(errors.Join(errors.New("reading random bytes"), err))
	}
	return hex.EncodeToString(b)
}
