package imageops_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

// walkAll lists every path under dir (directories too), relative and sorted.
func walkAll(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// weightsImage pushes an image with one r8im weights layer of two 256 KiB
// shards and a config.json, and returns its repo@digest, the digest of the
// weights layer and the files.
func weightsImage(t *testing.T, host, repo string) (string, string, []testenv.WeightsFile) {
	t.Helper()
	img, files := testenv.WeightsImage(t, testenv.OCI, testenv.Amd64, testenv.R8imWeights, testenv.WeightsSpec{Files: 2, Seed: 77})
	dig := testenv.Push(t, host+"/"+repo+":latest", img)
	layers := layerDigests(t, img)
	return dig.String(), layers[len(layers)-1].String(), files
}

// TestExtractToDirSubstitutedBlob extracts through a registry that answers
// the weights layer with another tarball (which plants a file): the digest
// check fails at the end of the layer, after its files were written, and
// the output dir must hold nothing new — whether ExtractToDir created it or
// it held the user's files.
func TestExtractToDirSubstitutedBlob(t *testing.T) {
	reg := testenv.Registry(t)
	ref, layer, _ := weightsImage(t, reg.Host, "extract/substituted")
	proxy := testenv.SubstituteBlobs(t, reg.Host)
	size := testenv.BlobSize(t, ref, layer)
	planted := testenv.Tar(t, testenv.Dir("src/"), testenv.Dir("src/weights/"),
		testenv.File("src/weights/planted.bin", "planted by the registry"), testenv.File("src/weights/config.json", `{"evil": true}`))
	proxy.Substitute(layer, testenv.GzipOfSize(t, planted, size))
	viaProxy := strings.Replace(ref, reg.Host, proxy.Host, 1)

	for _, tc := range []struct {
		name string
		mine []string // files in the output dir before
	}{
		{"new dir", nil},
		{"existing dir", []string{"notes.txt", "src/weights/config.json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "a", "out")
			for _, f := range tc.mine {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, f), []byte("mine"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			before := walkAll(t, parent)
			served := proxy.Served(layer)
			_, err := imageops.ExtractToDir(context.Background(), viaProxy, dir, imageops.ExtractOptions{})
			if err == nil || !strings.Contains(err.Error(), "error verifying sha256 checksum") {
				t.Fatalf("ExtractToDir = %v; want the digest check to fail", err)
			}
			if proxy.Served(layer) == served {
				t.Fatal("the proxy did not substitute the layer")
			}
			if after := walkAll(t, parent); !slices.Equal(after, before) {
				t.Errorf("after the failure the output holds %q, want %q as before", after, before)
			}
			for _, f := range tc.mine {
				if b, _ := os.ReadFile(filepath.Join(dir, f)); string(b) != "mine" {
					t.Errorf("%s = %q, want the user's file untouched", f, b)
				}
			}
		})
	}
}

// TestExtractSizeLimit bounds the extracted bytes by the size limit (as
// R8IM_MAX_WEIGHTS_SIZE sets it): over it, extraction fails, naming the
// limit, and leaves nothing.
func TestExtractSizeLimit(t *testing.T) {
	reg := testenv.Registry(t)
	ref, _, files := weightsImage(t, reg.Host, "extract/limit")
	var total int64
	for _, f := range files {
		total += f.Size
	}
	ctx := context.Background()
	over := imageops.WithTarLimits(imageops.TarLimits{MaxBytes: total - 1})

	parent := t.TempDir()
	_, err := imageops.ExtractToDir(ctx, ref, filepath.Join(parent, "out"), imageops.ExtractOptions{}, over)
	if err == nil || !strings.Contains(err.Error(), "the limit") || !imageops.IsPermanent(err) ||
		!slices.Equal(imageops.Remedies(err), []imageops.Remedy{imageops.RemedyMaxWeightsSize}) {
		t.Fatalf("ExtractToDir over the limit = %v (remedies %v); want a permanent error naming the limit, remedied by a larger MaxBytes", err, imageops.Remedies(err))
	}
	if got := walkAll(t, parent); len(got) != 0 {
		t.Errorf("left behind: %q", got)
	}
	if _, err := imageops.Extract(ctx, ref, io.Discard, imageops.ExtractOptions{}, over); err == nil || !strings.Contains(err.Error(), "the limit") {
		t.Errorf("Extract over the limit = %v; want an error naming the limit", err)
	}

	res, err := imageops.ExtractToDir(ctx, ref, filepath.Join(parent, "out"), imageops.ExtractOptions{}, imageops.WithTarLimits(imageops.TarLimits{MaxBytes: total}))
	if err != nil || res.Bytes != total {
		t.Fatalf("ExtractToDir at the limit = %+v, %v; want %d bytes", res, err, total)
	}
}

// TestExtractToDirMerges moves the staged files into a dir that already
// holds files: others are kept, those at extracted paths replaced, and a
// directory in the way of a file stops it before anything moves.
func TestExtractToDirMerges(t *testing.T) {
	reg := testenv.Registry(t)
	ref, _, files := weightsImage(t, reg.Host, "extract/merge")
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("notes.txt", "mine")
	write(files[0].Name, "stale")
	// A directory where the weights have a file.
	write(files[1].Name+"/inside", "in the way")
	before := walkAll(t, dir)
	_, err := imageops.ExtractToDir(context.Background(), ref, dir, imageops.ExtractOptions{})
	if err == nil || !strings.Contains(err.Error(), "a directory is in the way") || !strings.Contains(err.Error(), files[1].Name) {
		t.Fatalf("ExtractToDir = %v; want a directory in the way at %s", err, files[1].Name)
	}
	if after := walkAll(t, dir); !slices.Equal(after, before) {
		t.Fatalf("after the conflict the dir holds %q, want %q as before", after, before)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, files[0].Name)); string(b) != "stale" {
		t.Fatalf("%s was replaced before the conflict was found", files[0].Name)
	}

	if err := os.RemoveAll(filepath.Join(dir, files[1].Name)); err != nil {
		t.Fatal(err)
	}
	if _, err := imageops.ExtractToDir(context.Background(), ref, dir, imageops.ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if got := testenv.FileSHA256(t, filepath.Join(dir, f.Name)); got != f.SHA256 {
			t.Errorf("%s: sha256 %s, want %s", f.Name, got, f.SHA256)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "notes.txt")); string(b) != "mine" {
		t.Errorf("notes.txt = %q, want it kept", b)
	}
	for _, p := range walkAll(t, dir) {
		if strings.Contains(p, ".r8im-extract-") {
			t.Errorf("the temp dir %s is left", p)
		}
	}
}
