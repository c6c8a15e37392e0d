package imageops_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

// outEntry is one entry of an Extract tar.
type outEntry struct {
	typ      byte
	link     string
	body     string
	mode     int64
	uid, gid int
}

// readExtractTar indexes an Extract tar by name, failing on duplicates.
func readExtractTar(t *testing.T, b []byte) map[string]outEntry {
	t.Helper()
	out := map[string]outEntry{}
	for _, m := range testenv.TarMembers(t, bytes.NewReader(b)) {
		if _, dup := out[m.Name]; dup {
			t.Errorf("entry %s written twice", m.Name)
		}
		out[m.Name] = outEntry{typ: m.Typeflag, link: m.Linkname, body: m.Body, mode: m.Mode, uid: m.Uid, gid: m.Gid}
	}
	return out
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// strip returns name relative to src/weights when strip is set.
func strip(name string, strip bool) string {
	if !strip {
		return name
	}
	return strings.TrimPrefix(strings.TrimPrefix(name, "src/weights"), "/")
}

// TestExtractConventions extracts the weights of an image in each marker
// convention, to a tar and to a directory, and checks that exactly the
// weights files came out and only the layers holding them were downloaded.
func TestExtractConventions(t *testing.T) {
	ctx := context.Background()
	conventions := []testenv.Convention{testenv.SeedsWeights, testenv.CogWeights, testenv.R8imWeights, testenv.CopySrcWeights}
	forEachReg(t, func(t *testing.T, reg regSetup) {
		for _, f := range []testenv.Format{testenv.Docker, testenv.OCI} {
			for _, c := range conventions {
				for _, stripTarget := range []bool{false, true} {
					t.Run(fmt.Sprintf("%s/%s/strip=%v", f, c, stripTarget), func(t *testing.T) {
						img, files := testenv.WeightsImage(t, f, testenv.Amd64, c, testenv.WeightsSpec{Files: 2, FileSize: 96 << 10, Seed: uint64(c) + 1})
						dig := reg.push(t, reg.Host, fmt.Sprintf("extract/%s-%s:latest", f, c), img)
						layers := layerDigests(t, img)
						read := []v1.Hash{layers[3]} // newest first
						if c == testenv.CopySrcWeights {
							read = append(read, layers[2]) // the base's COPY . /src layer, as well
						}
						var skipped []v1.Hash
						for _, l := range layers {
							if !slices.Contains(read, l) {
								skipped = append(skipped, l)
							}
						}
						var wantBytes, readSize int64
						for _, wf := range files {
							wantBytes += wf.Size
						}
						mf, _ := img.Manifest()
						for _, l := range mf.Layers {
							if slices.Contains(read, l.Digest) {
								readSize += l.Size
							}
						}
						check := func(t *testing.T, res *imageops.ExtractResult, counter *blobGetCounter, progress []imageops.Progress) {
							t.Helper()
							imgDigest, _ := img.Digest()
							if want := dig.Context().Digest(imgDigest.String()).String(); res.Ref.String() != want {
								t.Errorf("ref %s, want %s", res.Ref, want)
							}
							if !slices.Equal(res.Layers, read) {
								t.Errorf("layers read %v, want %v", res.Layers, read)
							}
							if res.Files != len(files) || res.Bytes != wantBytes {
								t.Errorf("files %d bytes %d, want %d and %d", res.Files, res.Bytes, len(files), wantBytes)
							}
							if n := counter.of(skipped...); n != 0 {
								t.Errorf("%d GETs of layers that hold no weights", n)
							}
							if n := counter.of(read...); n != len(read) {
								t.Errorf("%d GETs of the weights layers, want %d", n, len(read))
							}
							if res.Transfer.DownloadedBytes < readSize || res.Transfer.UploadedBytes != 0 {
								t.Errorf("transfer %+v: want %d bytes downloaded (the weights layers and the config), none uploaded", res.Transfer, readSize)
							}
							if len(progress) == 0 {
								t.Fatal("no progress reported")
							}
							if last := progress[len(progress)-1]; last.Stage != "extract" || last.Done != readSize || last.Total != readSize {
								t.Errorf("last progress %+v, want extract %d/%d", last, readSize, readSize)
							}
						}
						eo := imageops.ExtractOptions{StripTarget: stripTarget}

						t.Run("tar", func(t *testing.T) {
							counter := newBlobGetCounter(reg.Transport())
							var progress []imageops.Progress
							var buf bytes.Buffer
							res, err := imageops.Extract(ctx, dig.String(), &buf, eo,
								reg.opts(imageops.WithTransport(counter), imageops.WithProgress(func(p imageops.Progress) { progress = append(progress, p) }))...)
							if err != nil {
								t.Fatalf("Extract: %v", err)
							}
							check(t, res, counter, progress)
							got := readExtractTar(t, buf.Bytes())
							want := map[string]bool{}
							for _, wf := range files {
								name := strip(wf.Name, stripTarget)
								want[name] = true
								e, ok := got[name]
								if !ok {
									t.Errorf("%s missing", name)
									continue
								}
								if e.typ != tar.TypeReg || sha(e.body) != wf.SHA256 || e.mode != 0o644 {
									t.Errorf("%s: type %c mode %o sha256 %s, want a 0644 file with %s", name, e.typ, e.mode, sha(e.body), wf.SHA256)
								}
							}
							if !stripTarget {
								want["src/weights/"] = true
								if c != testenv.CopySrcWeights {
									want["src/"] = true // whole layers: every entry
								}
							}
							for name, e := range got {
								if !want[name] {
									t.Errorf("unexpected entry %s (%c)", name, e.typ)
								}
								if strings.HasPrefix(name, "/") {
									t.Errorf("entry %s is absolute", name)
								}
							}
						})

						t.Run("dir", func(t *testing.T) {
							counter := newBlobGetCounter(reg.Transport())
							var progress []imageops.Progress
							dir := filepath.Join(t.TempDir(), "out")
							res, err := imageops.ExtractToDir(ctx, dig.String(), dir, eo,
								reg.opts(imageops.WithTransport(counter), imageops.WithProgress(func(p imageops.Progress) { progress = append(progress, p) }))...)
							if err != nil {
								t.Fatalf("ExtractToDir: %v", err)
							}
							check(t, res, counter, progress)
							var want []string
							for _, wf := range files {
								name := strip(wf.Name, stripTarget)
								want = append(want, name)
								p := filepath.Join(dir, name)
								if got := testenv.FileSHA256(t, p); got != wf.SHA256 {
									t.Errorf("%s: sha256 %s, want %s", name, got, wf.SHA256)
								}
								if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
									t.Errorf("%s: mode %v, want 0644", name, fi.Mode())
								}
							}
							if got := walkFiles(t, dir); !slices.Equal(got, sorted(want)) {
								t.Errorf("files %v, want %v", got, sorted(want))
							}
						})
					})
				}
			}
		}
	})
}

// walkFiles lists the non-directories under dir, relative and sorted.
func walkFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
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

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// TestExtractIndex picks one platform of an index and refuses to mix all.
func TestExtractIndex(t *testing.T) {
	ctx := context.Background()
	idx, files := testenv.WeightsIndex(t, testenv.OCI, testenv.CogWeights, testenv.WeightsSpec{Files: 1, FileSize: 4 << 10})
	forEachReg(t, func(t *testing.T, reg regSetup) {
		dig := reg.push(t, reg.Host, "extract/index:latest", idx)
		arm64 := testenv.Arm64
		arm, _ := platformImages(t, idx)["linux/arm64/v8"].Digest()

		var buf bytes.Buffer
		res, err := imageops.Extract(ctx, dig.String(), &buf, imageops.ExtractOptions{}, reg.opts(imageops.WithPlatform(&arm64))...)
		if err != nil {
			t.Fatalf("Extract arm64: %v", err)
		}
		if want := dig.Context().Digest(arm.String()).String(); res.Ref.String() != want || res.Files != len(files) {
			t.Errorf("ref %s files %d, want %s and %d", res.Ref, res.Files, want, len(files))
		}
		_, err = imageops.Extract(ctx, dig.String(), io.Discard, imageops.ExtractOptions{}, reg.opts(imageops.WithPlatform(nil))...)
		if !errors.Is(err, imageops.ErrInvalid) || !slices.Contains(imageops.Remedies(err), imageops.RemedyPlatform) {
			t.Errorf("Extract of every platform: %v, want ErrInvalid remedied by choosing a platform", err)
		}
	})
}

// TestExtractNewestLayerWins stacks two weights layers: the newer one
// replaces a file, deletes another, makes a directory opaque and adds
// symlinks, a hard link and an empty directory; the older one must show
// through only where the newer one is silent.
func TestExtractNewestLayerWins(t *testing.T) {
	ctx := context.Background()
	older := testenv.LayerOf(t, testenv.Docker,
		testenv.Dir("src/"), testenv.Dir("src/weights/"),
		testenv.File("src/weights/a.bin", "old a"),
		testenv.File("src/weights/b.bin", "old b, deleted later"),
		testenv.File("src/weights/keep.bin", "kept from the older layer"),
		testenv.Dir("src/weights/sub/"),
		testenv.File("src/weights/sub/c.bin", "hidden by the opaque dir"),
		testenv.Dir("src/weights/gone/"),
		testenv.File("src/weights/gone/x.bin", "below a deleted dir"),
		testenv.File("src/weights/link", "a file a newer symlink replaces"),
	)
	newer := testenv.LayerOf(t, testenv.Docker,
		testenv.Dir("src/"), testenv.Dir("src/weights/"),
		testenv.Entry{Name: "src/weights/a.bin", Body: "new a", Mode: 0o600, Uid: 1000, Gid: 1001},
		testenv.Whiteout("src/weights/b.bin"),
		testenv.Whiteout("src/weights/gone"),
		testenv.Dir("src/weights/sub/"),
		testenv.Opaque("src/weights/sub"),
		testenv.File("src/weights/sub/d.bin", "new d"),
		testenv.Symlink("src/weights/link", "a.bin"),
		testenv.Symlink("src/weights/abs", "/src/weights/keep.bin"),
		testenv.Hardlink("src/weights/hard.bin", "src/weights/a.bin"),
		testenv.Entry{Name: "src/weights/empty/", Type: tar.TypeDir, Mode: 0o750},
	)
	img := testenv.AppendWeights(t, testenv.BaseImage(t, testenv.Docker, testenv.Amd64), testenv.SeedsWeights, older)
	img = testenv.AppendWeights(t, img, testenv.R8imWeights, newer)
	forEachReg(t, func(t *testing.T, reg regSetup) {
		dig := reg.push(t, reg.Host, "extract/stacked:latest", img)
		layers := layerDigests(t, img)
		wantLayers := []v1.Hash{layers[4], layers[3]}

		type want struct {
			typ  byte
			body string // file content or link target
			mode int64
		}
		wantFor := func(stripTarget bool) map[string]want {
			w := map[string]want{
				"src/weights/a.bin":     {tar.TypeReg, "new a", 0o600},
				"src/weights/keep.bin":  {tar.TypeReg, "kept from the older layer", 0o644},
				"src/weights/sub/d.bin": {tar.TypeReg, "new d", 0o644},
				"src/weights/link":      {tar.TypeSymlink, "a.bin", 0o644},
				"src/weights/abs":       {tar.TypeSymlink, "keep.bin", 0o644},
				"src/weights/hard.bin":  {tar.TypeLink, "src/weights/a.bin", 0o644},
				"src/weights/empty/":    {tar.TypeDir, "", 0o750},
				"src/weights/sub/":      {tar.TypeDir, "", 0o755},
				"src/weights/":          {tar.TypeDir, "", 0o755},
				"src/":                  {tar.TypeDir, "", 0o755},
			}
			// not there: b.bin (.wh.b.bin), gone/ and gone/x.bin (.wh.gone),
			// sub/c.bin (sub is opaque in the newer layer)
			if !stripTarget {
				return w
			}
			out := map[string]want{}
			for name, e := range w {
				if name == "src/" || name == "src/weights/" {
					continue
				}
				if e.typ == tar.TypeLink {
					e.body = strip(e.body, true)
				}
				out[strip(name, true)] = e
			}
			return out
		}

		for _, stripTarget := range []bool{false, true} {
			eo := imageops.ExtractOptions{StripTarget: stripTarget}
			t.Run(fmt.Sprintf("tar/strip=%v", stripTarget), func(t *testing.T) {
				var buf bytes.Buffer
				res, err := imageops.Extract(ctx, dig.String(), &buf, eo, reg.opts()...)
				if err != nil {
					t.Fatalf("Extract: %v", err)
				}
				if !slices.Equal(res.Layers, wantLayers) || res.Files != 3 || res.Bytes != int64(len("new a")+len("kept from the older layer")+len("new d")) {
					t.Errorf("result %+v: want layers %v, 3 files", res, wantLayers)
				}
				got := readExtractTar(t, buf.Bytes())
				w := wantFor(stripTarget)
				for name, e := range w {
					g, ok := got[name]
					switch {
					case !ok:
						t.Errorf("%s missing", name)
					case g.typ != e.typ || g.mode != e.mode:
						t.Errorf("%s: type %c mode %o, want %c %o", name, g.typ, g.mode, e.typ, e.mode)
					case e.typ == tar.TypeReg && g.body != e.body, (e.typ == tar.TypeSymlink || e.typ == tar.TypeLink) && g.link != e.body:
						t.Errorf("%s: body %q link %q, want %q", name, g.body, g.link, e.body)
					}
				}
				for name := range got {
					if _, ok := w[name]; !ok {
						t.Errorf("unexpected entry %s", name)
					}
					if strings.Contains(name, ".wh.") {
						t.Errorf("whiteout %s written", name)
					}
				}
				if a := got[strip("src/weights/a.bin", stripTarget)]; a.uid != 1000 || a.gid != 1001 {
					t.Errorf("a.bin: uid/gid %d/%d, want the layer's 1000/1001", a.uid, a.gid)
				}
			})
			t.Run(fmt.Sprintf("dir/strip=%v", stripTarget), func(t *testing.T) {
				dir := t.TempDir()
				res, err := imageops.ExtractToDir(ctx, dig.String(), dir, eo, reg.opts()...)
				if err != nil {
					t.Fatalf("ExtractToDir: %v", err)
				}
				if !slices.Equal(res.Layers, wantLayers) || res.Files != 3 {
					t.Errorf("result %+v: want layers %v, 3 files", res, wantLayers)
				}
				var wantFiles []string
				for name, e := range wantFor(stripTarget) {
					p := filepath.Join(dir, strings.TrimSuffix(name, "/"))
					fi, err := os.Lstat(p)
					if err != nil {
						t.Errorf("%s: %v", name, err)
						continue
					}
					switch e.typ {
					case tar.TypeReg:
						wantFiles = append(wantFiles, name)
						b, _ := os.ReadFile(p)
						if string(b) != e.body || fi.Mode().Perm() != os.FileMode(e.mode) {
							t.Errorf("%s: %q mode %v, want %q %o", name, b, fi.Mode(), e.body, e.mode)
						}
					case tar.TypeSymlink:
						wantFiles = append(wantFiles, name)
						if l, _ := os.Readlink(p); l != e.body {
							t.Errorf("%s: symlink to %q, want %q", name, l, e.body)
						}
					case tar.TypeLink:
						wantFiles = append(wantFiles, name)
						target, _ := os.Stat(filepath.Join(dir, e.body))
						if !os.SameFile(fi, target) {
							t.Errorf("%s is not a hard link to %s", name, e.body)
						}
					case tar.TypeDir:
						if !fi.IsDir() || fi.Mode().Perm() != os.FileMode(e.mode) {
							t.Errorf("%s: mode %v, want a directory %o", name, fi.Mode(), e.mode)
						}
					}
				}
				if got := walkFiles(t, dir); !slices.Equal(got, sorted(wantFiles)) {
					t.Errorf("files %v, want %v", got, sorted(wantFiles))
				}
				// the symlinks resolve inside dir
				if b, err := os.ReadFile(filepath.Join(dir, strip("src/weights/abs", stripTarget))); err != nil || string(b) != "kept from the older layer" {
					t.Errorf("abs → %q, %v", b, err)
				}
			})
		}
	})
}

// TestExtractHistoryMismatch reads images whose config has fewer history
// entries than layers (the seeds indexed history by layer and panicked).
func TestExtractHistoryMismatch(t *testing.T) {
	ctx := context.Background()
	spec := testenv.WeightsSpec{Files: 1, FileSize: 8 << 10}
	forEachReg(t, func(t *testing.T, reg regSetup) {

		img, files := testenv.WeightsImage(t, testenv.Docker, testenv.Amd64, testenv.R8imWeights, spec)
		img = testenv.TrimHistory(t, img, 2) // 4 layers, 2 history entries for layers
		dig := reg.push(t, reg.Host, "extract/trimmed:latest", img)
		res, err := imageops.Extract(ctx, dig.String(), io.Discard, imageops.ExtractOptions{}, reg.opts()...)
		if err != nil {
			t.Fatalf("Extract: %v", err)
		}
		if res.Files != len(files) {
			t.Errorf("files %d, want %d", res.Files, len(files))
		}
		info, err := imageops.Layers(ctx, dig.String(), reg.opts()...)
		if err != nil {
			t.Fatalf("Layers: %v", err)
		}
		if l := info[0].Layers; len(l) != 4 || l[2].CreatedBy != "" || l[3].CreatedBy != "" || l[3].Weights != imageops.MarkedR8im {
			t.Errorf("layers %+v: want 4, the last two without created_by, the last marked by the label", l)
		}

		seeds, _ := testenv.WeightsImage(t, testenv.Docker, testenv.Amd64, testenv.SeedsWeights, spec)
		seeds = testenv.TrimHistory(t, seeds, 3) // the marker is gone with the history
		sdig := reg.push(t, reg.Host, "extract/trimmed-seeds:latest", seeds)
		_, err = imageops.Extract(ctx, sdig.String(), io.Discard, imageops.ExtractOptions{}, reg.opts()...)
		if !errors.Is(err, imageops.ErrNoWeights) {
			t.Errorf("Extract without markers: %v, want ErrNoWeights", err)
		}
	})
}

// TestExtractNoWeights wants a clear error naming what was searched.
func TestExtractNoWeights(t *testing.T) {
	cases := []struct {
		name  string
		image func(t *testing.T) v1.Image
		say   string
	}{
		{"base with code only", func(t *testing.T) v1.Image { return testenv.BaseImage(t, testenv.OCI, testenv.Amd64) }, "hold nothing there"},
		{"no history at all", func(t *testing.T) v1.Image {
			return testenv.TrimHistory(t, testenv.BaseImage(t, testenv.Docker, testenv.Amd64), 3)
		}, "has no weights layers"},
		{"weights outside the target", func(t *testing.T) v1.Image {
			l := testenv.LayerOf(t, testenv.Docker, testenv.File("src/models/w.bin", "w"))
			return testenv.AppendWeights(t, testenv.BaseImage(t, testenv.Docker, testenv.Amd64), testenv.CopySrcWeights, l)
		}, "hold nothing there"},
	}
	forEachReg(t, func(t *testing.T, reg regSetup) {
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				dig := reg.push(t, reg.Host, fmt.Sprintf("extract/none%d:latest", i), tc.image(t))
				dir := t.TempDir()
				_, err := imageops.ExtractToDir(context.Background(), dig.String(), dir, imageops.ExtractOptions{}, reg.opts()...)
				if !errors.Is(err, imageops.ErrNoWeights) || !errors.Is(err, imageops.ErrInvalid) {
					t.Fatalf("error %v, want ErrNoWeights and ErrInvalid", err)
				}
				for _, s := range []string{tc.say, dig.String(), "im.r8.weights", "# weights", "COPY --from=weights", "COPY . /src", "/src/weights"} {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not say %q", err, s)
					}
				}
				if got := walkFiles(t, dir); len(got) != 0 {
					t.Errorf("files written: %v", got)
				}
			})
		}
	})
}

// TestExtractRefusesEscapes feeds hostile layers: nothing may land outside
// the output directory, and a tar must not carry an entry below a symlink.
func TestExtractRefusesEscapes(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name    string
		entries []testenv.Entry
		strip   bool
		tarOK   bool // Extract to a tar accepts it (the link is kept as it is)
		say     string
	}{
		{"escaping symlink then a file below it", []testenv.Entry{
			testenv.Dir("src/weights/"), testenv.Symlink("src/weights/evil", "../../../etc"), testenv.File("src/weights/evil/passwd", "root::0:0::/:/bin/sh\n"),
		}, false, false, "evil"},
		{"escaping symlink then a file below it, stripped", []testenv.Entry{
			testenv.Symlink("src/weights/evil", "../../../etc"), testenv.File("src/weights/evil/passwd", "x"),
		}, true, false, "evil"},
		{"escaping symlink alone", []testenv.Entry{testenv.Symlink("src/weights/up", "../../../../x")}, false, true, "points outside"},
		{"absolute symlink outside the stripped target", []testenv.Entry{testenv.Symlink("src/weights/pw", "/etc/passwd")}, true, true, "points outside"},
		{"dot-dot path", []testenv.Entry{testenv.File("src/weights/../../../x", "x")}, false, false, ".."},
		{"hard link to another layer", []testenv.Entry{testenv.Hardlink("src/weights/h", "src/predict.py")}, false, false, "hard link"},
	}
	forEachReg(t, func(t *testing.T, reg regSetup) {
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				img := testenv.AppendWeights(t, testenv.BaseImage(t, testenv.OCI, testenv.Amd64), testenv.CogWeights, testenv.LayerOf(t, testenv.OCI, tc.entries...))
				dig := reg.push(t, reg.Host, fmt.Sprintf("extract/evil%d:latest", i), img)
				eo := imageops.ExtractOptions{StripTarget: tc.strip}

				parent := t.TempDir()
				dir := filepath.Join(parent, "a", "b", "out")
				_, err := imageops.ExtractToDir(ctx, dig.String(), dir, eo, reg.opts()...)
				if err == nil || !errors.Is(err, imageops.ErrInvalid) || !strings.Contains(err.Error(), tc.say) {
					t.Errorf("ExtractToDir: %v, want ErrInvalid saying %q", err, tc.say)
				}
				if got := walkFiles(t, parent); len(got) != 0 {
					t.Errorf("written: %v", got)
				}

				_, err = imageops.Extract(ctx, dig.String(), io.Discard, eo, reg.opts()...)
				if tc.tarOK && err != nil {
					t.Errorf("Extract: %v", err)
				}
				if !tc.tarOK && (err == nil || !strings.Contains(err.Error(), tc.say)) {
					t.Errorf("Extract: %v, want an error saying %q", err, tc.say)
				}
			})
		}

		// Symlinks already in the output directory: one standing for a parent
		// leads outside (os.Root refuses to follow it); one at a file's path is
		// replaced, never written through.
		t.Run("existing symlinks in the output dir", func(t *testing.T) {
			img, files := testenv.WeightsImage(t, testenv.OCI, testenv.Amd64, testenv.CopySrcWeights, testenv.WeightsSpec{Files: 1, FileSize: 1 << 10})
			dig := reg.push(t, reg.Host, "extract/plain:latest", img)
			parent := t.TempDir()
			dir, outside := filepath.Join(parent, "out"), filepath.Join(parent, "outside")
			for _, d := range []string{dir, outside} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(outside, "config.json"), []byte("mine"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, filepath.Join(dir, "src")); err != nil {
				t.Fatal(err)
			}
			_, err := imageops.ExtractToDir(ctx, dig.String(), dir, imageops.ExtractOptions{}, reg.opts()...)
			if err == nil || !strings.Contains(err.Error(), "writing src under") || !strings.Contains(err.Error(), "holds a symlink") {
				t.Errorf("ExtractToDir through an outside symlink: %v, want an error naming src, a symlink", err)
			}
			if got := walkAll(t, dir); !slices.Equal(got, []string{"src"}) {
				t.Errorf("the output dir holds %v, want only the symlink src", got)
			}
			if got := walkFiles(t, outside); !slices.Equal(got, []string{"config.json"}) {
				t.Errorf("written outside: %v", got)
			}

			if err := os.Remove(filepath.Join(dir, "src")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(outside, "config.json"), filepath.Join(dir, "config.json")); err != nil {
				t.Fatal(err)
			}
			if _, err := imageops.ExtractToDir(ctx, dig.String(), dir, imageops.ExtractOptions{StripTarget: true}, reg.opts()...); err != nil {
				t.Fatalf("ExtractToDir over a file symlink: %v", err)
			}
			if b, _ := os.ReadFile(filepath.Join(outside, "config.json")); string(b) != "mine" {
				t.Errorf("the file outside was overwritten: %q", b)
			}
			if fi, err := os.Lstat(filepath.Join(dir, "config.json")); err != nil || !fi.Mode().IsRegular() {
				t.Errorf("config.json: %v, %v; want a regular file replacing the symlink", fi, err)
			}
			for _, wf := range files {
				if got := testenv.FileSHA256(t, filepath.Join(dir, strip(wf.Name, true))); got != wf.SHA256 {
					t.Errorf("%s: sha256 %s, want %s", wf.Name, got, wf.SHA256)
				}
			}
		})
	})
}

func TestExtractErrors(t *testing.T) {
	forEachReg(t, func(t *testing.T, reg regSetup) {
		dig := reg.push(t, reg.Host, "extract/base:latest", testenv.BaseImage(t, testenv.OCI, testenv.Amd64))
		cases := []struct {
			name string
			ref  string
			eo   imageops.ExtractOptions
			is   error
			say  string
		}{
			{"missing image", reg.repo(reg.Host, "extract/missing:latest"), imageops.ExtractOptions{}, imageops.ErrNotFound, "extract/missing"},
			{"relative target", dig.String(), imageops.ExtractOptions{Target: "src/weights"}, imageops.ErrInvalid, "absolute"},
			{"root target", dig.String(), imageops.ExtractOptions{Target: "/"}, imageops.ErrInvalid, "absolute"},
			{"bad reference", "::", imageops.ExtractOptions{}, nil, "not an image reference"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				_, err := imageops.Extract(context.Background(), tc.ref, io.Discard, tc.eo, reg.opts()...)
				if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) || !strings.Contains(err.Error(), tc.say) {
					t.Errorf("error %v, want %v saying %q", err, tc.is, tc.say)
				}
			})
		}
		t.Run("cancelled", func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if _, err := imageops.Extract(ctx, dig.String(), io.Discard, imageops.ExtractOptions{}, reg.opts()...); !errors.Is(err, context.Canceled) {
				t.Errorf("error %v, want context.Canceled", err)
			}
		})
	})
}
