package config

import (
	"net/url"
)

// S3 holds how weights are fetched from S3-compatible storage. Credentials
// follow the AWS SDK's default chain; the AWS_* variables are read here only
// to catch half-set pairs early and to keep them out of any printed config.
type S3 struct {
	Endpoint        string // custom endpoint for MinIO, R2, Ceph...; "" means AWS
	Region          string
	PathStyle       bool  // bucket in the path, as MinIO-style endpoints need
	ChunkSize       int64 // bytes per ranged GET
	Concurrency     int   // ranged GETs in flight per object
	AccessKeyID     Secret
	SecretAccessKey Secret
	SessionToken    Secret
}

// Defaults for S3 transfers: 8 × 16 MiB keeps at most 128 MiB in flight.
const (
	DefaultS3ChunkSize   = 16 << 20
	DefaultS3Concurrency = 8
)

func (s *S3) bind(b *binder) {
	b.bind(stringVar(&s.Endpoint, ""), "s3-endpoint", "", []string{"AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"}, plain,
		"S3 endpoint URL for MinIO/R2/Ceph (default: AWS)")
	b.bind(stringVar(&s.Region, "us-east-1"), "s3-region", "", []string{"AWS_REGION", "AWS_DEFAULT_REGION"}, plain,
		"S3 region")
	b.bind(boolVar(&s.PathStyle, false), "s3-path-style", "", []string{"R8IM_S3_PATH_STYLE"}, plain,
		"address buckets by path (http://host/bucket/key), as MinIO needs")
	b.bind(sizeVar(&s.ChunkSize, DefaultS3ChunkSize), "s3-chunk-size", "", []string{"R8IM_S3_CHUNK_SIZE"}, plain,
		"bytes per parallel ranged GET")
	b.bind(intVar(&s.Concurrency, DefaultS3Concurrency), "s3-concurrency", "", []string{"R8IM_S3_CONCURRENCY"}, plain,
		"ranged GETs in flight per object (memory use is about chunk size × concurrency)")
	// Keys are environment-only: a secret on a command line shows up in ps.
	b.bind(stringVar(&s.AccessKeyID, ""), "", "", []string{"AWS_ACCESS_KEY_ID"}, secret, "")
	b.bind(stringVar(&s.SecretAccessKey, ""), "", "", []string{"AWS_SECRET_ACCESS_KEY"}, secret, "")
	b.bind(stringVar(&s.SessionToken, ""), "", "", []string{"AWS_SESSION_TOKEN"}, secret, "")
}

func (s *S3) validate(b *binder) []Problem {
	var ps []Problem
	if s.Endpoint != "" {
		u, err := url.Parse(s.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			ps = append(ps, b.problem("s3-endpoint", "%q is not an http(s) URL; use e.g. http://127.0.0.1:9000", s.Endpoint))
		}
	}
	if s.ChunkSize < 1<<20 || s.ChunkSize > 1<<30 {
		ps = append(ps, b.problem("s3-chunk-size", "must be between 1MiB and 1GiB, got %d bytes", s.ChunkSize))
	}
	if s.Concurrency < 1 || s.Concurrency > 64 {
		ps = append(ps, b.problem("s3-concurrency", "must be between 1 and 64, got %d", s.Concurrency))
	}
	if (s.AccessKeyID == "") != (s.SecretAccessKey == "") {
		ps = append(ps, Problem{
			Setting: "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
			Message: "set both or neither (neither uses the rest of the AWS credential chain)",
		})
	}
	return ps
}
