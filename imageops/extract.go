package imageops

// Extract and ExtractToDir, by job:
//
//   - extract_select.go: which layers — the one image of the reference and
//     its weights layers (pickWeights), or why there are none.
//   - extractfetch.go: getting them — WithJobs downloads at once, handed
//     over strictly newest first (readLayers).
//   - extract_merge.go: the merge — whiteouts, opaque directories, newest
//     wins, and the bounds on hostile layers (extractor).
//   - extract_write.go: the writers — a tar stream (tarSink) or a directory
//     staged under an os.Root and moved into place (dirSink, mover).
//
// Why the merge is not go-containerregistry's mutate.Extract (v0.22): it
// would flatten the same layers newest first, but it cannot keep what r8im
// promises about hostile layers, which TestExtractRefusesEscapes asserts:
//
//   - It drops, without an error, a symlink whose relative target climbs out
//     of the image root (unsafeRelativeLink) and then writes the entries the
//     layer puts below that name as ordinary files; below a symlink it keeps,
//     it skips them, also without an error. extract refuses an entry below a
//     non-directory of the same layer ("symlink attack?"), refuses an
//     escaping symlink in ExtractToDir ("points outside") and keeps it as it
//     is in a tar. Its ".." refusal is a plain error, not ErrInvalid.
//   - Its errors (a ".." path, a blob that fails its digest) reach the
//     reader only after a well-formed end of archive: its deferred
//     tar.Writer.Close writes the trailer before the pipe is closed with the
//     error, so tar.Reader.Next sees io.EOF on what is a truncated merge and
//     the caller must read the pipe past it to learn of the failure (checked
//     against v0.22.1).
//   - Its output is one merged stream: which layer an entry came from is
//     lost, so the rule that a hard link's target is a file extracted from
//     the same layer cannot be checked after it (a newer layer's entries come
//     first in the stream, so "written before" is not "same layer").
//   - It applies a whiteout at once, so it also hides an entry of the same
//     layer that follows it; the OCI spec (and extract) apply whiteouts to
//     older layers only (they are staged per layer, like opaque directories).
//   - It has no byte bound (WithTarLimits' MaxBytes is checked on each
//     file's header before a byte is written), takes no context, and reads
//     img.Layers() one after another; the read-ahead of readLayers could be
//     slipped under it as an image, the rest could not.
//
// So mutate.Extract would need a filter on its output that re-derives what
// it threw away, which it cannot; the merge stays in extract_merge.go: one
// pass per layer, its memory the sets of paths seen, not the layers' bytes.

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
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

// extract finds the weights layers of ref's image and feeds their entries,
// newest layer first, to sink; layers downloaded ahead wait in a temp dir
// under tempDir.
func extract(ctx context.Context, ref string, eo ExtractOptions, opts []Option, sink extractSink, tempDir string) (*ExtractResult, error) {
	o := makeOptions(opts)
	target, err := eo.target()
	if err != nil {
		return nil, err
	}
	m := newMeter()
	sel, err := selectWeights(ctx, o, ref, target, m)
	if err != nil {
		return nil, err
	}
	picked, fallback := sel.picked, sel.fallback
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
	res := &ExtractResult{Ref: sel.ref}
	var newestFirst []v1.Hash
	for i := len(picked) - 1; i >= 0; i-- {
		res.Layers = append(res.Layers, picked[i].Digest)
		newestFirst = append(newestFirst, picked[i].Digest)
	}
	err = readLayers(ctx, sel.img, newestFirst, o.jobs, tempDir, tick, func(ctx context.Context, d v1.Hash, l v1.Layer) error {
		return x.readLayer(ctx, l, d, tick)
	})
	if err != nil {
		return nil, err
	}
	tick(true)
	if fallback && x.found == 0 {
		return nil, noWeights(sel.ref.String(), target, true)
	}
	res.Files, res.Bytes = x.files, x.bytes
	res.Transfer = m.transfer(nil)
	return res, nil
}
