package testenv

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"testing"
)

// WeightsSpec describes a synthetic weights tarball.
type WeightsSpec struct {
	Files    int    // weight shards (default 3)
	FileSize int64  // bytes per shard (default 256 KiB); a config.json is added
	Dir      string // directory inside the tar: "src/weights" (the seeds' style) or "" for paths relative to the target
	Seed     uint64 // same spec, same bytes
}

// WeightsFile is one regular file in a weights tarball.
type WeightsFile struct {
	Name   string // path inside the tar
	Size   int64
	SHA256 string // hex
}

func (s WeightsSpec) withDefaults() WeightsSpec {
	if s.Files == 0 {
		s.Files = 3
	}
	if s.FileSize == 0 {
		s.FileSize = 256 << 10
	}
	return s
}

// WriteWeights streams a tarball of fp16-like shards to w: a directory entry,
// a small config.json and Files shards of FileSize bytes each. Memory use is
// constant whatever the size.
func WriteWeights(w io.Writer, spec WeightsSpec) ([]WeightsFile, error) {
	spec = spec.withDefaults()
	bw := bufio.NewWriterSize(w, 1<<20)
	tw := tar.NewWriter(bw)
	name := func(base string) string { return path.Join(spec.Dir, base) }
	if spec.Dir != "" {
		for _, d := range append(parents(spec.Dir), spec.Dir) {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: BaseCreated}); err != nil {
				return nil, err
			}
		}
	}
	var files []WeightsFile
	add := func(n string, size int64, fill func(io.Writer) error) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: size, ModTime: BaseCreated}); err != nil {
			return err
		}
		h := sha256.New()
		if err := fill(io.MultiWriter(tw, h)); err != nil {
			return fmt.Errorf("writing %s: %w", n, err)
		}
		files = append(files, WeightsFile{Name: n, Size: size, SHA256: hex.EncodeToString(h.Sum(nil))})
		return nil
	}
	cfg := fmt.Sprintf("{\"torch_dtype\": \"float16\", \"shards\": %d, \"seed\": %d}\n", spec.Files, spec.Seed)
	if err := add(name("config.json"), int64(len(cfg)), func(w io.Writer) error {
		_, err := io.WriteString(w, cfg)
		return err
	}); err != nil {
		return nil, err
	}
	for i := 1; i <= spec.Files; i++ {
		n := name(fmt.Sprintf("model-%05d-of-%05d.safetensors", i, spec.Files))
		rng := rand.New(rand.NewPCG(spec.Seed, uint64(i)))
		if err := add(n, spec.FileSize, func(w io.Writer) error { return writeFP16(w, rng, spec.FileSize) }); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return files, bw.Flush()
}

// writeFP16 writes n bytes of little-endian float16 values shaped like
// trained weights: random sign and mantissa, magnitudes between 2^-10 and
// 2^-6 with a geometric spread, so the high bytes carry little entropy and
// the data compresses only slightly, as real fp16 checkpoints do.
func writeFP16(w io.Writer, rng *rand.Rand, n int64) error {
	buf := make([]byte, 64<<10)
	for n > 0 {
		for i := 0; i+8 <= len(buf); i += 8 {
			r := rng.Uint64()
			for j := 0; j < 4; j++ {
				v := r >> (16 * j)
				exp := 9 - uint16(bits.TrailingZeros8(uint8(v>>11)&0x0f|0x10))
				h := uint16(v&1)<<15 | exp<<10 | uint16(v>>1)&0x3ff
				binary.LittleEndian.PutUint16(buf[i+2*j:], h)
			}
		}
		chunk := buf[:min(int64(len(buf)), n)]
		if _, err := w.Write(chunk); err != nil {
			return err
		}
		n -= int64(len(chunk))
	}
	return nil
}

// WeightsTar writes a weights tarball into the test's temp dir and returns
// its path and the files it holds.
func WeightsTar(t testing.TB, spec WeightsSpec) (string, []WeightsFile) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "weights.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	files, err := WriteWeights(f, spec)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("writing weights tarball: %v", err)
	}
	return p, files
}

// WeightsDir writes the files of WriteWeights(spec) into a new directory
// under the test's temp dir, and returns it and the files (names relative
// to it).
func WeightsDir(t testing.TB, spec WeightsSpec) (string, []WeightsFile) {
	t.Helper()
	dir := t.TempDir()
	pr, pw := io.Pipe()
	var files []WeightsFile
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		files, err = WriteWeights(pw, spec)
		pw.CloseWithError(err)
	}()
	defer func() {
		pr.Close()
		<-done
	}()
	tr := tar.NewReader(pr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("writing the weights directory: %v", err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatalf("writing %s: %v", p, err)
		}
	}
	if _, err := io.Copy(io.Discard, pr); err != nil {
		t.Fatalf("writing the weights directory: %v", err)
	}
	<-done
	return dir, files
}

// TarDir tars dir with GNU tar (entries sorted by name, as a directory walk
// lists them; PAX format) into a new file under the test's temp dir: a
// tarball made by another tool than r8im.
func TarDir(t testing.TB, dir string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "weights.tar")
	if out, err := exec.Command(Binary(t, "tar"), "--sort=name", "--format=pax", "-C", dir, "-cf", p, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar -C %s: %v\n%s", dir, err, out)
	}
	return p
}
