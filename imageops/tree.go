package imageops

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/r8im/r8im/internal/dirtar"
)

// WeightsTree is a weights input whose entries are known before any content
// is read and whose files can be read in any order, several at once: a
// directory, an uncompressed .tar file, an S3 prefix. Affix reads such an
// input straight into several layers in parallel (see Layout); a stream
// (a compressed tarball, stdin) can only be read in order.
type WeightsTree interface {
	// Entries lists the tree as tar headers, in the order a tarball of it
	// would hold them (a directory before what is in it). Names are
	// relative, as in a tarball; regular files carry their sizes.
	Entries(ctx context.Context) ([]TreeEntry, error)
	// Open reads the content of a regular file entry: exactly its
	// Header.Size bytes, or an error.
	Open(ctx context.Context, e TreeEntry) (io.ReadCloser, error)
}

// TreeEntry is one entry of a WeightsTree.
type TreeEntry struct {
	Header *tar.Header
	// ID identifies the entry's content for the layer-digest cache: two
	// entries with the same non-empty ID hold the same bytes (an S3
	// object's bucket, key, ETag and size; a file's path, size, mtime and
	// inode). Empty means the content cannot be identified cheaply, and a
	// layer holding it is never taken from the cache.
	ID string
	// Ref is the tree's own handle on the entry (a path, an offset).
	Ref any
}

// DirTree serves directory dir as a WeightsTree, listed as DirOpener
// streams it: path order, symlinks kept as links and never followed, reads
// confined to dir. Each file is checked to have kept its size while read.
func DirTree(dir string) WeightsTree { return dirTree{dir: dir} }

type dirTree struct{ dir string }

func (t dirTree) Entries(context.Context) ([]TreeEntry, error) {
	list, err := dirtar.List(t.dir)
	if err != nil {
		return nil, err
	}
	out := make([]TreeEntry, len(list))
	for i, e := range list {
		out[i] = TreeEntry{Header: e.Header, Ref: e.Header.Name}
		if e.Header.Typeflag == tar.TypeReg {
			out[i].ID = dirtar.FileID(t.dir+"/"+e.Header.Name, e.Info)
		}
	}
	return out, nil
}

func (t dirTree) Open(_ context.Context, e TreeEntry) (io.ReadCloser, error) {
	return dirtar.OpenFile(t.dir, e.Ref.(string))
}

// TarFileTree serves an uncompressed tarball file as a WeightsTree: its
// headers are indexed once, and each file is read at its offset, so the
// layers of one tarball are produced in parallel. It returns
// ErrNotIndexable for a compressed tarball (gzip, zstd), which can only be
// streamed: give it to Affix as Weights instead. The file stays open once
// read; the tree is an io.Closer that closes it.
func TarFileTree(path string) (WeightsTree, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	var head [tarBlockSize]byte
	n, _ := io.ReadFull(f, head[:])
	f.Close()
	if bytes.HasPrefix(head[:n], magicGzip) || bytes.HasPrefix(head[:n], magicZstd) {
		return nil, ErrNotIndexable
	}
	if n < tarBlockSize || !isTarHeader(head[:]) {
		return nil, ErrNotIndexable // the stream path explains what it is
	}
	return &tarTree{path: path}, nil
}

// ErrNotIndexable: the input is not an uncompressed tarball, so it cannot be
// read at offsets.
var ErrNotIndexable = errors.New("the weights input is not an uncompressed tarball; it can only be streamed")

type tarTree struct {
	path string
	once sync.Once
	f    *os.File
	err  error
}

type tarMember struct{ off int64 }

func (t *tarTree) file() (*os.File, error) {
	t.once.Do(func() { t.f, t.err = os.Open(t.path) })
	return t.f, t.err
}

// Entries indexes the tarball: tar.Reader reads header blocks only and
// seeks over the contents, so a 100 GB tarball is indexed in milliseconds.
// Any trouble (a truncated or corrupt tarball) is reported as the stream
// path would report it.
func (t *tarTree) Entries(ctx context.Context) ([]TreeEntry, error) {
	f, err := t.file()
	if err != nil {
		return nil, err
	}
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	r := &offsetReader{f: f}
	tr := tar.NewReader(r)
	var out []TreeEntry
	last := ""
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("%w: it ends %s", ErrTruncatedTar, afterEntry(last))
			}
			return nil, fmt.Errorf("%w: %s: %v", ErrCorruptTar, afterEntry(last), err)
		}
		last = h.Name
		e := TreeEntry{Header: h, Ref: tarMember{off: r.off}}
		if h.Typeflag == tar.TypeReg {
			if r.off+h.Size > info.Size() {
				return nil, fmt.Errorf("%w: entry %s runs past the end of the file", ErrTruncatedTar, quoteEntry(h.Name))
			}
			e.ID = fmt.Sprintf("%s@%d", dirtar.FileID(t.path, info), r.off)
		}
		out = append(out, e)
	}
	return out, nil
}

func (t *tarTree) Open(_ context.Context, e TreeEntry) (io.ReadCloser, error) {
	f, err := t.file()
	if err != nil {
		return nil, err
	}
	m := e.Ref.(tarMember)
	return io.NopCloser(io.NewSectionReader(f, m.off, e.Header.Size)), nil
}

// Close releases the tarball.
func (t *tarTree) Close() error {
	if t.f != nil {
		return t.f.Close()
	}
	return nil
}

// offsetReader tracks the offset tar.Reader has reached, through its reads
// and the seeks it skips contents with.
type offsetReader struct {
	f   *os.File
	off int64
}

func (r *offsetReader) Read(p []byte) (int, error) {
	n, err := r.f.ReadAt(p, r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (r *offsetReader) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		r.off += off
	case io.SeekStart:
		r.off = off
	case io.SeekEnd:
		st, err := r.f.Stat()
		if err != nil {
			return 0, err
		}
		r.off = st.Size() + off
	}
	return r.off, nil
}
