package imageops

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// extractSink writes the taken entries: as a tar, or into a directory.
type extractSink interface {
	dir(name string, h *tar.Header) error
	file(name string, h *tar.Header, r io.Reader) error
	symlink(name, target string, inside bool, h *tar.Header) error
	hardlink(name, target string, h *tar.Header) error
}

// tarSink writes the entries as a tar stream, each header rebuilt from the
// layer's: permission bits only, owner and time kept.
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

// dirSink writes the entries under root (ExtractToDir's staging dir) and
// applies directory modes and times only in finish.
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
