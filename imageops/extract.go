package imageops

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/r8im/r8im/internal/retry"
)

// ExtractOptions says which part of the weights layers to write and where.
type ExtractOptions struct {
	StripTarget bool   // write paths relative to the weights dir (src/weights/a → a)
	Target      string // weights dir to look for in COPY . /src layers and to strip; default DefaultTarget ("/src/weights")
	// TempDir is where Extract keeps the layers it downloads ahead of the
	// one it writes (see WithJobs); "" is os.TempDir(). ExtractToDir
	// ignores it and uses the output directory.
	TempDir string
}

// ExtractResult describes an extraction.
type ExtractResult struct {
	Ref      name.Digest `json:"ref"`    // repo@sha256 of the image read
	Layers   []v1.Hash   `json:"layers"` // digests read, newest first
	Files    int         `json:"files"`  // regular files written
	Bytes    int64       `json:"bytes"`  // their total size
	Transfer Transfer    `json:"transfer"`
}

// ErrNoWeights: the image has no layer holding weights. Errors carrying it
// also match ErrInvalid (asking again will not help).
var ErrNoWeights = retry.New("no weights layers")

// Whiteout names (OCI image spec, layer changesets).
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// Extract streams the weights of the image ref names to w as a tar.
//
// The weights layers are those marked by r8im, by the seeds' history
// convention or by cog (whole layers, every entry); without any, the
// COPY . /src layers, of which only the entries under the target are taken.
// Only those layers are downloaded. They are read newest first, and a
// path a newer layer holds or deletes (whiteouts, opaque directories) is
// not taken from an older one; whiteout entries themselves are not written.
// Regular files, directories, symlinks and hard links (to a file of the same
// layer) are kept; devices and fifos are skipped. Names are relative, modes
// keep their permission bits (&0o777), uid/gid come from the layer. An
// absolute symlink pointing inside the output is rewritten as relative.
// Whiteouts in layers that are not weights layers are not seen.
//
// Up to WithJobs layers (default 4) are downloaded at once: the newest is
// streamed as it is written, the others are downloaded ahead into temp
// files under eo.TempDir (their digests checked as each download ends) and
// written in turn, so the tar is the same whatever the number of jobs and
// at most that many compressed layers sit on disk. Memory does not grow
// with layer size.
func Extract(ctx context.Context, ref string, w io.Writer, eo ExtractOptions, opts ...Option) (*ExtractResult, error) {
	if w == nil {
		return nil, invalidf("extract: no output given")
	}
	tw := tar.NewWriter(w)
	res, err := extract(ctx, ref, eo, opts, &tarSink{tw: tw}, eo.TempDir)
	if err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("writing the tar: %w", err)
	}
	return res, nil
}

// ExtractToDir writes the weights of the image ref names under dir, which is
// created if needed; see Extract for which entries are taken. No entry may
// land outside dir: paths with "..", symlinks whose target leaves dir and
// entries below a symlink are refused, and every write goes through an
// os.Root. The files are first written to a temp dir inside dir and moved
// into place only once every layer is read and its digest checked, so after
// an error (a blob that does not match its digest, a refused entry, the
// size limit of WithTarLimits) dir holds nothing new. Existing files and
// symlinks at extracted paths are replaced; a directory where the weights
// have a file, or a file or symlink where they have a directory, is an
// error before anything moves. Symlinks are written with cleaned, relative
// targets; directory modes and times are applied last.
//
// Layers are downloaded WithJobs at a time (default 4) as Extract does, the
// ones ahead into a second temp dir inside dir (so on the same disk as
// the files), removed before ExtractToDir returns; the files written do
// not depend on the number of jobs.
func ExtractToDir(ctx context.Context, ref string, dir string, eo ExtractOptions, opts ...Option) (_ *ExtractResult, err error) {
	if strings.TrimSpace(dir) == "" {
		return nil, invalidf("extract: no output directory given")
	}
	made, err := mkdirAllNew(dir)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			for _, d := range made { // deepest first; only if still empty
				_ = os.Remove(d)
			}
		}
	}()
	stage, err := os.MkdirTemp(dir, ".r8im-extract-*")
	if err != nil {
		return nil, fmt.Errorf("creating a temp dir in %s: %w", dir, err)
	}
	defer os.RemoveAll(stage) // empty after a complete move
	staged, err := os.OpenRoot(stage)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", stage, err)
	}
	defer staged.Close()
	sink := &dirSink{root: staged, path: dir}
	res, err := extract(ctx, ref, eo, opts, sink, dir)
	if err != nil {
		return nil, err
	}

	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", dir, err)
	}
	defer root.Close()
	m := &mover{root: root, stage: filepath.Base(stage), path: dir}
	if err := m.walk(".", false); err != nil { // every conflict, before anything moves
		return nil, err
	}
	if err := m.walk(".", true); err != nil {
		return nil, err
	}
	sink.root = root
	if err := sink.finish(); err != nil {
		return nil, err
	}
	return res, nil
}

// mkdirAllNew creates dir and its missing parents and returns those it
// created, deepest first.
func mkdirAllNew(dir string) ([]string, error) {
	var made []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || filepath.Dir(d) == d {
			break
		}
		made = append(made, d)
	}
	return made, os.MkdirAll(dir, 0o755)
}

// mover moves the tree staged in root/stage into root.
type mover struct {
	root  *os.Root
	stage string // the temp dir, a child of root
	path  string // root's path, for messages
}

// walk goes through the staged directory rel: each entry missing from
// root, or a file or symlink replacing one, is renamed into place (when
// move; else only checked); directories present on both sides are merged.
func (m *mover) walk(rel string, move bool) error {
	f, err := m.root.Open(path.Join(m.stage, rel))
	if err != nil {
		return fmt.Errorf("reading the extracted files: %w", err)
	}
	entries, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("reading the extracted files: %w", err)
	}
	for _, e := range entries {
		name := path.Join(rel, e.Name())
		fi, err := m.root.Lstat(name)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return fmt.Errorf("writing %s under %s: %w", name, m.path, err)
		case e.IsDir() && fi.IsDir():
			if err := m.walk(name, move); err != nil {
				return err
			}
			continue
		case e.IsDir():
			return fmt.Errorf("writing %s under %s: %w", name, m.path, fmt.Errorf("the weights have a directory there and %s holds a %s: remove it (r8im neither replaces nor writes through it)", m.path, fileKind(fi)))
		case fi.IsDir():
			return fmt.Errorf("writing %s under %s: %w", name, m.path, errors.New("a directory is in the way"))
		}
		if move {
			if err := m.root.Rename(path.Join(m.stage, name), name); err != nil {
				return fmt.Errorf("moving %s into %s: %w", name, m.path, err)
			}
		}
	}
	return nil
}

func fileKind(fi os.FileInfo) string {
	if fi.Mode()&os.ModeSymlink != 0 {
		return "symlink"
	}
	return "file"
}

func (eo ExtractOptions) target() (string, error) {
	t := eo.Target
	if t == "" {
		t = DefaultTarget
	}
	if !path.IsAbs(t) || path.Clean(t) == "/" {
		return "", invalidf("target %q must be an absolute directory below / such as /src/weights", eo.Target)
	}
	return strings.TrimPrefix(path.Clean(t), "/"), nil
}

// extract finds the weights layers of ref's image and feeds their entries,
// newest layer first, to sink; layers downloaded ahead wait in a temp dir
// under tempDir.
func extract(ctx context.Context, ref string, eo ExtractOptions, opts []Option, sink extractSink, tempDir string) (*ExtractResult, error) {
	o := makeOptions(opts)
	target, err := eo.target()
	if err != nil {
		return nil, err
	}
	r, err := o.parseRef(ref, "image")
	if err != nil {
		return nil, err
	}
	m := newMeter()
	src, err := o.resolve(ctx, r, o.remoteOptions(ctx, m), "image")
	if err != nil {
		return nil, err
	}
	if len(src.images) != 1 {
		return nil, withRemedy(invalidf("%s is an index of %d images and extract reads one: choose one platform", src.ref, len(src.images)), RemedyPlatform)
	}
	img := src.images[0].image
	info, err := describeImage(src, src.images[0])
	if err != nil {
		return nil, err
	}
	picked, fallback := pickWeights(info.Layers)
	if len(picked) == 0 {
		return nil, noWeights(info.Ref.String(), target, false)
	}
	var total int64
	for _, li := range picked {
		total += li.Size
	}
	start, last := m.downloaded.Load(), int64(-1)
	var tickMu sync.Mutex // layers download concurrently
	tick := func(final bool) {
		tickMu.Lock()
		defer tickMu.Unlock()
		if done := m.downloaded.Load() - start; final || done-last >= progressStep {
			last = done
			o.report("extract", done, total)
		}
	}

	tick(true)
	x := newExtractor(target, eo.StripTarget, fallback, sink)
	if x.maxBytes = o.limits.MaxBytes; x.maxBytes <= 0 {
		x.maxBytes = defaultMaxBytes
	}
	res := &ExtractResult{Ref: info.Ref}
	var newestFirst []v1.Hash
	for i := len(picked) - 1; i >= 0; i-- {
		res.Layers = append(res.Layers, picked[i].Digest)
		newestFirst = append(newestFirst, picked[i].Digest)
	}
	err = readLayers(ctx, img, newestFirst, o.jobs, tempDir, tick, func(ctx context.Context, d v1.Hash, l v1.Layer) error {
		return x.readLayer(ctx, l, d, tick)
	})
	if err != nil {
		return nil, err
	}
	tick(true)
	if fallback && x.found == 0 {
		return nil, noWeights(info.Ref.String(), target, true)
	}
	res.Files, res.Bytes = x.files, x.bytes
	res.Transfer = m.transfer(nil)
	return res, nil
}

// pickWeights returns the whole weights layers or, when there are none, the
// COPY . /src layers (fallback), oldest first.
func pickWeights(infos []LayerInfo) (picked []LayerInfo, fallback bool) {
	for _, i := range weightsLayers(infos) {
		picked = append(picked, infos[i])
	}
	if len(picked) > 0 {
		return picked, false
	}
	for _, li := range infos {
		if li.Weights == CopySrcLayer {
			picked = append(picked, li)
		}
	}
	return picked, true
}

type noWeightsError struct{ msg string }

func (e *noWeightsError) Error() string        { return e.msg }
func (e *noWeightsError) Is(target error) bool { return target == ErrNoWeights || target == ErrInvalid }
func (e *noWeightsError) Permanent() bool      { return true }

func noWeights(ref, target string, copyEmpty bool) error {
	msg := fmt.Sprintf("%s has no weights layers: searched for layers marked by r8im (annotation %s=true or config label %s), "+
		"by history (created_by ending \" # weights\" or comment %q) and by cog (COPY --from=weights), then for COPY . /src layers holding files under /%s",
		ref, AnnotationWeights, LabelWeightsLayers, WeightsComment, target)
	if copyEmpty {
		msg += "; its COPY . /src layers hold nothing there"
	}
	return &noWeightsError{msg: msg}
}

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

// extractSink writes the taken entries: as a tar, or into a directory.
type extractSink interface {
	dir(name string, h *tar.Header) error
	file(name string, h *tar.Header, r io.Reader) error
	symlink(name, target string, inside bool, h *tar.Header) error
	hardlink(name, target string, h *tar.Header) error
}

type tarSink struct{ tw *tar.Writer }

func (s *tarSink) write(h *tar.Header, typ byte, name, link string, size int64) error {
	err := s.tw.WriteHeader(&tar.Header{
		Typeflag: typ, Name: name, Linkname: link, Size: size, Mode: h.Mode & 0o777,
		Uid: h.Uid, Gid: h.Gid, Uname: h.Uname, Gname: h.Gname, ModTime: h.ModTime,
	})
	if err != nil {
		return fmt.Errorf("writing the tar: %w", err)
	}
	return nil
}

func (s *tarSink) dir(name string, h *tar.Header) error {
	return s.write(h, tar.TypeDir, name+"/", "", 0)
}

func (s *tarSink) file(name string, h *tar.Header, r io.Reader) error {
	if err := s.write(h, tar.TypeReg, name, "", h.Size); err != nil {
		return err
	}
	if n, err := io.Copy(s.tw, r); err != nil || n != h.Size {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("copying %s: %w", name, err)
	}
	return nil
}

// symlink keeps the layer's target unless it was absolute and rewritten to
// a relative one inside the output.
func (s *tarSink) symlink(name, target string, inside bool, h *tar.Header) error {
	if !inside || !path.IsAbs(h.Linkname) {
		target = h.Linkname
	}
	return s.write(h, tar.TypeSymlink, name, target, 0)
}

func (s *tarSink) hardlink(name, target string, h *tar.Header) error {
	return s.write(h, tar.TypeLink, name, target, 0)
}

type dirSink struct {
	root *os.Root
	path string        // for messages
	dirs []*tar.Header // name = output path; applied by finish
}

func (d *dirSink) fail(name string, err error) error {
	return fmt.Errorf("writing %s under %s: %w", name, d.path, err)
}

func (d *dirSink) parent(name string) error {
	if p := path.Dir(name); p != "." {
		if err := d.root.MkdirAll(p, 0o755); err != nil {
			return d.fail(name, err)
		}
	}
	return nil
}

// clear removes a non-directory at name, so that creating it never writes
// through an existing file or symlink.
func (d *dirSink) clear(name string) error {
	fi, err := d.root.Lstat(name)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return d.fail(name, err)
	case fi.IsDir():
		return d.fail(name, errors.New("a directory is in the way"))
	}
	if err := d.root.Remove(name); err != nil {
		return d.fail(name, err)
	}
	return nil
}

func (d *dirSink) dir(name string, h *tar.Header) error {
	if fi, err := d.root.Lstat(name); err == nil && !fi.IsDir() {
		if err := d.root.Remove(name); err != nil { // a directory replaces a file or symlink
			return d.fail(name, err)
		}
	}
	if err := d.root.MkdirAll(name, 0o755); err != nil {
		return d.fail(name, err)
	}
	d.dirs = append(d.dirs, &tar.Header{Name: name, Mode: h.Mode, ModTime: h.ModTime})
	return nil
}

func (d *dirSink) file(name string, h *tar.Header, r io.Reader) error {
	if err := d.parent(name); err != nil {
		return err
	}
	if err := d.clear(name); err != nil {
		return err
	}
	f, err := d.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return d.fail(name, err)
	}
	n, err := io.Copy(f, r)
	if err == nil && n != h.Size {
		err = io.ErrUnexpectedEOF
	}
	if err == nil {
		err = f.Chmod(os.FileMode(h.Mode & 0o777))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && !h.ModTime.IsZero() {
		err = d.root.Chtimes(name, h.ModTime, h.ModTime)
	}
	if err != nil {
		return d.fail(name, err)
	}
	return nil
}

func (d *dirSink) symlink(name, target string, inside bool, h *tar.Header) error {
	if !inside {
		return invalidf("refusing symlink %s → %s: it points outside %s", name, h.Linkname, d.path)
	}
	if err := d.parent(name); err != nil {
		return err
	}
	if err := d.clear(name); err != nil {
		return err
	}
	if err := d.root.Symlink(target, name); err != nil {
		return d.fail(name, err)
	}
	return nil
}

func (d *dirSink) hardlink(name, target string, h *tar.Header) error {
	if err := d.parent(name); err != nil {
		return err
	}
	if err := d.clear(name); err != nil {
		return err
	}
	if err := d.root.Link(target, name); err != nil {
		return d.fail(name, err)
	}
	return nil
}

// finish applies directory modes and times, deepest first so that a
// read-only directory does not stop the ones below it.
func (d *dirSink) finish() error {
	slices.SortStableFunc(d.dirs, func(a, b *tar.Header) int {
		return strings.Count(b.Name, "/") - strings.Count(a.Name, "/")
	})
	for _, h := range d.dirs {
		if err := d.root.Chmod(h.Name, os.FileMode(h.Mode&0o777)); err != nil {
			return d.fail(h.Name, err)
		}
		if !h.ModTime.IsZero() {
			if err := d.root.Chtimes(h.Name, h.ModTime, h.ModTime); err != nil {
				return d.fail(h.Name, err)
			}
		}
	}
	return nil
}
