// Package dirtar writes a directory as an uncompressed tar stream, in path
// order, without following links or leaving the directory: the weights
// directory inputs of r8im (`affix --dir`) and of workers (file:///dir/).
package dirtar

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"syscall"
)

// ErrChanged: a file changed while it was read. Retrying cannot produce
// the tree the caller asked for, so it says it is permanent.
var ErrChanged error = changedError{}

type changedError struct{}

func (changedError) Error() string   { return "changed while it was read" }
func (changedError) Permanent() bool { return true }

// Open streams dir as a tar: what Write writes, through a pipe, on every
// call (a retried upload reads it again).
func Open(dir string) (io.ReadCloser, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		defer root.Close()
		pw.CloseWithError(Write(pw, root))
	}()
	return pr, nil
}

// Write writes root's entries to w as a tar, paths relative to root, in
// Walk's order, so the same tree gives the same bytes whatever order the
// filesystem lists it in. Regular files, directories and symlinks (stored
// as links, never followed) are written with their modes and sizes;
// anything else (sockets, devices, fifos) as its header alone, for the
// caller's policy to refuse by name. Owners are left out; times are the
// files' own (callers normalise them).
func Write(w io.Writer, root *os.Root) error {
	tw := tar.NewWriter(w)
	buf := make([]byte, 1<<20)
	err := Walk(root, func(hdr *tar.Header, info os.FileInfo) error {
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		return copyFile(tw, root, hdr.Name, info.Size(), buf)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// Walk calls fn with the tar header of each entry under root, in path
// order (each directory's entries sorted by name, as fs.WalkDir lists
// them; a directory's name ends in '/'), and the entry's own FileInfo
// (Lstat: links are not followed).
func Walk(root *os.Root, fn func(hdr *tar.Header, info os.FileInfo) error) error {
	return fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("reading the weights directory: %w", err)
		}
		if p == "." {
			return nil
		}
		info, err := root.Lstat(p)
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = root.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		hdr.Name, hdr.Format, hdr.Uname, hdr.Gname = p, tar.FormatPAX, "", ""
		if info.IsDir() {
			hdr.Name = p + "/"
		}
		return fn(hdr, info)
	})
}

func copyFile(w io.Writer, root *os.Root, p string, size int64, buf []byte) error {
	f, err := root.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.CopyBuffer(w, io.LimitReader(f, size), buf)
	if err != nil {
		return fmt.Errorf("reading %s: %w", p, err)
	}
	var one [1]byte
	if k, _ := f.Read(one[:]); n != size || k != 0 {
		return fmt.Errorf("%s in the weights directory %w (%d bytes listed, at least %d there); publish from a directory nothing writes to", p, ErrChanged, size, n+int64(k))
	}
	return nil
}

// Size is the total size of the regular files under dir.
func Size(dir string) (int64, error) {
	var total int64
	err := fs.WalkDir(os.DirFS(dir), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			total += info.Size()
		}
		return nil
	})
	if err != nil {
		return 0, errors.Join(fmt.Errorf("reading the weights directory %s", dir), err)
	}
	return total, nil
}

// Entry is one entry of a directory tree, as List gives it.
type Entry struct {
	Header *tar.Header // as Write writes it
	Info   os.FileInfo // Lstat's
}

// List returns dir's entries in Walk's order, without reading any file.
func List(dir string) ([]Entry, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening the weights directory: %w", err)
	}
	defer root.Close()
	var out []Entry
	err = Walk(root, func(h *tar.Header, info os.FileInfo) error {
		out = append(out, Entry{Header: h, Info: info})
		return nil
	})
	return out, err
}

// OpenFile opens the regular file name (a path relative to dir, as List
// gives it) without leaving dir or following a symlink out of it.
func OpenFile(dir, name string) (*os.File, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening the weights directory: %w", err)
	}
	defer root.Close()
	f, err := root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("reading the weights directory: %w", err)
	}
	return f, nil
}

// FileID identifies a local file's content by its path, size, mtime and
// inode (a layer-digest cache key): a file rewritten in place changes its
// mtime, a file replaced by another its inode.
func FileID(path string, info os.FileInfo) string {
	id := "file:" + path + "|" + strconv.FormatInt(info.Size(), 10) + "|" + strconv.FormatInt(info.ModTime().UnixNano(), 10)
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		id += "|" + strconv.FormatUint(st.Dev, 10) + ":" + strconv.FormatUint(st.Ino, 10)
	}
	return id
}
