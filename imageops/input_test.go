package imageops_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

func gzipBytes(tb testing.TB, b []byte) []byte {
	tb.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	if _, err := zw.Write(b); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return out.Bytes()
}

func zstdBytes(tb testing.TB, b []byte) []byte {
	tb.Helper()
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer zw.Close()
	return zw.EncodeAll(b, nil)
}

// randomBytes are incompressible, like weights.
func randomBytes(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// v7Tar is a tarball in the pre-POSIX format: no "ustar" magic, only a
// header checksum.
func v7Tar(tb testing.TB) []byte {
	tb.Helper()
	out := testenv.Tar(tb, testenv.Entry{Name: "model.bin", Body: "hello", Format: tar.FormatUSTAR})
	clear(out[257:512]) // magic, version, owner names, device numbers, prefix
	var sum int64
	for i, c := range out[:512] {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += int64(c)
	}
	copy(out[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return out
}

func TestOpenTarStream(t *testing.T) {
	big := makeTar(t, tarReg("src/weights/model.bin", string(randomBytes(3<<20))), tarReg("src/weights/b.txt", strings.Repeat("b", 100_000)))
	small := makeTar(t, tarReg("model.bin", "weights"))
	tests := []struct {
		name  string
		input []byte
		want  []byte
		c     imageops.Compression
	}{
		{"tar", big, big, imageops.Uncompressed},
		{"small tar", small, small, imageops.Uncompressed},
		{"v7 tar", v7Tar(t), v7Tar(t), imageops.Uncompressed},
		{"empty tar", makeTar(t), makeTar(t), imageops.Uncompressed},
		{"tar.gz", gzipBytes(t, big), big, imageops.Gzip},
		{"small tar.gz", gzipBytes(t, small), small, imageops.Gzip},
		{"tar.zst", zstdBytes(t, big), big, imageops.Zstd},
		{"small tar.zst", zstdBytes(t, small), small, imageops.Zstd},
		{"multi-member gzip", append(gzipBytes(t, big[:1<<20]), gzipBytes(t, big[1<<20:])...), big, imageops.Gzip},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc, c, err := imageops.OpenTarStream(bytes.NewReader(tc.input))
			if err != nil {
				t.Fatalf("OpenTarStream: %v", err)
			}
			if c != tc.c {
				t.Errorf("compression = %q, want %q", c, tc.c)
			}
			got, err := io.ReadAll(rc)
			if err != nil {
				t.Fatalf("reading: %v", err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("read %d bytes that differ from the %d-byte tar", len(got), len(tc.want))
			}
			if err := rc.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
}

func TestOpenTarStreamThenRewrite(t *testing.T) {
	in := makeTar(t, tarReg("model.bin", "weights"), tarReg("v7.bin", "x"))
	for _, input := range [][]byte{in, gzipBytes(t, in), zstdBytes(t, in), v7Tar(t)} {
		rc, c, err := imageops.OpenTarStream(bytes.NewReader(input))
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		stats, err := imageops.RewriteTar(&out, rc, imageops.TarPolicy{})
		rc.Close()
		if err != nil || stats.Files == 0 {
			t.Errorf("%s: RewriteTar = %+v, %v", c, stats, err)
		}
	}
}

func TestOpenTarStreamRefuses(t *testing.T) {
	tarball := makeTar(t, tarReg("src/weights/model.bin", string(randomBytes(1<<20))))
	zipFile := append([]byte("PK\x03\x04\x14\x00\x00\x00\x08\x00"), randomBytes(600)...)
	tests := []struct {
		name  string
		input []byte
		is    error
		msg   string
	}{
		{"empty", nil, imageops.ErrEmptyInput, "the weights input is empty: give a .tar, .tar.gz or .tar.zst file"},
		{"zip", zipFile, imageops.ErrNotTar, "looks like a zip archive; r8im needs a tar"},
		{"bzip2", []byte("BZh91AY&SY" + strings.Repeat("x", 600)), imageops.ErrNotTar, "bzip2"},
		{"xz", append([]byte("\xfd7zXZ\x00\x00"), randomBytes(600)...), imageops.ErrNotTar, "xz"},
		{"random bytes", randomBytes(4096), imageops.ErrNotTar, "(first bytes " + fmt.Sprintf("%x", randomBytes(16)) + "): give a .tar, .tar.gz or .tar.zst"},
		{"short text", []byte("hello\n"), imageops.ErrNotTar, "only 6 bytes long"},
		{"a bare safetensors file", append([]byte("\x40\x00\x00\x00\x00\x00\x00\x00{\"__metadata__\":{}}"), randomBytes(2000)...), imageops.ErrNotTar, "not a tar archive"},
		{"gzip of a non-tar", gzipBytes(t, randomBytes(5000)), imageops.ErrNotTar, "gzip-compressed, first decompressed bytes"},
		{"gzip of a zip", gzipBytes(t, zipFile), imageops.ErrNotTar, "zip archive"},
		{"zstd of a non-tar", zstdBytes(t, []byte(strings.Repeat("text ", 1000))), imageops.ErrNotTar, "zstd-compressed"},
		{"gzip twice", gzipBytes(t, gzipBytes(t, tarball)), imageops.ErrNotTar, "compressed twice"},
		{"gzip of nothing", gzipBytes(t, nil), imageops.ErrEmptyInput, "gzip stream decompresses to nothing"},
		{"zstd of nothing", zstdBytes(t, nil), imageops.ErrEmptyInput, "zstd stream decompresses to nothing"},
		{"truncated gzip header", gzipBytes(t, tarball)[:5], imageops.ErrTruncatedTar, "gzip stream ends early"},
		{"truncated gzip", gzipBytes(t, tarball)[:300], imageops.ErrTruncatedTar, "gzip stream ends early"},
		{"truncated zstd", zstdBytes(t, tarball)[:300], imageops.ErrTruncatedTar, "zstd stream ends early"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc, _, err := imageops.OpenTarStream(bytes.NewReader(tc.input))
			if err == nil {
				rc.Close()
				t.Fatal("OpenTarStream accepted it")
			}
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("OpenTarStream = %q, want %v saying %q", err, tc.is, tc.msg)
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("OpenTarStream = %v, which matches io.ErrUnexpectedEOF", err)
			}
		})
	}
}

func corrupt(b []byte, at int) []byte {
	b = append([]byte{}, b...)
	for i := at; i < at+64 && i < len(b); i++ {
		b[i] ^= 0x5a
	}
	return b
}

// A stream that turns out bad after its first bytes fails while it is read.
func TestOpenTarStreamFailsLater(t *testing.T) {
	tarball := makeTar(t, tarReg("src/weights/model.bin", string(randomBytes(2<<20))))
	gz, zs := gzipBytes(t, tarball), zstdBytes(t, tarball)
	errNetwork := errors.New("connection reset by peer")
	tests := []struct {
		name  string
		input io.Reader
		is    error
		not   error
	}{
		{"truncated gzip", bytes.NewReader(gz[:len(gz)/2]), imageops.ErrTruncatedTar, io.ErrUnexpectedEOF},
		{"truncated zstd", bytes.NewReader(zs[:len(zs)/2]), imageops.ErrTruncatedTar, io.ErrUnexpectedEOF},
		{"gzip without its checksum", bytes.NewReader(gz[:len(gz)-4]), imageops.ErrTruncatedTar, io.ErrUnexpectedEOF},
		{"corrupt gzip", bytes.NewReader(corrupt(gz, len(gz)/2)), imageops.ErrCorruptTar, nil},
		{"corrupt zstd", bytes.NewReader(corrupt(zs, len(zs)/2)), imageops.ErrCorruptTar, nil},
		{"source error under gzip", &errAfterReader{gz[:len(gz)/2], errNetwork}, errNetwork, imageops.ErrCorruptTar},
		{"source error under zstd", &errAfterReader{zs[:len(zs)/2], errNetwork}, errNetwork, imageops.ErrCorruptTar},
		{"source unexpected EOF under gzip", &errAfterReader{gz[:len(gz)/2], io.ErrUnexpectedEOF}, io.ErrUnexpectedEOF, imageops.ErrTruncatedTar},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc, _, err := imageops.OpenTarStream(tc.input)
			if err != nil {
				t.Fatalf("OpenTarStream: %v", err)
			}
			defer rc.Close()
			_, err = imageops.RewriteTar(io.Discard, rc, imageops.TarPolicy{})
			if !errors.Is(err, tc.is) {
				t.Fatalf("RewriteTar = %v, want %v", err, tc.is)
			}
			if tc.not != nil && errors.Is(err, tc.not) {
				t.Errorf("RewriteTar = %v, which matches %v", err, tc.not)
			}
		})
	}
}

func TestOpenTarStreamClose(t *testing.T) {
	tarball := makeTar(t, tarReg("model.bin", string(randomBytes(1<<20))))
	for _, input := range [][]byte{gzipBytes(t, tarball), zstdBytes(t, tarball)} {
		rc, c, err := imageops.OpenTarStream(bytes.NewReader(input))
		if err != nil {
			t.Fatal(err)
		}
		if err := rc.Close(); err != nil {
			t.Errorf("%s: Close: %v", c, err)
		}
		if _, err := io.ReadAll(rc); err == nil {
			t.Errorf("%s: reading after Close succeeded", c)
		}
		if err := rc.Close(); err != nil {
			t.Errorf("%s: second Close: %v", c, err)
		}
	}
}

func TestParseCompression(t *testing.T) {
	tests := []struct {
		in   string
		want imageops.Compression
		err  bool
	}{
		{"gzip", imageops.Gzip, false},
		{"GZ", imageops.Gzip, false},
		{"zstd", imageops.Zstd, false},
		{" zst ", imageops.Zstd, false},
		{"none", imageops.Uncompressed, false},
		{"uncompressed", imageops.Uncompressed, false},
		{"Auto", imageops.Auto, false},
		{"", "", true},
		{"bzip2", "", true},
	}
	for _, tc := range tests {
		t.Run(strconv.Quote(tc.in), func(t *testing.T) {
			got, err := imageops.ParseCompression(tc.in)
			if got != tc.want || (err != nil) != tc.err {
				t.Errorf("ParseCompression(%q) = %q, %v", tc.in, got, err)
			}
			if err != nil && !strings.Contains(err.Error(), "use auto, gzip, zstd or none") {
				t.Errorf("error %q does not list the choices", err)
			}
		})
	}
}
