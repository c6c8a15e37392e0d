package imageops

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Whiteout names (OCI image spec, layer changesets).
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// extractor merges layers newest first: what a newer layer holds, deletes
// or makes opaque hides the same paths of older layers.
type extractor struct {
	target   string // image path of the weights dir, no leading slash
	strip    bool
	fallback bool // COPY . /src layers: only entries under target
	sink     extractSink

	seen      map[string]bool // paths held by newer layers
	nonDir    map[string]bool // of those, the ones that are not directories
	whiteouts map[string]bool // paths deleted by newer layers
	opaque    map[string]bool // directories whose older contents are hidden

	// the layer being read; merged into the above when it ends
	layerPaths     map[string]bool   // path → is a directory
	layerFiles     map[string]string // image path → output path of files written (hard link targets)
	layerWhiteouts map[string]bool
	layerOpaque    map[string]bool

	files    int
	bytes    int64
	maxBytes int64 // bound on bytes, as the files' headers declare them
	found    int   // entries under the target, the target itself excluded
}

func newExtractor(target string, strip, fallback bool, sink extractSink) *extractor {
	x := &extractor{target: target, strip: strip, fallback: fallback, sink: sink,
		seen: map[string]bool{}, nonDir: map[string]bool{}, whiteouts: map[string]bool{}, opaque: map[string]bool{}}
	x.resetLayer()
	return x
}

func (x *extractor) resetLayer() {
	x.layerPaths, x.layerFiles = map[string]bool{}, map[string]string{}
	x.layerWhiteouts, x.layerOpaque = map[string]bool{}, map[string]bool{}
}

// readLayer reads one layer (from the registry or a file downloaded
// ahead) and takes its entries.
func (x *extractor) readLayer(ctx context.Context, l v1.Layer, digest v1.Hash, tick func(bool)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	rc, err := l.Uncompressed()
	if err != nil {
		return registryErr(err, "downloading layer "+digest.String())
	}
	defer rc.Close()
	r := &ctxReader{ctx: ctx, r: rc, tick: tick}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return registryErr(err, "reading layer "+digest.String())
		}
		if err := x.entry(hdr, tr); err != nil {
			return fmt.Errorf("extracting layer %s: %w", digest, err)
		}
	}
	// Read to the end so the blob's digest is verified.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return registryErr(err, "reading layer "+digest.String())
	}
	for p, isDir := range x.layerPaths {
		x.seen[p] = true
		if !isDir {
			x.nonDir[p] = true
		}
	}
	for p := range x.layerWhiteouts {
		x.whiteouts[p] = true
	}
	for p := range x.layerOpaque {
		x.opaque[p] = true
	}
	x.resetLayer()
	return nil
}

// entry takes one tar entry of the current layer.
func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	p, err := entryPath(hdr.Name)
	if err != nil || p == "." {
		return err
	}
	dir, base := path.Dir(p), path.Base(p)
	switch {
	case base == whiteoutOpaque:
		x.layerOpaque[dir] = true
		return nil
	case strings.HasPrefix(base, whiteoutMeta):
		return nil // aufs metadata (.wh..wh.plnk...)
	case strings.HasPrefix(base, whiteoutPrefix):
		x.layerWhiteouts[path.Join(dir, base[len(whiteoutPrefix):])] = true
		return nil
	}
	if x.hidden(p) {
		return nil
	}
	for a := dir; a != "."; a = path.Dir(a) {
		if isDir, ok := x.layerPaths[a]; ok && !isDir {
			return invalidf("refusing %s: it lies below %s, which the same layer made a non-directory (symlink attack?)", p, a)
		}
	}
	x.layerPaths[p] = hdr.Typeflag == tar.TypeDir
	out, ok := x.outName(p)
	if !ok {
		return nil
	}
	if p != x.target {
		x.found++
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		return x.sink.dir(out, hdr)
	case tar.TypeReg:
		if hdr.Size > x.maxBytes-x.bytes {
			return withRemedy(invalidf("the weights files add up to more than %d bytes (the limit) at %s", x.maxBytes, p), RemedyMaxWeightsSize)
		}
		x.files++
		x.bytes += hdr.Size
		x.layerFiles[p] = out
		return x.sink.file(out, hdr, r)
	case tar.TypeSymlink:
		link, inside := x.linkTarget(out, hdr.Linkname)
		return x.sink.symlink(out, link, inside, hdr)
	case tar.TypeLink:
		t, err := entryPath(hdr.Linkname)
		if err != nil {
			return err
		}
		outT, ok := x.layerFiles[t]
		if !ok {
			return invalidf("hard link %s → %s: the target is not a file extracted from the same layer", p, t)
		}
		x.layerFiles[p] = out
		return x.sink.hardlink(out, outT, hdr)
	}
	return nil // devices and fifos are not weights
}

// hidden reports whether a newer layer holds p, deleted it or one of its
// parents, or made a parent opaque or a non-directory.
func (x *extractor) hidden(p string) bool {
	if x.seen[p] || x.whiteouts[p] {
		return true
	}
	for a := path.Dir(p); a != "."; a = path.Dir(a) {
		if x.nonDir[a] || x.whiteouts[a] || x.opaque[a] {
			return true
		}
	}
	return false
}

func (x *extractor) under(p string) bool {
	return p == x.target || strings.HasPrefix(p, x.target+"/")
}

// outName maps an image path to the output path; false skips the entry.
func (x *extractor) outName(p string) (string, bool) {
	if (x.fallback || x.strip) && !x.under(p) {
		return "", false
	}
	if !x.strip {
		return p, true
	}
	if p == x.target {
		return "", false
	}
	return p[len(x.target)+1:], true
}

// linkTarget returns the symlink target to write for out and whether it
// stays inside the output. Relative targets are cleaned; absolute ones that
// name a path of the output become relative.
func (x *extractor) linkTarget(out, link string) (string, bool) {
	from := path.Dir(out)
	if !path.IsAbs(link) {
		clean := path.Clean(link)
		res := path.Join(from, clean)
		return clean, res != ".." && !strings.HasPrefix(res, "../")
	}
	ip := strings.TrimPrefix(path.Clean(link), "/")
	if ip == "" {
		return link, false
	}
	mapped := ip
	if x.strip {
		if !x.under(ip) {
			return link, false
		}
		mapped = strings.TrimPrefix(strings.TrimPrefix(ip, x.target), "/")
		if mapped == "" {
			mapped = "."
		}
	}
	return relPath(from, mapped), true
}

// relPath is the relative slash path from directory from to to, both
// relative to the same root and clean.
func relPath(from, to string) string {
	split := func(p string) []string {
		if p == "." {
			return nil
		}
		return strings.Split(p, "/")
	}
	f, t := split(from), split(to)
	i := 0
	for i < len(f) && i < len(t) && f[i] == t[i] {
		i++
	}
	parts := make([]string, 0, len(f)-i+len(t)-i)
	for range f[i:] {
		parts = append(parts, "..")
	}
	parts = append(parts, t[i:]...)
	if len(parts) == 0 {
		return "."
	}
	return strings.Join(parts, "/")
}

// entryPath cleans a tar entry name to a relative slash path ("." for the
// root), refusing names that climb with "..".
func entryPath(name string) (string, error) {
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", invalidf("refusing entry %q: its path contains ..", name)
		}
	}
	p := strings.TrimPrefix(path.Clean("/"+name), "/")
	if p == "" {
		return ".", nil
	}
	return p, nil
}

// ctxReader stops reading when ctx ends and ticks progress after each read.
type ctxReader struct {
	ctx  context.Context
	r    io.Reader
	tick func(bool)
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.tick(false)
	return n, err
}
