package imageops

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// layerInput is a few MiB of mixed compressible and random bytes, written
// in uneven pieces as a tar rewrite would.
func layerInput() []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 5<<20+12345)
	for i := range b {
		if i%3 == 0 {
			b[i] = byte(rng.Uint32())
		} else {
			b[i] = byte(i / 4096)
		}
	}
	return b
}

func writeUneven(w io.Writer, b []byte) error {
	sizes := []int{1, 511, 4096, 100000, 1 << 20, 3 << 20}
	for i := 0; len(b) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(b))
		if _, err := w.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// TestStreamLayerPassIsTheSequentialPass: the pipelined pass gives the
// bytes, digests and sizes that compressing and hashing in one goroutine
// gives.
func TestStreamLayerPassIsTheSequentialPass(t *testing.T) {
	in := layerInput()
	for _, c := range []Compression{Gzip, Zstd, Uncompressed} {
		t.Run(string(c), func(t *testing.T) {
			level := defaultLevel(c, 0)
			var want bytes.Buffer
			cw, err := newCompressor(&want, c, level)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cw.Write(in); err != nil {
				t.Fatal(err)
			}
			if err := cw.Close(); err != nil {
				t.Fatal(err)
			}

			l := &streamLayer{compression: c, level: level, produce: func(w io.Writer) error { return writeUneven(w, in) }}
			for pass := 0; pass < 2; pass++ { // a retry's pass is the same
				rc, err := l.Compressed()
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(rc)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want.Bytes()) {
					t.Fatalf("pass %d: %d bytes differ from the sequential %d", pass, len(got), want.Len())
				}
			}
			digest, _ := l.Digest()
			diffID, _ := l.DiffID()
			size, _ := l.Size()
			if digest.Hex != fmt.Sprintf("%x", sha256.Sum256(want.Bytes())) || diffID.Hex != fmt.Sprintf("%x", sha256.Sum256(in)) {
				t.Errorf("digest %s diffID %s", digest, diffID)
			}
			if size != int64(want.Len()) || l.uncompSize != int64(len(in)) {
				t.Errorf("size %d uncompressed %d; want %d %d", size, l.uncompSize, want.Len(), len(in))
			}
		})
	}
}

// TestStreamLayerPassStops: whichever end fails, the pass ends with the
// reason and no goroutine is left blocked.
func TestStreamLayerPassStops(t *testing.T) {
	in := layerInput()
	bad := errors.New("bad input")
	cases := []struct {
		name    string
		layer   *streamLayer
		readAll bool // read to the end; otherwise hang up after 64 KiB
		want    error
		cause   bool // the failure is the input's, not the uploader's
	}{
		{"uploader hangs up", &streamLayer{compression: Zstd, level: 3, produce: func(w io.Writer) error { return writeUneven(w, in) }}, false, nil, false},
		{"input fails", &streamLayer{compression: Zstd, level: 3, produce: func(w io.Writer) error {
			if err := writeUneven(w, in[:3<<20]); err != nil {
				return err
			}
			return permanent(bad)
		}}, true, bad, true},
		{"uploader hangs up, uncompressed and verified", &streamLayer{compression: Uncompressed, produce: func(w io.Writer) error { return writeUneven(w, in) },
			verify: func(v1.Hash) error { return nil }}, false, nil, false},
		{"diffID does not verify", &streamLayer{compression: Uncompressed, produce: func(w io.Writer) error { return writeUneven(w, in) },
			verify: func(v1.Hash) error { return bad }}, true, bad, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := tc.layer.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				if tc.readAll {
					_, err := io.ReadAll(rc)
					done <- err
					return
				}
				_, err := io.CopyN(io.Discard, rc, 64<<10)
				rc.Close()
				done <- err
			}()
			select {
			case err := <-done:
				if tc.want != nil && !errors.Is(err, tc.want) {
					t.Fatalf("read error %v; want %v", err, tc.want)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the pass did not stop")
			}
			if !tc.cause {
				// The uploader's hang-up is not the input's fault.
				if err := tc.layer.failure(); err != nil {
					t.Errorf("failure %v after the uploader hung up; want none", err)
				}
			}
			if tc.cause {
				if err := tc.layer.failure(); !errors.Is(err, bad) {
					t.Errorf("cause %v; want %v", err, bad)
				}
				if _, err := tc.layer.Compressed(); !errors.Is(err, bad) {
					t.Errorf("a permanent failure must stop later passes: %v", err)
				}
			}
			if _, err := tc.layer.Digest(); err == nil {
				t.Error("a failed pass computed a digest")
			}
		})
	}
}

// TestStageFanOut: every consumer of a stage sees exactly the bytes written,
// in order, although they share one copy of each chunk and run at their own
// pace (the race detector catches a chunk reused while a consumer reads it).
func TestStageFanOut(t *testing.T) {
	in := layerInput()
	for _, n := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("%d consumers", n), func(t *testing.T) {
			stopped := make(chan struct{})
			defer close(stopped)
			got := make([]bytes.Buffer, n)
			var consumers []func([]byte) error
			for i := range got {
				consumers = append(consumers, func(p []byte) error {
					for range i { // later consumers are slower
						sha256.Sum256(p)
					}
					got[i].Write(p)
					return nil
				})
			}
			s := newStage(stopped, consumers...)
			if err := writeUneven(s, in); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if !bytes.Equal(got[i].Bytes(), in) {
					t.Errorf("consumer %d saw %d bytes that differ from the %d written", i, got[i].Len(), len(in))
				}
			}
		})
	}
}

// TestStageConsumerFails: one consumer's error stops the writer and the
// other consumers; Write or Close returns it, and Close returns only once
// every consumer has exited.
func TestStageConsumerFails(t *testing.T) {
	in := layerInput()
	bad := errors.New("consumer failed")
	stopped := make(chan struct{})
	defer close(stopped)
	var seen int
	s := newStage(stopped,
		func([]byte) error { return nil },
		func(p []byte) error {
			if seen += len(p); seen > 1<<20 {
				return bad
			}
			return nil
		})
	done := make(chan error, 1)
	go func() {
		err := writeUneven(s, in)
		if cerr := s.Close(); err == nil {
			err = cerr
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, bad) {
			t.Fatalf("error %v; want %v", err, bad)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the writer did not stop")
	}
	if s.failedConsumer() != 1 {
		t.Errorf("failed consumer %d; want 1", s.failedConsumer())
	}
}
