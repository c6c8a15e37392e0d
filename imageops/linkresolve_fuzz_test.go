package imageops_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

// fuzzOps decodes a fuzz input into tar entries: one per line, "name\x00target"
// a symlink, "name\x01target" a hard link, "name/" a directory, else a file.
func fuzzOps(data string) []tarEntry {
	var entries []tarEntry
	for _, line := range strings.Split(data, "\n") {
		if len(entries) == 16 {
			break
		}
		switch {
		case line == "" || len(line) > 200: // no name the real tree refuses (ENAMETOOLONG)
		case strings.Contains(line, "\x00"):
			name, to, _ := strings.Cut(line, "\x00")
			entries = append(entries, tarSymlink(name, to))
		case strings.Contains(line, "\x01"):
			name, to, _ := strings.Cut(line, "\x01")
			entries = append(entries, tarHardlink(name, to))
		case strings.HasSuffix(line, "/"):
			entries = append(entries, tarDir(line))
		default:
			entries = append(entries, tarReg(line, "x"))
		}
	}
	return entries
}

// fuzzTar writes entries as a tar; false when archive/tar cannot encode one.
func fuzzTar(entries []tarEntry) ([]byte, bool) {
	var b bytes.Buffer
	if testenv.WriteTar(&b, entries...) != nil {
		return nil, false
	}
	return b.Bytes(), true
}

// FuzzResolveLinks checks the tar policy's link resolution against the
// kernel: the weights, as one or two layers sharing a LinkSet, are
// unpacked into a temp dir (through os.Root, as an unpacker would: an
// entry replaces what is at its path) whenever RewriteTar accepts them;
// then no accepted entry may have been written through a symlink, and
// every symlink, resolved by filepath.EvalSymlinks on the real tree, must
// stay in the target. Absolute link targets are written relative to the
// link (the same place in the image), since the temp dir is not the root.
func FuzzResolveLinks(f *testing.F) {
	for _, seed := range []string{
		"model.bin\ns\x00.\ne\x00s/s/s/../../../etc/passwd",
		"model.bin\ns\x00.\ncode\x00s/..\ncode/predict.py",
		"model.bin\ne\x00s/s/s/../../../etc/passwd\ns\x00.",
		"src/weights/model.bin\nsrc/weights/v2/\nsrc/weights/latest\x00v2\nsrc/weights/cfg\x00latest/../model.bin\nsrc/weights/h\x01src/weights/latest/../model.bin",
		"a/\na/l\x00../model.bin\nmodel.bin\nh\x01a/l\nb\x00/src/weights/a/l",
		"d/\nd/up\x00../../weights/x\nx/\nx/y\x00../d\nz\x00x/y/up/..",
		"l1\x00l2\nl2\x00l3\nl3\x00model.bin\nmodel.bin",
		"a\x00b\nb\x00a",
		"abs\x00/src/weights/sub/../x\nsub\x00.",
	} {
		f.Add(seed, uint8(0))
		f.Add(seed, uint8(2))
	}
	f.Fuzz(func(t *testing.T, data string, split uint8) {
		entries := fuzzOps(data)
		if len(entries) == 0 {
			return
		}
		cut := int(split) % (len(entries) + 1)
		layers := [][]tarEntry{entries[:cut], entries[cut:]}
		links := imageops.NewLinkSet()
		var accepted [][]byte
		for _, layer := range layers {
			if len(layer) == 0 {
				continue
			}
			in, ok := fuzzTar(layer)
			if !ok {
				return
			}
			var out bytes.Buffer
			_, err := imageops.RewriteTar(&out, bytes.NewReader(in), imageops.TarPolicy{ModTime: policyTime, Links: links})
			if err != nil {
				return // refused or empty: nothing is published
			}
			accepted = append(accepted, out.Bytes())
			unpackAndCheck(t, accepted)
		}
	})
}

// unpackAndCheck unpacks the layers into a fresh dir and checks every entry
// and symlink against the real tree.
func unpackAndCheck(t *testing.T, layers [][]byte) {
	t.Helper()
	dir := t.TempDir()
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(realDir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	symlinks := map[string]string{} // path → target as in the tar
	for _, layer := range layers {
		for _, e := range listTarball(t, layer) {
			unpackEntry(t, root, realDir, e.Header, symlinks)
		}
	}
	// Two looks: with the directories dangling links point into created,
	// then, for the links still unresolved, with their last names created
	// as files too (which could hide a path another link goes through,
	// hence the first look).
	target := filepath.Join(realDir, "src", "weights")
	unresolved := map[string]bool{}
	for look := range 2 {
		if look == 0 {
			completeDirs(root, realDir)
		} else {
			completeFiles(root, realDir, unresolved)
		}
		for _, p := range symlinksUnder(t, realDir) {
			if look == 1 && !unresolved[p] {
				continue
			}
			real, ok := kernelResolve(p)
			if !ok {
				unresolved[p] = true
				continue
			}
			if real != target && !strings.HasPrefix(real, target+"/") {
				link, _ := os.Readlink(p)
				t.Fatalf("the policy accepted the symlink /%s -> %q, which the real tree resolves to %s, outside %s", rel(realDir, p), link, real, target)
			}
		}
	}
}

func symlinksUnder(t *testing.T, dir string) []string {
	t.Helper()
	var links []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeSymlink != 0 {
			links = append(links, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return links
}

func rel(root, p string) string {
	r, _ := filepath.Rel(root, p)
	return filepath.ToSlash(r)
}

// unpackEntry writes one accepted entry as an unpacker does, after
// checking that no directory on its way is a symlink.
func unpackEntry(t *testing.T, root *os.Root, realDir string, h *tar.Header, symlinks map[string]string) {
	t.Helper()
	name := strings.TrimSuffix(h.Name, "/")
	for i := range len(name) {
		if name[i] != '/' {
			continue
		}
		fi, err := os.Lstat(filepath.Join(realDir, name[:i]))
		switch {
		case err != nil || fi.IsDir():
		case fi.Mode()&fs.ModeSymlink != 0:
			t.Fatalf("the policy accepted %s, which goes through the symlink /%s", h.Name, name[:i])
		default: // a file where a directory is needed: unpackers replace it
			if err := root.Remove(name[:i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := root.MkdirAll(path.Dir(name), 0o755); err != nil {
		t.Fatalf("creating the directories of %s: %v", h.Name, err)
	}
	if fi, err := root.Lstat(name); err == nil && !(fi.IsDir() && h.Typeflag == tar.TypeDir) {
		if err := root.RemoveAll(name); err != nil {
			t.Fatal(err)
		}
	}
	delete(symlinks, name)
	typ, link := h.Typeflag, h.Linkname
	if to, ok := symlinks[link]; ok && typ == tar.TypeLink {
		// A hard link to a symlink is that symlink again (link(2) does not
		// follow it); written anew, as its absolute target is rewritten
		// for where it is.
		typ, link = tar.TypeSymlink, to
	}
	var err error
	switch typ {
	case tar.TypeDir:
		err = root.MkdirAll(name, 0o755)
	case tar.TypeReg:
		err = root.WriteFile(name, []byte("x"), 0o644)
	case tar.TypeSymlink:
		symlinks[name] = link
		if strings.HasPrefix(link, "/") { // the same place, from the link's directory
			link = strings.Repeat("../", strings.Count(name, "/")) + strings.TrimLeft(link, "/")
		}
		err = root.Symlink(link, name)
	case tar.TypeLink:
		err = root.Link(link, name)
	}
	if err != nil {
		t.Fatalf("unpacking %s (%c): %v", h.Name, h.Typeflag, err)
	}
}

// completeDirs creates the missing directories that dangling symlinks
// point into (through os.Root, so never outside the dir), for EvalSymlinks
// to resolve them; chains need a few rounds.
func completeDirs(root *os.Root, realDir string) {
	for range 4 {
		_ = filepath.WalkDir(realDir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.Type()&fs.ModeSymlink == 0 {
				return nil
			}
			if _, err := os.Stat(p); err == nil {
				return nil
			}
			link, err := os.Readlink(p)
			if err != nil {
				return nil
			}
			full := path.Dir(rel(realDir, p)) + "/" + link
			if base := path.Base(full); base != "." && base != ".." {
				full = full[:strings.LastIndex(full, "/")]
			}
			_ = root.MkdirAll(full, 0o755)
			return nil
		})
	}
}

// completeFiles creates, through each of the links, the file it points
// at when its directory exists (os.Root follows the link, never out of
// the dir).
func completeFiles(root *os.Root, realDir string, links map[string]bool) {
	for range 4 {
		for p := range links {
			if f, err := root.OpenFile(rel(realDir, p), os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
				f.Close()
			}
		}
	}
}

// kernelResolve resolves the symlink at p on the real tree with
// filepath.EvalSymlinks. When what it points at does not exist, the
// longest prefix of its path that does is resolved and the rest, which
// holds no link, applied lexically. ok is false when it cannot be
// resolved (a loop, a file or a dangling link on the way).
func kernelResolve(p string) (string, bool) {
	if real, err := filepath.EvalSymlinks(p); err == nil {
		return real, true
	}
	link, err := os.Readlink(p)
	if err != nil {
		return "", false
	}
	comps := strings.Split(filepath.Dir(p)+"/"+link, "/") // p's directories are real (WalkDir does not follow links)
	for i := len(comps) - 1; i >= 1; i-- {
		prefix := strings.Join(comps[:i], "/")
		if prefix == "" {
			prefix = "/"
		}
		real, err := filepath.EvalSymlinks(prefix)
		if err != nil {
			continue
		}
		if _, err := os.Lstat(filepath.Join(real, comps[i])); !errors.Is(err, fs.ErrNotExist) {
			return "", false // it exists and does not resolve: a loop, a file, a dangling link
		}
		return filepath.Join(append([]string{real}, comps[i:]...)...), true
	}
	return "", false
}
