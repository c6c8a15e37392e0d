package imageops

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/r8im/r8im/internal/retry"
)

// Compression names how a tar stream or a layer is compressed: it is
// go-containerregistry's compression.Compression, so its values pass to
// and from that library as they are.
type Compression = compression.Compression

// The compressions r8im reads and writes.
const (
	Gzip         = compression.GZip
	Zstd         = compression.ZStd
	Uncompressed = compression.None
	// Auto is Affix's default for weights layers: a file's own layer
	// uncompressed, a bundle gzip (see Layout). go-containerregistry has no
	// such value.
	Auto Compression = "auto"
)

// Errors about the weights input as a whole. Each is wrapped with details
// (the first bytes seen, the compression, the entry), so match them with
// errors.Is. All of them are permanent: retrying with the same input fails
// the same way.
var (
	ErrEmptyInput = retry.New("the weights input is empty: give a .tar, .tar.gz or .tar.zst file")
	ErrNotTar     = retry.New("the weights input is not a tar archive")
	// ErrTruncatedTar means the input ended early: inside a tar entry, before
	// the end-of-archive marker, or inside a compressed stream. It does not
	// wrap io.ErrUnexpectedEOF on purpose: that one means a transient read
	// failure to callers that decide on retries.
	ErrTruncatedTar = retry.New("the weights tarball is truncated")
	// ErrCorruptTar means the bytes are not a valid tar (or gzip/zstd) stream
	// past its beginning.
	ErrCorruptTar = retry.New("the weights tarball is corrupt")
)

const (
	inputBufferSize = 1 << 20
	tarBlockSize    = 512
	// zstdMaxWindow bounds the zstd decoder's memory: frames asking for a
	// larger window are refused instead of allocating it.
	zstdMaxWindow = 1 << 27
)

// ParseCompression parses a compression name: "gzip" (or "gz"), "zstd" (or
// "zst") and "none" (or "uncompressed", "tar"), in any case.
func ParseCompression(s string) (Compression, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "gzip", "gz":
		return Gzip, nil
	case "zstd", "zst":
		return Zstd, nil
	case "none", "uncompressed", "tar":
		return Uncompressed, nil
	case "auto":
		return Auto, nil
	}
	return "", fmt.Errorf("unknown compression %q: use auto, gzip, zstd or none", s)
}

// OpenTarStream detects how r is compressed from its magic bytes (gzip, zstd,
// or a plain tar) and returns a reader of the uncompressed tar together with
// the compression found. It reads r once, through a 1 MiB buffer, and checks
// that the (decompressed) stream starts with a tar header, so a zip, a bare
// file or a compressed non-tar is refused with ErrNotTar before any work.
//
// Close releases the decoder; it does not close r.
func OpenTarStream(r io.Reader) (io.ReadCloser, Compression, error) {
	br := bufio.NewReaderSize(r, inputBufferSize)
	head, err := br.Peek(tarBlockSize)
	if err != nil && err != io.EOF {
		return nil, "", fmt.Errorf("reading the weights input: %w", err)
	}
	if len(head) == 0 {
		return nil, "", ErrEmptyInput
	}

	var c Compression
	switch {
	case bytes.HasPrefix(head, magicGzip):
		c = Gzip
	case bytes.HasPrefix(head, magicZstd):
		c = Zstd
	default:
		if len(head) < tarBlockSize || !isTarHeader(head) {
			return nil, "", notTarError(Uncompressed, head)
		}
		return io.NopCloser(br), Uncompressed, nil
	}

	src := &sourceReader{r: br}
	var dec io.Reader
	var closeDec func()
	switch c {
	case Gzip:
		zr, err := gzip.NewReader(src)
		if err != nil {
			return nil, "", decodeError(c, src, err)
		}
		dec, closeDec = zr, func() { _ = zr.Close() }
	case Zstd:
		zr, err := zstd.NewReader(src,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			return nil, "", fmt.Errorf("starting the zstd decoder: %w", err)
		}
		dec, closeDec = zr, zr.Close
	}
	d := &decodedReader{c: c, dec: dec, src: src, close: closeDec}

	inner := make([]byte, tarBlockSize)
	n, err := io.ReadFull(d, inner)
	switch {
	case err == io.EOF:
		d.Close()
		return nil, "", fmt.Errorf("%w (the %s stream decompresses to nothing)", ErrEmptyInput, c)
	case err == io.ErrUnexpectedEOF: // the stream ended cleanly, but shorter than a tar header
		d.Close()
		return nil, "", notTarError(c, inner[:n])
	case err != nil:
		d.Close()
		return nil, "", err
	}
	if !isTarHeader(inner) {
		d.Close()
		return nil, "", notTarError(c, inner)
	}
	return &tarStream{Reader: io.MultiReader(bytes.NewReader(inner), d), d: d}, c, nil
}

var (
	magicGzip  = []byte{0x1f, 0x8b}
	magicZstd  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicUstar = []byte("ustar")
)

// isTarHeader reports whether b (a 512-byte block) is a tar header: it has
// the ustar magic, or a valid header checksum (old v7 tars), or it is the
// all-zero end-of-archive block of an empty tar.
func isTarHeader(b []byte) bool {
	if len(b) < tarBlockSize {
		return false
	}
	b = b[:tarBlockSize]
	if bytes.Equal(b[257:262], magicUstar) {
		return true
	}
	if allZero(b) {
		return true
	}
	field := strings.Trim(string(b[148:156]), " \x00")
	if field == "" {
		return false
	}
	want, err := strconv.ParseUint(field, 8, 32)
	if err != nil {
		return false
	}
	// The checksum is the sum of the header bytes with the checksum field
	// taken as spaces; some old tars summed signed bytes.
	var unsigned, signed int64
	for i, c := range b {
		if i >= 148 && i < 156 {
			c = ' '
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	return int64(want) == unsigned || int64(want) == signed
}

func allZero(b []byte) bool {
	var zero [tarBlockSize]byte
	for len(b) > 0 {
		n := min(len(b), len(zero))
		if !bytes.Equal(b[:n], zero[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// notTarError explains what the bytes look like instead of a tar.
func notTarError(c Compression, b []byte) error {
	first := b[:min(len(b), 16)]
	hint := "give a .tar, .tar.gz or .tar.zst"
	switch {
	case bytes.HasPrefix(b, []byte("PK\x03\x04")), bytes.HasPrefix(b, []byte("PK\x05\x06")):
		hint = "it looks like a zip archive; r8im needs a tar: unzip it and give a .tar, .tar.gz or .tar.zst of the files"
	case bytes.HasPrefix(b, []byte("BZh")):
		hint = "it looks like bzip2 data; r8im reads gzip and zstd: recompress it (bunzip2 -c in.tar.bz2 | zstd -o weights.tar.zst)"
	case bytes.HasPrefix(b, []byte("\xfd7zXZ\x00")):
		hint = "it looks like xz data; r8im reads gzip and zstd: recompress it (xz -dc in.tar.xz | zstd -o weights.tar.zst)"
	case bytes.HasPrefix(b, []byte("7z\xbc\xaf\x27\x1c")):
		hint = "it looks like a 7-Zip archive; r8im needs a tar: give a .tar, .tar.gz or .tar.zst of the files"
	case c != Uncompressed && (bytes.HasPrefix(b, magicGzip) || bytes.HasPrefix(b, magicZstd)):
		hint = "it is compressed twice: decompress it once and give a .tar, .tar.gz or .tar.zst"
	case len(b) < tarBlockSize:
		hint = fmt.Sprintf("it is only %d bytes long, shorter than one tar header; give a .tar, .tar.gz or .tar.zst", len(b))
	}
	if c == Uncompressed {
		return fmt.Errorf("%w (first bytes %x): %s", ErrNotTar, first, hint)
	}
	return fmt.Errorf("%w (%s-compressed, first decompressed bytes %x): %s", ErrNotTar, c, first, hint)
}

// sourceReader remembers the last error of the compressed source, so that a
// decoder error can be told apart from a read error it passed along.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil {
		s.err = err
	}
	return n, err
}

// decodeError classifies an error out of a decoder: the source's own errors
// pass through unchanged (they may be transient); a stream that ends early
// after a clean end of the source is ErrTruncatedTar; anything else is bad
// compressed data, ErrCorruptTar.
func decodeError(c Compression, src *sourceReader, err error) error {
	switch {
	case err == nil || err == io.EOF:
		return err
	case src.err != nil && src.err != io.EOF && errors.Is(err, src.err):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return fmt.Errorf("%w: the %s stream ends early; upload the complete file again", ErrTruncatedTar, c)
	default:
		return fmt.Errorf("%w: invalid %s data (%v); recreate the file", ErrCorruptTar, c, err)
	}
}

// decodedReader is a decoder whose errors are classified by decodeError.
type decodedReader struct {
	c     Compression
	dec   io.Reader
	src   *sourceReader
	close func()
	err   error
}

func (d *decodedReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n, err := d.dec.Read(p)
	if err != nil {
		err = decodeError(d.c, d.src, err)
		d.err = err
	}
	return n, err
}

func (d *decodedReader) Close() {
	if d.close != nil {
		d.close()
		d.close = nil
	}
	if d.err == nil {
		d.err = errors.New("reading a closed weights stream")
	}
}

type tarStream struct {
	io.Reader
	d *decodedReader
}

func (t *tarStream) Close() error {
	t.d.Close()
	return nil
}
