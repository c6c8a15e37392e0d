package imageops

import (
	"archive/tar"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/r8im/r8im/internal/retry"
)

const (
	defaultMaxEntries    = 1_000_000
	defaultMaxNameLength = 4096
	defaultMaxBytes      = 1 << 40 // 1 TiB
	// maxKeptViolations bounds the memory a hostile tarball can make us use
	// for its error; PolicyError.More counts the rest.
	maxKeptViolations = 1000
	// maxListedViolations is how many violations PolicyError.Error lists.
	maxListedViolations = 50
	copyBufferSize      = 256 << 10
)

// ErrEmptyTar means the tarball holds no entry besides the target directory
// and its parents.
var ErrEmptyTar = retry.New("the weights tarball has no files")

// TarPolicy says where the entries of a weights tarball go in the image and
// what they may be.
type TarPolicy struct {
	// Target is the absolute directory in the image that the tarball fills,
	// DefaultTarget when empty. It is cleaned; a relative one is taken
	// from the image root.
	Target string
	// AllowOutsideTarget keeps entries outside Target (and links pointing
	// outside it) instead of refusing them. The layout is still decided by
	// the first entry: a tarball whose first entry is under Target keeps its
	// paths, so src/predict.py stays /src/predict.py. Entries still may not
	// leave the image root.
	AllowOutsideTarget bool
	// ModTime is every entry's modification time, for reproducible layers.
	// The zero time means the Unix epoch.
	ModTime time.Time
	// MaxEntries bounds the number of tar entries; 0 means 1,000,000.
	MaxEntries int
	// MaxNameLength bounds the length in bytes of entry names and link
	// targets; 0 means 4096.
	MaxNameLength int
	// MaxBytes bounds the total size of the regular files, as their headers
	// declare them before any byte is copied (a small compressed bomb is
	// refused before it expands); 0 means 1 TiB.
	MaxBytes int64
	// Links holds the paths and links of the weights layers written before
	// this one in the same publish, nil when there are none. RewriteTar
	// resolves this tarball's entries and links through them and adds its
	// own entries to it, so the next layer's pass sees them. A pass that
	// must run again (a retried upload) needs the set as it was before:
	// give it a Clone.
	Links *LinkSet
}

// TarStats describes a rewritten tarball. Entries counts the entries copied
// from the input (not the target directories RewriteTar adds, nor the input's
// own entries for those directories); Files counts regular files and Bytes
// their content.
type TarStats struct {
	Entries, Files int
	Bytes          int64
}

// Violation is one tar entry RewriteTar refuses: Entry is its name as it
// appears in the input, Reason says why and how to fix the tarball, and
// Kind says what else could get it through, if anything.
type Violation struct {
	Entry  string
	Kind   ViolationKind
	Reason string
}

// ViolationKind sorts violations by what can get past them. The reasons
// speak of the tarball only; a program that offers its users a way round
// (a flag, a setting) says so itself, by kind (see Remedies).
type ViolationKind string

const (
	// ViolationEntry: the entry itself is refused (its type, name, link
	// or place among the others); only a new tarball helps.
	ViolationEntry ViolationKind = "entry"
	// ViolationOutsideTarget: the entry lies, or its link leads, outside
	// the target; TarPolicy.AllowOutsideTarget (AffixRequest's) keeps it.
	ViolationOutsideTarget ViolationKind = "outside-target"
	// ViolationTooLarge, ViolationTooManyEntries, ViolationNameTooLong:
	// the tarball crosses a bound of TarLimits (MaxBytes, MaxEntries,
	// MaxNameLength); a larger bound lets it through.
	ViolationTooLarge       ViolationKind = "too-large"
	ViolationTooManyEntries ViolationKind = "too-many-entries"
	ViolationNameTooLong    ViolationKind = "name-too-long"
)

// entryFault is a ViolationEntry with its reason.
func entryFault(reason string) Violation { return Violation{Kind: ViolationEntry, Reason: reason} }

// outsideTarget is a ViolationOutsideTarget with its reason.
func outsideTarget(reason string) Violation {
	return Violation{Kind: ViolationOutsideTarget, Reason: reason}
}

func (v Violation) String() string {
	return displayName(v.Entry) + ": " + v.Reason
}

// PolicyError lists the entries of a weights tarball that break its
// TarPolicy. It is a permanent error: the tarball must be fixed.
type PolicyError struct {
	// Target is the policy's target directory.
	Target string
	// Violations lists the refused entries in tarball order (at most 1000).
	Violations []Violation
	// More counts the violations found beyond those in Violations.
	More int
}

// Permanent: the tarball must be fixed; retrying cannot help.
func (e *PolicyError) Permanent() bool { return true }

func (e *PolicyError) Error() string {
	total := len(e.Violations) + e.More
	var b strings.Builder
	noun := "entries"
	if total == 1 {
		noun = "entry"
	}
	fmt.Fprintf(&b, "the weights tarball has %d %s r8im will not write:", total, noun)
	for i, v := range e.Violations {
		if i == maxListedViolations {
			break
		}
		b.WriteString("\n  - ")
		b.WriteString(v.String())
	}
	if rest := total - min(len(e.Violations), maxListedViolations); rest > 0 {
		fmt.Fprintf(&b, "\n  ... and %d more", rest)
	}
	return b.String()
}

// displayName shows an entry name as is when it is printable, quoted when
// it holds control characters or is empty.
func displayName(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || r == unicode.ReplacementChar {
			return strconv.Quote(s)
		}
	}
	return s
}

// RewriteTar reads a weights tarball from r and writes to w the tarball r8im
// puts in the image, in one streaming pass whose memory does not grow with
// file sizes:
//
//   - w starts with the target directory and its parents (mode 0755, owned
//     by root); the input's own entries for them ("./", "src/", ...) are
//     dropped.
//   - The first other entry decides the layout: under the target ("src/weights/x"
//     or "/src/weights/x") means every path is kept; anything else means the
//     tarball is relative and every entry goes under the target.
//   - Entries keep their name, content and rwx bits; owners become root,
//     setuid/setgid/sticky bits, xattrs and PAX records are dropped, and
//     every time is p.ModTime, so the same input gives the same bytes.
//   - Paths leaving the target (by an absolute name or a link), names
//     that climb out of their first directory with "..", devices, fifos,
//     whiteouts, unknown entry types, over-long names, too many entries,
//     paths through a symlink and entries over a symlink are refused.
//   - Symlinks and hard links are resolved as the kernel would resolve them
//     in the unpacked image, through the links seen so far (p.Links: those
//     of earlier weights layers of the publish, then this tarball's), and
//     every symlink is resolved again once the tarball ends; each must stay
//     in the target (in the image with AllowOutsideTarget) both by its text
//     and by that resolution. See LinkSet.
//
// At the first refused entry RewriteTar stops writing but reads on, skipping
// bodies, and returns a *PolicyError naming every refused entry; w then holds
// a partial tarball to discard. A tarball with no entry of its own gives
// ErrEmptyTar, one that ends early ErrTruncatedTar, a corrupt one
// ErrCorruptTar; errors reading r or writing w are returned wrapped.
func RewriteTar(w io.Writer, r io.Reader, p TarPolicy) (TarStats, error) {
	return rewriteTar(r, p, &oneTar{tw: tar.NewWriter(w)})
}

// entrySink takes what rewriteTar writes: one tarball, or several layers.
type entrySink interface {
	// next returns the tar writer for an entry the policy admitted (in as
	// read, out as it is to be written); parents are the target's
	// directory headers, which every tarball starts with.
	next(in, out *tar.Header, parents []*tar.Header) (*tar.Writer, error)
	// end completes the output once every entry is written.
	end() error
}

// oneTar is RewriteTar's sink: one tarball, starting with the target's
// directories.
type oneTar struct {
	tw      *tar.Writer
	started bool
}

func (o *oneTar) next(_, _ *tar.Header, parents []*tar.Header) (*tar.Writer, error) {
	if !o.started {
		o.started = true
		for _, h := range parents {
			if err := o.tw.WriteHeader(h); err != nil {
				return nil, fmt.Errorf("writing the weights tarball: %w", err)
			}
		}
	}
	return o.tw, nil
}

func (o *oneTar) end() error {
	if _, err := o.next(nil, nil, nil); err != nil {
		return err
	}
	if err := o.tw.Close(); err != nil {
		return fmt.Errorf("writing the weights tarball: %w", err)
	}
	return nil
}

// rewriteTar is RewriteTar writing to sink.
func rewriteTar(r io.Reader, p TarPolicy, sink entrySink) (TarStats, error) {
	rw := newRewriter(p)
	src := &trailerReader{r: r}
	tr := tar.NewReader(src)
	var stats TarStats
	parents := make([]*tar.Header, len(rw.parents))
	for i, dir := range rw.parents {
		parents[i] = rw.dirHeader(dir + "/")
	}

	var (
		last    string
		readErr error
		buf     []byte
	)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			if src.n > 0 && !src.endsWithZeroBlock() {
				readErr = fmt.Errorf("%w: it ends after entry %s without the end-of-archive marker; upload the complete file again", ErrTruncatedTar, quoteEntry(last))
			} else {
				readErr = drainTrailer(src)
			}
			break
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			readErr = tarReadError(err, src, afterEntry(last))
			break
		}
		if hdr.Typeflag != tar.TypeXGlobalHeader {
			last = hdr.Name
		}
		out, stop := rw.admit(hdr)
		if stop {
			break
		}
		if out == nil {
			continue
		}
		tw, err := sink.next(hdr, out, parents)
		if err != nil {
			return stats, err
		}
		if err := tw.WriteHeader(out); err != nil {
			return stats, fmt.Errorf("writing entry %s to the weights tarball: %w", quoteEntry(hdr.Name), err)
		}
		stats.Entries++
		if out.Typeflag != tar.TypeReg {
			continue
		}
		if int64(len(buf)) < min(out.Size, copyBufferSize) {
			// Sized to the files seen, so small tarballs stay cheap.
			buf = make([]byte, min(max(out.Size, 32<<10), copyBufferSize))
		}
		if err := copyBody(tw, tr, out.Size, buf); err != nil {
			if errors.Is(err, errBodyWrite) {
				return stats, fmt.Errorf("writing entry %s to the weights tarball: %w", quoteEntry(hdr.Name), err)
			}
			readErr = tarReadError(err, src, "inside entry "+quoteEntry(hdr.Name))
			break
		}
		stats.Files++
		stats.Bytes += out.Size
	}

	policyErr := rw.finish()
	switch {
	case policyErr != nil && readErr != nil:
		return stats, errors.Join(policyErr, readErr)
	case policyErr != nil:
		return stats, policyErr
	case readErr != nil:
		return stats, readErr
	case rw.own == 0:
		return stats, ErrEmptyTar
	}
	return stats, sink.end()
}

// admit applies the policy to the next input entry, in the order the
// layers will be unpacked. It returns the header to write, or nil for an
// entry to leave out (refused, PAX global metadata, the target or one of
// its parents, or any entry once one was refused: violations are still
// collected), and stop when a limit was crossed and reading on is
// pointless.
func (rw *rewriter) admit(hdr *tar.Header) (out *tar.Header, stop bool) {
	rw.count++
	if rw.count > rw.maxEntries {
		rw.refuse(hdr.Name, Violation{Kind: ViolationTooManyEntries, Reason: fmt.Sprintf("the tarball has more than %d entries (the limit); pack the weights into fewer files", rw.maxEntries)})
		return nil, true
	}
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil, false // PAX global metadata (git archive writes one), not a file
	}
	out, v := rw.check(hdr)
	if v.Reason != "" {
		rw.refuse(hdr.Name, v)
		return nil, false
	}
	if out == nil {
		return nil, false // the target or one of its parents
	}
	rw.own++
	if out.Typeflag == tar.TypeReg {
		rw.declared += out.Size
		if rw.declared > rw.maxBytes {
			rw.refuse(hdr.Name, Violation{Kind: ViolationTooLarge, Reason: fmt.Sprintf("the files add up to more than %d bytes (the limit)", rw.maxBytes)})
			return nil, true
		}
	}
	if rw.failed() {
		return nil, false // stop writing, keep collecting violations
	}
	return out, false
}

func (rw *rewriter) failed() bool { return len(rw.violations) > 0 || rw.more > 0 }

// finish resolves every symlink again now that all entries are known, and
// returns the *PolicyError naming every refused entry, if any.
func (rw *rewriter) finish() error {
	rw.verifyLinks()
	if rw.failed() {
		return &PolicyError{Target: rw.target, Violations: rw.violations, More: rw.more}
	}
	return nil
}

// drainTrailer reads what follows the end-of-archive marker: zero padding
// (tar writes whole records) and, for a compressed input, the end of the
// stream, whose checksum the decoder verifies only when it gets there. Data
// after the marker would be ignored by tar.Reader, and most likely is a
// second tarball appended to the first, so it is refused.
func drainTrailer(src *trailerReader) error {
	buf := make([]byte, 16<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && trailingZeros(buf[:n]) != n {
			return fmt.Errorf("%w: it has data after its end-of-archive marker (two tarballs concatenated?); create a single tarball of all the files", ErrCorruptTar)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return tarReadError(err, src, "after its end-of-archive marker")
		}
	}
}

var errBodyWrite = errors.New("writing the entry's content")

// copyBody copies exactly size bytes of the current entry; reading errors
// come back as is, writing errors wrap errBodyWrite.
func copyBody(tw *tar.Writer, tr *tar.Reader, size int64, buf []byte) error {
	for size > 0 {
		n, err := tr.Read(buf[:min(int64(len(buf)), size)])
		if n > 0 {
			if _, werr := tw.Write(buf[:n]); werr != nil {
				return fmt.Errorf("%w: %w", errBodyWrite, werr)
			}
			size -= int64(n)
		}
		if err == io.EOF {
			if size > 0 {
				return io.ErrUnexpectedEOF
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// afterEntry says where a header failed to read.
func afterEntry(last string) string {
	if last == "" {
		return "at its first entry"
	}
	return "after entry " + quoteEntry(last)
}

// tarReadError classifies an error out of tar.Reader; where says where in
// the tarball it happened.
func tarReadError(err error, src *trailerReader, where string) error {
	switch {
	case errors.Is(err, ErrTruncatedTar), errors.Is(err, ErrCorruptTar):
		return err // classified by OpenTarStream's decoder
	case src.err != nil && src.err != io.EOF && errors.Is(err, src.err):
		return fmt.Errorf("reading the weights tarball: %w", err) // the source's own failure
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: it ends early, %s; upload the complete file again", ErrTruncatedTar, where)
	case strings.HasPrefix(err.Error(), "archive/tar:"):
		return fmt.Errorf("%w: it has invalid tar data %s (%v); recreate the tarball", ErrCorruptTar, where, err)
	default:
		return fmt.Errorf("reading the weights tarball: %w", err)
	}
}

func quoteEntry(name string) string { return strconv.Quote(name) }

// trailerReader counts the bytes read and the run of zero bytes that ends
// them, to tell a complete tar (ending in zero blocks) from one cut at a
// block boundary, which tar.Reader takes for a normal end. It also keeps the
// source's error.
type trailerReader struct {
	r     io.Reader
	n     int64
	zeros int64
	err   error
}

func (t *trailerReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.n += int64(n)
		if z := trailingZeros(p[:n]); z == n {
			t.zeros += int64(n)
		} else {
			t.zeros = int64(z)
		}
	}
	if err != nil {
		t.err = err
	}
	return n, err
}

func (t *trailerReader) endsWithZeroBlock() bool { return t.zeros >= tarBlockSize }

func trailingZeros(b []byte) int {
	var zero [tarBlockSize]byte
	end := len(b)
	for end >= tarBlockSize && string(b[end-tarBlockSize:end]) == string(zero[:]) {
		end -= tarBlockSize
	}
	for end > 0 && b[end-1] == 0 {
		end--
	}
	return len(b) - end
}

type layout int

const (
	undecided layout = iota
	prefixed         // entries carry the target's path: keep them
	relative         // entries are relative to the target: put them under it
)

type pathKey [16]byte

func keyOf(p string) pathKey {
	sum := sha256.Sum256([]byte(p))
	return pathKey(sum[:16])
}

// rewriter holds the state of one RewriteTar pass. Paths are kept relative
// to the image root, cleaned, without a leading slash ("." is the root).
type rewriter struct {
	target        string // "/src/weights"
	rel           string // "src/weights", "" when the target is the root
	parents       []string
	allowOutside  bool
	modTime       time.Time
	maxEntries    int
	maxNameLength int
	maxBytes      int64

	layout layout
	first  string // the entry that decided a relative layout, for messages
	// links holds the paths, kinds and symlinks written so far, by earlier
	// layers of the publish and by this tarball.
	links *LinkSet

	violations []Violation
	more       int
	// Counts over the entries admitted so far.
	count, own int
	declared   int64 // regular file bytes, as headers declare them
}

func newRewriter(p TarPolicy) *rewriter {
	target := p.Target
	if target == "" {
		target = DefaultTarget
	}
	target = path.Clean("/" + target)
	rw := &rewriter{
		target:        target,
		rel:           strings.TrimPrefix(target, "/"),
		allowOutside:  p.AllowOutsideTarget,
		modTime:       p.ModTime,
		maxEntries:    p.MaxEntries,
		maxNameLength: p.MaxNameLength,
		maxBytes:      p.MaxBytes,
		links:         p.Links,
	}
	if rw.links == nil {
		rw.links = NewLinkSet()
	}
	rw.links.startTarball()
	if rw.modTime.IsZero() {
		rw.modTime = time.Unix(0, 0)
	}
	if rw.maxEntries <= 0 {
		rw.maxEntries = defaultMaxEntries
	}
	if rw.maxBytes <= 0 {
		rw.maxBytes = defaultMaxBytes
	}
	if rw.maxNameLength <= 0 {
		rw.maxNameLength = defaultMaxNameLength
	}
	if rw.rel != "" {
		for i, c := range rw.rel {
			if c == '/' {
				rw.parents = append(rw.parents, rw.rel[:i])
			}
		}
		rw.parents = append(rw.parents, rw.rel)
	}
	return rw
}

func (rw *rewriter) refuse(entry string, v Violation) {
	if len(rw.violations) < maxKeptViolations {
		v.Entry = entry
		rw.violations = append(rw.violations, v)
	} else {
		rw.more++
	}
}

func (rw *rewriter) dirHeader(name string) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: rw.modTime}
}

// inTarget reports whether p (relative to the root) is the target or below it.
func (rw *rewriter) inTarget(p string) bool {
	if escapes(p) {
		return false
	}
	return rw.rel == "" || p == rw.rel || strings.HasPrefix(p, rw.rel+"/")
}

// isTargetDir reports whether p is the root, the target or one of its parents.
func (rw *rewriter) isTargetDir(p string) bool {
	if p == "." {
		return true
	}
	for _, d := range rw.parents {
		if p == d {
			return true
		}
	}
	return false
}

func escapes(p string) bool { return p == ".." || strings.HasPrefix(p, "../") }

// climbsOut reports whether name climbs out of its first directory with
// "..": "a/b/../c" stays in a, "a/../b" and "../b" do not. Such a name
// cannot be placed without guessing what its author meant, so it is
// refused rather than cleaned into another place.
func climbsOut(name string) bool {
	depth := 0
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "", ".":
		case "..":
			if depth--; depth < 1 {
				return true
			}
		default:
			depth++
		}
	}
	return false
}

const climbReason = "climbs out of its first directory through \"..\"; r8im refuses such names instead of moving the entry elsewhere: remove the \"..\" components"

func hasDotDot(name string) bool {
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return true
		}
	}
	return false
}

// check applies the policy to one input entry. It returns the header to
// write, or nil for an entry to drop (the target or one of its parents), or
// the reason the entry is refused.
func (rw *rewriter) check(h *tar.Header) (*tar.Header, Violation) {
	name := h.Name
	if name == "" {
		return nil, entryFault("the entry has an empty name; recreate the tarball")
	}
	if len(name) > rw.maxNameLength {
		return nil, Violation{Kind: ViolationNameTooLong, Reason: fmt.Sprintf("its name is %d bytes long, over the limit of %d; shorten it", len(name), rw.maxNameLength)}
	}
	isLink := h.Typeflag == tar.TypeSymlink || h.Typeflag == tar.TypeLink
	if isLink && len(h.Linkname) > rw.maxNameLength {
		return nil, Violation{Kind: ViolationNameTooLong, Reason: fmt.Sprintf("its link target is %d bytes long, over the limit of %d; shorten it", len(h.Linkname), rw.maxNameLength)}
	}
	if strings.IndexByte(name, 0) >= 0 || isLink && strings.IndexByte(h.Linkname, 0) >= 0 {
		return nil, entryFault("its name or link target contains a NUL byte; recreate the tarball")
	}
	typ := h.Typeflag
	if typ == '\x00' { // the deprecated TypeRegA: tar.Reader converts these already; be safe
		typ = tar.TypeReg
		if strings.HasSuffix(name, "/") {
			typ = tar.TypeDir
		}
	}
	if reason := typeReason(typ); reason != "" {
		return nil, entryFault(reason)
	}
	for k := range h.PAXRecords {
		// tar.Reader expands PAX sparse files, so a few bytes could make a
		// terabyte of zeros: refuse them like the old GNU sparse type.
		if strings.HasPrefix(k, "GNU.sparse.") {
			return nil, entryFault("it is a sparse file (GNU.sparse PAX records); " + onlyFiles + ": recreate the tarball without tar's --sparse")
		}
	}
	for _, c := range strings.Split(name, "/") {
		if strings.HasPrefix(c, ".wh.") {
			return nil, entryFault("it is a whiteout (an overlay deletion marker, named .wh.*); a weights layer must not delete files of the base image: rename or remove it")
		}
	}

	if climbsOut(name) {
		return nil, entryFault("its path " + climbReason)
	}

	abs := strings.HasPrefix(name, "/")
	clean := path.Clean(strings.TrimLeft(name, "/"))
	isDir := typ == tar.TypeDir
	if isDir && !escapes(clean) && rw.isTargetDir(clean) {
		return nil, Violation{} // the target or a parent: RewriteTar writes those itself
	}
	if rw.layout == undecided {
		// The first entry decides, with or without AllowOutsideTarget: taking
		// every name as an image path whenever the flag is given would put a
		// relative tarball's files at the image root, silently.
		rw.layout, rw.first = relative, name
		if !escapes(clean) && rw.inTarget(clean) {
			rw.layout = prefixed
		}
	}

	final, v := rw.place(name, abs, clean)
	if v.Reason != "" {
		return nil, v
	}
	if rw.isTargetDir(final) {
		if isDir {
			return nil, Violation{} // e.g. "src/" of a relative tarball, with AllowOutsideTarget
		}
		return nil, entryFault(fmt.Sprintf("it would replace the directory /%s with a %s; the target %s and its parents must stay directories", strings.TrimPrefix(final, "."), typeName(typ), rw.target))
	}
	// The name as given, not cleaned: "s/../x" goes through s.
	if via := rw.links.firstLink(rw.raw(name, abs)); via != "" {
		where := ""
		if len(rw.violations) < maxListedViolations { // where it lands, for the messages shown only
			where = ", " + landing(rw.links.resolve(".", rw.raw(name, abs), false))
		}
		return nil, entryFault(fmt.Sprintf("its path goes through /%s, a symlink earlier in the weights%s; r8im does not write through symlinks: store the files at their real path",
			via, where))
	}
	if l := rw.links.symlink(final); l != nil {
		return nil, entryFault(fmt.Sprintf("an earlier entry (%s) made /%s a symlink, and r8im does not write over symlinks (unpackers differ: some write through them); keep one of the two entries",
			displayName(l.entry), final))
	}

	if reason := rw.replaces(final, typ); reason != "" {
		return nil, entryFault(reason)
	}

	out := &tar.Header{
		Typeflag: typ,
		Name:     final,
		Mode:     h.Mode & 0o777,
		ModTime:  rw.modTime,
	}
	switch typ {
	case tar.TypeDir:
		out.Name += "/"
	case tar.TypeReg:
		out.Size = h.Size
	case tar.TypeSymlink:
		out.Linkname = h.Linkname
		if v := rw.addSymlink(final, name, h.Linkname, "it is a symlink"); v.Reason != "" {
			return nil, v
		}
		return out, Violation{}
	case tar.TypeLink:
		linkFinal, symlink, v := rw.checkHardlink(final, h.Linkname)
		if v.Reason != "" {
			rw.links.add(final, typ, "", "")
			return nil, v
		}
		out.Linkname = linkFinal
		if symlink != nil {
			// A hard link to a symlink is a second symlink with the same
			// target (link(2) does not follow it), resolved from here.
			what := fmt.Sprintf("it is a hard link to the symlink /%s, so a symlink", linkFinal)
			if v := rw.addSymlink(final, name, symlink.link, what); v.Reason != "" {
				return nil, v
			}
			return out, Violation{}
		}
	}
	rw.links.add(final, typ, "", "")
	return out, Violation{}
}

// landing says where a path through a symlink would land.
func landing(res resolution) string {
	switch {
	case res.budget:
		return fmt.Sprintf("and r8im did not resolve it (more than %d steps)", maxResolveSteps)
	case res.loop:
		return fmt.Sprintf("and goes through more than %d symlinks", maxSymlinks)
	case res.escapes:
		return "and climbs above the image root"
	}
	return "so it would be written at /" + strings.TrimPrefix(res.path, ".")
}

// raw is an entry name or hard link target placed by the layout but not
// cleaned, without trailing slashes, for resolving as the kernel would.
func (rw *rewriter) raw(name string, abs bool) string {
	name = strings.TrimRight(strings.TrimLeft(name, "/"), "/")
	if !abs && rw.layout == relative && rw.rel != "" {
		return rw.rel + "/" + name
	}
	return name
}

// addSymlink records a symlink at final and checks where it leads; what
// starts the reason ("it is a symlink").
func (rw *rewriter) addSymlink(final, entry, link, what string) Violation {
	if !rw.links.add(final, tar.TypeSymlink, entry, link) {
		return entryFault(fmt.Sprintf("the weights hold more than %d MiB of symlinks (paths and targets), which r8im keeps to resolve links; use fewer symlinks", maxLinkBytes>>20))
	}
	l := rw.links.symlink(final)
	if link == "" {
		l.refused = true
		return entryFault("it is a symlink with an empty target; remove it or point it at a file")
	}
	res := rw.links.resolve(".", final, true) // the link itself counts, as in the kernel
	if v := rw.linkVerdict(final, link, res, what); v.Reason != "" {
		l.refused = true
		return v
	}
	return Violation{}
}

// place maps an entry name to its path in the image, following the layout.
func (rw *rewriter) place(name string, abs bool, clean string) (string, Violation) {
	outside := outsideTarget(fmt.Sprintf("it is outside the target %s", rw.target))
	if abs {
		if escapes(clean) {
			return "", entryFault("its path leaves the image root through \"..\"; remove the \"..\" components")
		}
		if !rw.inTarget(clean) && !rw.isTargetDir(clean) && !rw.allowOutside {
			return "", outsideTarget(fmt.Sprintf("it is an absolute path outside the target %s", rw.target))
		}
		return clean, Violation{}
	}
	final := clean
	if rw.layout == relative {
		if rw.rel != "" && (clean == rw.rel || strings.HasPrefix(clean, rw.rel+"/")) {
			return "", outsideTarget(fmt.Sprintf("it is under %s but the tarball's first entry %q is not, so the tarball mixes layouts: make every entry relative to %s, or start every entry with %s/; to keep %q outside the target, allow entries outside it and put an entry under %s/ first in the tarball (tar the %s directory first)",
				rw.target, rw.first, rw.target, rw.rel, rw.first, rw.rel, rw.rel))
		}
		final = path.Clean(rw.rel + "/" + clean)
		if rw.rel == "" {
			final = clean
		}
	}
	if escapes(final) {
		return "", entryFault("its path leaves the image root through \"..\"; remove the \"..\" components")
	}
	if !rw.inTarget(final) && !rw.isTargetDir(final) && !rw.allowOutside {
		if hasDotDot(name) {
			return "", entryFault(fmt.Sprintf("its path leaves the target %s through \"..\"; remove the \"..\" components", rw.target))
		}
		return "", outside
	}
	return final, Violation{}
}

// checkHardlink maps a hard link's target with the same layout rules as
// names, resolves its directories through the links seen so far (link(2)
// follows those, not the last component) and requires an earlier entry
// that is not a directory. It returns the path to write as the link's
// target, and the symlink there when the target is one.
func (rw *rewriter) checkHardlink(final, link string) (string, *linkEntry, Violation) {
	if link == "" {
		return "", nil, entryFault("it is a hard link with an empty target; remove it or recreate the tarball")
	}
	if climbsOut(link) {
		return "", nil, entryFault(fmt.Sprintf("it is a hard link to %s, whose path %s", quoteEntry(link), climbReason))
	}
	clean := path.Clean(strings.TrimLeft(link, "/"))
	to := clean
	if !strings.HasPrefix(link, "/") && rw.layout == relative && rw.rel != "" {
		to = path.Clean(rw.rel + "/" + clean)
	}
	if escapes(clean) || escapes(to) {
		return "", nil, entryFault(fmt.Sprintf("it is a hard link to %s, which leaves the image root through \"..\"", quoteEntry(link)))
	}
	if !rw.inTarget(to) && !rw.allowOutside {
		return "", nil, outsideTarget(fmt.Sprintf("it is a hard link to %s, outside the target %s; link only to files inside %s", quoteEntry(link), rw.target, rw.target))
	}
	res := rw.links.resolve(".", rw.raw(link, strings.HasPrefix(link, "/")), false)
	switch {
	case res.escapes || res.loop || res.budget:
		return "", nil, entryFault(fmt.Sprintf("it is a hard link to %s, whose path goes through the symlink /%s %s", quoteEntry(link), res.via, landing(res)))
	case !rw.inTarget(res.path) && !rw.allowOutside:
		return "", nil, outsideTarget(fmt.Sprintf("it is a hard link to %s, which resolves to %s outside the target %s; link only to files inside %s", quoteEntry(link), res.where(""), rw.target, rw.target))
	}
	if res.path == final || strings.HasPrefix(res.path, final+"/") || strings.HasPrefix(final, res.path+"/") {
		return "", nil, entryFault(fmt.Sprintf("it is a hard link to %s, which is the link itself, beneath it or one of its directories; link to another file", quoteEntry(link)))
	}
	if l := rw.links.symlink(res.path); l != nil {
		return res.path, l, Violation{}
	}
	kind, ok := rw.links.kind(res.path)
	switch {
	case !ok:
		return "", nil, entryFault(fmt.Sprintf("it is a hard link to %s (/%s), which is not an earlier entry of the tarball or of an earlier weights layer; put the file before its links", quoteEntry(link), res.path))
	case kind == tar.TypeDir:
		return "", nil, entryFault(fmt.Sprintf("it is a hard link to the directory %s; hard links must point at files", quoteEntry(link)))
	}
	return res.path, nil, Violation{}
}

// typeReason refuses every entry type but directories, regular files,
// symlinks and hard links.
const onlyFiles = "a weights layer may hold only files, directories and links"

func typeReason(typ byte) string {
	const only = onlyFiles
	switch typ {
	case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
		return ""
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return "it is a " + typeName(typ) + "; " + only + ": remove it"
	case tar.TypeGNUSparse:
		return "it is a GNU sparse file; " + only + ": recreate the tarball without tar's --sparse"
	}
	return fmt.Sprintf("it has the unsupported entry type %q (%s); %s: recreate the tarball with plain files", string(rune(typ)), typeName(typ), only)
}

func typeName(typ byte) string {
	switch typ {
	case tar.TypeReg:
		return "regular file"
	case tar.TypeDir:
		return "directory"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hard link"
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "fifo (named pipe)"
	case tar.TypeCont:
		return "contiguous file"
	case tar.TypeGNUSparse:
		return "GNU sparse file"
	case 'D':
		return "GNU dump directory"
	case 'M':
		return "GNU multi-volume continuation"
	case 'V':
		return "GNU volume header"
	}
	return "unknown type"
}

// replaces refuses an entry that would change what an earlier entry made of
// a path: a file (or link) under an earlier file, a directory (written, or
// made by an entry beneath it) replaced by a file, or a file replaced by a
// directory. Unpackers differ on these (some replace, some fail), so the
// image would depend on the one that unpacks it.
func (rw *rewriter) replaces(final string, typ byte) string {
	for i := strings.IndexByte(final, '/'); i > 0; i = next(final, i) {
		if kind, ok := rw.links.kind(final[:i]); ok && kind != tar.TypeDir {
			return fmt.Sprintf("an earlier entry made /%s a %s, so nothing can go beneath it; keep one of the two", final[:i], typeName(kind))
		}
	}
	kind, ok := rw.links.kind(final)
	switch {
	case !ok || kind == typ && typ == tar.TypeDir:
		return ""
	case kind == tar.TypeDir && typ != tar.TypeDir:
		return fmt.Sprintf("it would replace the directory /%s (made by earlier entries) with a %s; keep one of the two", final, typeName(typ))
	case kind != tar.TypeDir && typ == tar.TypeDir:
		return fmt.Sprintf("it would replace the %s /%s (an earlier entry) with a directory; keep one of the two", typeName(kind), final)
	}
	return ""
}

// next is the index of the '/' after i in p, or -1.
func next(p string, i int) int {
	j := strings.IndexByte(p[i+1:], '/')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}
