package imageops

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
)

// DirOpener serves directory dir as the weights tarball: an uncompressed
// tar of its entries, paths relative to dir, written while it is read (no
// temp file, nothing held in memory but a copy buffer). Entries come in
// path order (each directory's entries sorted by name), so the same tree
// gives the same layer whatever order the filesystem lists it in; owners
// and times are normalised afterwards by the tar policy, as for any
// tarball. Regular files, directories and symlinks are taken; anything
// else (sockets, devices, fifos) is written as-is and refused by the policy,
// by name. Reads stay inside dir (os.Root): a symlink is stored as a link,
// never followed. A file whose size changes while it is read fails the
// layer. Every call walks the directory again, as a retried upload needs.
func DirOpener(dir string) Opener {
	return func() (io.ReadCloser, error) {
		root, err := os.OpenRoot(dir)
		if err != nil {
			return nil, fmt.Errorf("opening the weights directory: %w", err)
		}
		pr, pw := io.Pipe()
		go func() {
			defer root.Close()
			pw.CloseWithError(writeDirTar(pw, root))
		}()
		return pr, nil
	}
}

// DirSize is the total size of the regular files under dir, for progress.
func DirSize(dir string) (int64, error) {
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
	return total, err
}

func writeDirTar(w io.Writer, root *os.Root) error {
	tw := tar.NewWriter(w)
	buf := make([]byte, 1<<20)
	err := fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
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
		hdr.Name, hdr.Format = p, tar.FormatPAX
		if info.IsDir() {
			hdr.Name = p + "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		return copyFile(tw, root, p, info.Size(), buf)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// errFileChanged: a file of a weights directory changed while it was read.
var errFileChanged = errors.New("changed while it was read")

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
		return permanent(fmt.Errorf("%s in the weights directory %w (%d bytes listed, %d read); publish from a directory nothing writes to", path.Clean(p), errFileChanged, size, n))
	}
	return nil
}
