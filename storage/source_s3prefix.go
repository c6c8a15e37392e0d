package storage

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/r8im/r8im/internal/dirtar"
)

// MaxPrefixObjects bounds the objects one s3://bucket/prefix/ may hold: a
// listing is read whole before anything is sent.
const MaxPrefixObjects = 100_000

// Tree is a weights input whose files are known before any is read and can
// be read in any order, several at once: every object under
// s3://bucket/prefix/, or every file under a local directory. It has the
// shape imageops.WeightsTree asks for (jobs adapts it).
type Tree struct {
	s           *Sources
	raw         string // the URL, redacted, for messages
	bucket      string // S3; "" for a local directory
	dir         string // a local directory
	entries     []TreeEntry
	size        int64 // regular file bytes
	concurrency int   // ranged GETs in flight per S3 object
}

// TreeEntry is one entry of a Tree: its tar header (a name relative to the
// tree), an ID naming its content (S3 bucket, key, ETag and size; a local
// file's path, size, mtime and inode) and where to read it.
type TreeEntry struct {
	Header *tar.Header
	ID     string
	key    string // S3 key, or path relative to the directory
	etag   string
}

// Entries lists the tree in path order (component by component, as a
// directory walk lists it, each directory announced before what is in it).
func (t *Tree) Entries() []TreeEntry { return t.entries }

// Size is the total size of the tree's files.
func (t *Tree) Size() int64 { return t.size }

// OpenTree returns rawURL as a Tree when it names one: an S3 prefix
// (s3://bucket/prefix/, every object under it, names relative to it), or a
// local directory (file:///dir/ or a path ending in '/'). It returns nil
// for anything else (a tarball: Open it). readers is how many of its files
// will be read at once: each S3 object is read with a share of the ranged
// GETs one object gets, so the chunk memory stays what one object's is.
func (s *Sources) OpenTree(ctx context.Context, rawURL string, readers int) (*Tree, error) {
	if !strings.HasSuffix(rawURL, "/") {
		return nil, nil
	}
	scheme, _, hasScheme := strings.Cut(rawURL, "://")
	switch {
	case hasScheme && strings.EqualFold(scheme, "s3"):
		bucket, prefix, err := parseS3URL(rawURL)
		if err != nil {
			return nil, err
		}
		return s.s3Tree(ctx, rawURL, bucket, prefix, readers)
	case hasScheme && strings.EqualFold(scheme, "file"):
		u, err := url.Parse(rawURL)
		if err != nil || (u.Host != "" && u.Host != "localhost") || u.Path == "" || u.Path[0] != '/' || u.RawQuery != "" {
			return nil, fmt.Errorf("opening %s: %w: use file:///abs/dir/", rawURL, ErrInvalidURL)
		}
		return dirTree(rawURL, u.Path)
	case hasScheme && isScheme(scheme):
		return nil, nil // https://…/: a tarball URL
	}
	return dirTree(rawURL, rawURL)
}

func dirTree(raw, dir string) (*Tree, error) {
	list, err := dirtar.List(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("opening %s: %w: no such directory; check the path: %w", raw, ErrNotFound, err)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("opening %s: %w: the directory is not readable by this process; fix its permissions: %w", raw, ErrDenied, err)
	case err != nil:
		return nil, fmt.Errorf("opening %s: %w", raw, err)
	}
	t := &Tree{raw: raw, dir: dir}
	for _, e := range list {
		te := TreeEntry{Header: e.Header, key: e.Header.Name}
		if e.Header.Typeflag == tar.TypeReg {
			te.ID = dirtar.FileID(dir+"/"+e.Header.Name, e.Info)
			t.size += e.Header.Size
		}
		t.entries = append(t.entries, te)
	}
	return t, nil
}

// s3Tree lists every object under the prefix. Zero-byte keys ending in '/'
// (folder markers) are skipped.
func (s *Sources) s3Tree(ctx context.Context, raw, bucket, prefix string, readers int) (*Tree, error) {
	type object struct {
		key, name, etag string
		size            int64
	}
	var objs []object
	p := s3.NewListObjectsV2Paginator(s.s3, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("listing %s: %w", raw, ctx.Err())
			}
			return nil, fmt.Errorf("listing %s: %w", raw, classifyS3(err))
		}
		for _, o := range page.Contents {
			key := aws.ToString(o.Key)
			if strings.HasSuffix(key, "/") {
				continue
			}
			objs = append(objs, object{key: key, name: strings.TrimPrefix(key, prefix), etag: aws.ToString(o.ETag), size: aws.ToInt64(o.Size)})
		}
		if len(objs) > MaxPrefixObjects {
			return nil, fmt.Errorf("listing %s: %w: more than %d objects under the prefix; publish a narrower prefix", raw, ErrInvalidURL, MaxPrefixObjects)
		}
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("listing %s: %w: no objects under the prefix; check the bucket and prefix", raw, ErrNotFound)
	}
	slices.SortFunc(objs, func(a, b object) int { return comparePaths(a.name, b.name) })
	t := &Tree{s: s, raw: raw, bucket: bucket, concurrency: max(1, s.concurrency/max(readers, 1))}
	dirs := map[string]bool{}
	for _, o := range objs {
		// Announce each directory before what is in it, as a walk would.
		parts := strings.Split(o.name, "/")
		for i := 1; i < len(parts); i++ {
			d := strings.Join(parts[:i], "/") + "/"
			if !dirs[d] {
				dirs[d] = true
				t.entries = append(t.entries, TreeEntry{Header: &tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, Format: tar.FormatPAX}})
			}
		}
		t.entries = append(t.entries, TreeEntry{
			Header: &tar.Header{Name: o.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: o.size, Format: tar.FormatPAX},
			ID:     fmt.Sprintf("s3://%s/%s|%s|%d", bucket, o.key, o.etag, o.size),
			key:    o.key, etag: o.etag,
		})
		t.size += o.size
	}
	return t, nil
}

// Open reads a regular file entry: an S3 object as Open reads one (ranged
// in parallel, its size, ETag and checksum checked), a local file inside
// the directory. An object that changed since the listing fails with
// ErrChanged.
func (t *Tree) Open(ctx context.Context, e TreeEntry) (io.ReadCloser, error) {
	if t.bucket == "" {
		f, err := dirtar.OpenFile(t.dir, e.key)
		if err != nil {
			return nil, fmt.Errorf("opening %s%s: %w", t.raw, e.key, err)
		}
		return f, nil
	}
	raw := "s3://" + t.bucket + "/" + e.key
	rc, size, err := t.s.openS3Object(ctx, raw, t.bucket, e.key, e.etag, t.concurrency)
	if err != nil {
		return nil, err
	}
	if size != e.Header.Size {
		rc.Close()
		return nil, fmt.Errorf("reading %s: %w: listed with %d bytes, now %d", redactURL(raw), ErrChanged, e.Header.Size, size)
	}
	return rc, nil
}

// openS3Prefix serves every object under s3://bucket/prefix/ (a key ending
// in '/') as an uncompressed tar of the Tree, objects read one after
// another; its size is unknown (-1) until read.
func (s *Sources) openS3Prefix(ctx context.Context, raw, bucket, prefix string) (io.ReadCloser, int64, error) {
	t, err := s.s3Tree(ctx, raw, bucket, prefix, 1)
	if err != nil {
		return nil, 0, err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(t.writeTar(ctx, pw)) }()
	return pr, -1, nil
}

func (t *Tree) writeTar(ctx context.Context, w io.Writer) error {
	tw := tar.NewWriter(w)
	for _, e := range t.entries {
		if err := tw.WriteHeader(e.Header); err != nil {
			return err
		}
		if e.Header.Typeflag != tar.TypeReg {
			continue
		}
		rc, err := t.Open(ctx, e)
		if err != nil {
			return err
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
