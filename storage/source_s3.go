package storage

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"

	"github.com/r8im/r8im/config"
)

// s3API is the part of the S3 client Sources uses.
type s3API interface {
	ListObjectsV2(context.Context, *s3.ListObjectsV2Input, ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

// newS3Client builds the S3 client and returns the credentials it signs
// with. hc, when set, carries the S3 requests; otherwise the SDK's own
// client (which honours AWS_CA_BUNDLE) is tuned for concurrency connections
// per host.
func newS3Client(ctx context.Context, cfg config.S3, hc *http.Client, concurrency int) (s3API, aws.CredentialsProvider, error) {
	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithHTTPClient(awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
			t.MaxIdleConnsPerHost = max(2*concurrency, awshttp.DefaultHTTPTransportMaxIdleConnsPerHost)
		})),
		awsconfig.WithLogger(logging.Nop{}),
		// Ranged GETs carry no whole-object checksum; the reader verifies
		// the stream itself.
		awsconfig.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
		awsconfig.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
	}
	if cfg.Region != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.Region))
	}
	if cfg.AccessKeyID != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(
			string(cfg.AccessKeyID), string(cfg.SecretAccessKey), string(cfg.SessionToken))))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("loading the AWS configuration (AWS_* variables, ~/.aws/config, AWS_PROFILE): %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	c := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		if hc != nil {
			o.HTTPClient = hc
		}
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	return c, awsCfg.Credentials, nil
}

// parseS3URL splits s3://bucket/key. The key is percent-decoded (so a
// space may be written as is or as %20; a literal '%' as %25) and may hold
// slashes; '?' and '#' must be encoded as %3F and %23.
func parseS3URL(raw string) (bucket, key string, err error) {
	bad := func(advice string) error {
		return fmt.Errorf("opening %s: %w: %s", raw, ErrInvalidURL, advice)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", bad("not a URL (a literal '%' in a key must be written %25); use s3://bucket/path/to/weights.tar")
	}
	switch {
	case u.User != nil:
		return "", "", bad("s3 URLs carry no user name or password; credentials come from the AWS environment")
	case u.Host == "":
		return "", "", bad("no bucket; use s3://bucket/path/to/weights.tar")
	case u.Port() != "" || strings.ContainsAny(u.Host, ":[]"):
		return "", "", bad("the bucket name holds a ':'; set the endpoint with --s3-endpoint or AWS_ENDPOINT_URL_S3, not in the URL")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return "", "", bad("s3 URLs take no query or fragment; write '?' in a key as %3F and '#' as %23")
	}
	key = strings.TrimPrefix(u.Path, "/")
	switch {
	case key == "":
		return "", "", bad("no key; use s3://bucket/path/to/weights.tar")
	}
	return u.Host, key, nil
}

func (s *Sources) openS3(ctx context.Context, raw string) (io.ReadCloser, int64, error) {
	bucket, key, err := parseS3URL(raw)
	if err != nil {
		return nil, 0, err
	}
	if strings.HasSuffix(key, "/") {
		return s.openS3Prefix(ctx, raw, bucket, key)
	}
	return s.openS3Object(ctx, raw, bucket, key, "", s.concurrency)
}

// openS3Object opens one object with at most concurrency ranged GETs in
// flight. A non-empty etag is the one the object must still have (it was
// listed with it): another one fails with ErrChanged.
func (s *Sources) openS3Object(ctx context.Context, raw, bucket, key, etag string, concurrency int) (io.ReadCloser, int64, error) {
	// Resolve the credentials first, so that having none reads as such.
	if s.creds != nil {
		if _, err := s.creds.Retrieve(ctx); err != nil {
			if ctx.Err() != nil {
				return nil, 0, fmt.Errorf("opening %s: %w", raw, ctx.Err())
			}
			return nil, 0, fmt.Errorf("opening %s: %w: no usable AWS credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or give the worker an IAM role: %w",
				raw, ErrDenied, err)
		}
	}
	head, err := s.s3.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, fmt.Errorf("opening %s: %w", raw, ctx.Err())
		}
		return nil, 0, fmt.Errorf("opening %s: %w", raw, classifyS3(err))
	}
	o := &s3Object{
		client: s.s3, bucket: bucket, key: key,
		etag: aws.ToString(head.ETag), size: aws.ToInt64(head.ContentLength),
	}
	if etag != "" && o.etag != etag {
		return nil, 0, fmt.Errorf("opening %s: %w: its ETag was %s when listed, now %s", raw, ErrChanged, etag, o.etag)
	}
	if v := aws.ToString(head.VersionId); v != "" && v != "null" {
		o.version = v // pin the version we saw: a later overwrite cannot mix in
	}
	sum := fullObjectChecksum(head)
	var r io.ReadCloser
	switch {
	case o.size == 0:
		r = emptyReader{}
	case o.size <= s.chunkSize:
		sr, err := s.openStream(ctx, o, raw, o.size)
		if err != nil {
			if ctx.Err() != nil {
				return nil, 0, fmt.Errorf("opening %s: %w", raw, ctx.Err())
			}
			return nil, 0, fmt.Errorf("opening %s: %w", raw, err)
		}
		r = sr
	default:
		r = s.newChunkReader(ctx, o, raw, o.size, concurrency)
	}
	return verify(r, raw, o.size, sum), o.size, nil
}

// fullObjectChecksum returns the strongest whole-object checksum S3 stored
// for the object, or nil when there is none, or only a composite checksum
// of multipart parts, which a single stream cannot be checked against.
func fullObjectChecksum(h *s3.HeadObjectOutput) *checksum {
	if h.ChecksumType != "" && h.ChecksumType != types.ChecksumTypeFullObject {
		return nil
	}
	for _, c := range []struct {
		algo  string
		value *string
		hash  func() hash.Hash
	}{
		{"SHA-256", h.ChecksumSHA256, sha256.New},
		{"SHA-1", h.ChecksumSHA1, sha1.New},
		{"CRC64NVME", h.ChecksumCRC64NVME, func() hash.Hash { return crc64.New(crc64NVME) }},
		{"CRC32C", h.ChecksumCRC32C, func() hash.Hash { return crc32.New(crc32.MakeTable(crc32.Castagnoli)) }},
		{"CRC32", h.ChecksumCRC32, func() hash.Hash { return crc32.NewIEEE() }},
	} {
		v := aws.ToString(c.value)
		if v == "" || strings.Contains(v, "-") { // "-N": composite over N parts
			continue
		}
		want, err := base64.StdEncoding.DecodeString(v)
		if err != nil || len(want) != c.hash().Size() {
			continue
		}
		return &checksum{algo: c.algo, hash: c.hash, want: want}
	}
	return nil
}

// crc64NVME is the CRC-64/NVME table (reversed polynomial 0x9a6c9329ac4bc9b5).
var crc64NVME = crc64.MakeTable(0x9a6c_9329_ac4b_c9b5)

// s3Object is one version of an object: every GET names its ETag (and
// version when the bucket keeps versions).
type s3Object struct {
	client      s3API
	bucket, key string
	etag        string
	version     string
	size        int64
}

var noSDKRetries = func(o *s3.Options) { o.Retryer = aws.NopRetryer{} } // chunks are retried by the reader

func (o *s3Object) get(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(o.bucket), Key: aws.String(o.key)}
	if o.etag != "" {
		in.IfMatch = aws.String(o.etag)
	}
	if o.version != "" {
		in.VersionId = aws.String(o.version)
	}
	ranged := off != 0 || n != o.size
	if ranged {
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	}
	out, err := o.client.GetObject(ctx, in, noSDKRetries)
	if err != nil {
		return nil, classifyS3(err)
	}
	fail := func(err error) (io.ReadCloser, error) {
		_ = out.Body.Close()
		return nil, err
	}
	if got := aws.ToString(out.ETag); o.etag != "" && got != "" && got != o.etag {
		return fail(fmt.Errorf("%w: its ETag went from %s to %s; open it again to read the new version", ErrChanged, o.etag, got))
	}
	if total, ok := contentRangeTotal(aws.ToString(out.ContentRange)); ok && total != o.size {
		return fail(fmt.Errorf("%w: its size went from %d to %d bytes; open it again to read the new version", ErrChanged, o.size, total))
	}
	if l := out.ContentLength; l != nil && *l != n {
		if ranged && *l == o.size {
			return fail(errors.New("the server ignored the Range header; set --s3-chunk-size above the object's size to read it in one GET"))
		}
		return fail(fmt.Errorf("%w: asked for %d bytes, the response holds %d; open it again", ErrChanged, n, *l))
	}
	return out.Body, nil
}

// contentRangeTotal returns the complete length in "bytes a-b/total".
func contentRangeTotal(cr string) (int64, bool) {
	_, total, ok := strings.Cut(cr, "/")
	if !ok || !strings.HasPrefix(cr, "bytes ") {
		return 0, false
	}
	n, err := strconv.ParseInt(total, 10, 64)
	return n, err == nil
}

// classifyS3 turns an SDK error into a sentinel with advice, or marks it
// transient.
func classifyS3(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	status := 0
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	code := ""
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	switch {
	case code == "NoSuchBucket":
		return fmt.Errorf("%w: the bucket does not exist; check the URL and the endpoint (--s3-endpoint): %w", ErrNotFound, err)
	case status == http.StatusNotFound || code == "NoSuchKey" || code == "NotFound":
		return fmt.Errorf("%w: no such bucket or key; check the URL and the endpoint (--s3-endpoint): %w", ErrNotFound, err)
	case status == http.StatusPreconditionFailed || code == "PreconditionFailed":
		return fmt.Errorf("%w: the object was replaced while it was being read; open it again to read the new version: %w", ErrChanged, err)
	case status == http.StatusRequestedRangeNotSatisfiable || code == "InvalidRange":
		return fmt.Errorf("%w: the object shrank while it was being read; open it again: %w", ErrChanged, err)
	case status == http.StatusUnauthorized || status == http.StatusForbidden ||
		code == "AccessDenied" || code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" || code == "ExpiredToken" || code == "InvalidToken":
		return fmt.Errorf("%w: check the AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the IAM role) and that they may s3:GetObject this key: %w", ErrDenied, err)
	case status == http.StatusMovedPermanently || code == "PermanentRedirect" || code == "AuthorizationHeaderMalformed":
		return fmt.Errorf("the bucket lives in another region; set --s3-region or AWS_REGION to it: %w", err)
	case status == http.StatusTooManyRequests || status >= 500 || code == "SlowDown" || code == "RequestTimeout" || code == "InternalError":
		return transient(fmt.Errorf("S3 is busy or failing: %w", err))
	case status == 0:
		// No response: a network error.
		return transient(fmt.Errorf("S3 did not answer; check the endpoint (--s3-endpoint, AWS_ENDPOINT_URL_S3) and the network: %w", err))
	default:
		return fmt.Errorf("S3 refused the request: %w", err)
	}
}
