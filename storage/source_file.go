package storage

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"strings"

	"github.com/r8im/r8im/internal/dirtar"
)

// openFileURL opens file:///abs/path (or file://localhost/abs/path).
func (s *Sources) openFileURL(raw string) (io.ReadCloser, int64, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, 0, fmt.Errorf("opening %s: %w: not a valid URL (a literal '%%' must be written %%25); use file:///abs/path or a plain path", raw, ErrInvalidURL)
	case u.Host != "" && u.Host != "localhost":
		return nil, 0, fmt.Errorf("opening %s: %w: file URLs need three slashes and an absolute path, as in file:///data/weights.tar", raw, ErrInvalidURL)
	case u.RawQuery != "" || u.Fragment != "":
		return nil, 0, fmt.Errorf("opening %s: %w: file URLs take no query or fragment; write '?' as %%3F and '#' as %%23", raw, ErrInvalidURL)
	case u.Path == "" || u.Path[0] != '/':
		return nil, 0, fmt.Errorf("opening %s: %w: file URLs need an absolute path, as in file:///data/weights.tar", raw, ErrInvalidURL)
	}
	return s.openFile(raw, u.Path)
}

// openFile opens a local file; raw names it in errors. Regular files and
// pipes are read; directories and devices are refused.
func (s *Sources) openFile(raw, path string) (io.ReadCloser, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, 0, fmt.Errorf("opening %s: %w: no such file; check the path: %w", raw, ErrNotFound, err)
		case errors.Is(err, fs.ErrPermission):
			return nil, 0, fmt.Errorf("opening %s: %w: the file is not readable by this process; fix its permissions: %w", raw, ErrDenied, err)
		default:
			return nil, 0, fmt.Errorf("opening %s: %w", raw, err)
		}
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, fmt.Errorf("opening %s: %w", raw, err)
	}
	switch m := st.Mode(); {
	case m.IsDir() && strings.HasSuffix(raw, "/"):
		_ = f.Close()
		return openDir(raw, path)
	case m.IsDir():
		_ = f.Close()
		return nil, 0, fmt.Errorf("opening %s: %w: it is a directory; end the URL with / to publish every file under it (%s/), or give the path of a weights tarball", raw, ErrInvalidURL, raw)
	case m&fs.ModeNamedPipe != 0:
		return verify(f, raw, -1, nil), -1, nil
	case !m.IsRegular():
		_ = f.Close()
		return nil, 0, fmt.Errorf("opening %s: %w: not a regular file (%s); give the path of a weights tarball", raw, ErrInvalidURL, m.Type())
	}
	return verify(f, raw, st.Size(), nil), st.Size(), nil
}

// openDir serves a directory (a URL ending in /) as a tar of its entries in
// path order (internal/dirtar); its size is unknown (-1) until it is read.
// A file that changes while it is read fails the stream for good.
func openDir(raw, path string) (io.ReadCloser, int64, error) {
	rc, err := dirtar.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("opening %s: %w", raw, err)
	}
	return rc, -1, nil
}
