package storage

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// MaxPrefixObjects bounds the objects one s3://bucket/prefix/ may hold: a
// listing is read whole before anything is sent.
const MaxPrefixObjects = 100_000

// prefixObject is one object under a prefix, as listed.
type prefixObject struct {
	key  string
	name string // relative to the prefix
	size int64
}

// openS3Prefix serves every object under s3://bucket/prefix/ (a key ending
// in '/') as an uncompressed tar: names relative to the prefix, in path
// order (component by component, as a directory walk lists them, each
// directory announced before what is in it), each object read as openS3
// reads one object — ranged in parallel, its size and checksum checked —
// one after another. Zero-byte keys ending in '/' (folder markers) are
// skipped. An object whose size differs from the listing fails the stream
// with ErrChanged; its size is unknown (-1) until read.
func (s *Sources) openS3Prefix(ctx context.Context, raw, bucket, prefix string) (io.ReadCloser, int64, error) {
	var objs []prefixObject
	p := s3.NewListObjectsV2Paginator(s.s3, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, 0, fmt.Errorf("listing %s: %w", raw, ctx.Err())
			}
			return nil, 0, fmt.Errorf("listing %s: %w", raw, classifyS3(err))
		}
		for _, o := range page.Contents {
			key := aws.ToString(o.Key)
			if strings.HasSuffix(key, "/") {
				continue
			}
			objs = append(objs, prefixObject{key: key, name: strings.TrimPrefix(key, prefix), size: aws.ToInt64(o.Size)})
		}
		if len(objs) > MaxPrefixObjects {
			return nil, 0, fmt.Errorf("listing %s: %w: more than %d objects under the prefix; publish a narrower prefix", raw, ErrInvalidURL, MaxPrefixObjects)
		}
	}
	if len(objs) == 0 {
		return nil, 0, fmt.Errorf("listing %s: %w: no objects under the prefix; check the bucket and prefix", raw, ErrNotFound)
	}
	slices.SortFunc(objs, func(a, b prefixObject) int { return comparePaths(a.name, b.name) })
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(s.writePrefixTar(ctx, pw, raw, bucket, objs)) }()
	return pr, -1, nil
}

func (s *Sources) writePrefixTar(ctx context.Context, w io.Writer, raw, bucket string, objs []prefixObject) error {
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	for _, o := range objs {
		// Announce each directory before what is in it, as a walk would.
		parts := strings.Split(o.name, "/")
		for i := 1; i < len(parts); i++ {
			d := strings.Join(parts[:i], "/") + "/"
			if !dirs[d] {
				dirs[d] = true
				if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, Format: tar.FormatPAX}); err != nil {
					return err
				}
			}
		}
		if err := tw.WriteHeader(&tar.Header{Name: o.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: o.size, Format: tar.FormatPAX}); err != nil {
			return err
		}
		url := "s3://" + bucket + "/" + o.key
		rc, size, err := s.openS3(ctx, url)
		if err != nil {
			return err
		}
		if size != o.size {
			rc.Close()
			return fmt.Errorf("reading %s: %w: listed with %d bytes, now %d", redactURL(url), ErrChanged, o.size, size)
		}
		_, err = io.Copy(tw, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

// comparePaths orders slash-separated paths component by component: a
// directory's contents come right after it, before a sibling that sorts
// after the directory's name ("a/x" before "a.txt"), as fs.WalkDir lists a
// tree.
func comparePaths(a, b string) int {
	pa, pb := strings.Split(a, "/"), strings.Split(b, "/")
	for i := 0; i < len(pa) && i < len(pb); i++ {
		if c := strings.Compare(pa[i], pb[i]); c != 0 {
			return c
		}
	}
	return len(pa) - len(pb)
}
