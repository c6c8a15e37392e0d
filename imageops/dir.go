package imageops

import (
	"fmt"
	"io"

	"github.com/r8im/r8im/internal/dirtar"
)

// DirOpener serves directory dir as the weights tarball: an uncompressed
// tar of its entries, paths relative to dir, written while it is read (no
// temp file). Entries come in path order (each directory's entries sorted
// by name), so the same tree gives the same layer whatever order the
// filesystem lists it in; owners and times are normalised by the tar policy
// as for any tarball. Regular files, directories and symlinks are taken;
// anything else (sockets, devices, fifos) is refused by the policy, by
// name. Reads stay inside dir: a symlink is stored as a link, never
// followed. A file whose size changes while it is read fails the layer for
// good. Every call walks the directory again, as a retried upload needs.
func DirOpener(dir string) Opener {
	return func() (io.ReadCloser, error) {
		rc, err := dirtar.Open(dir)
		if err != nil {
			return nil, fmt.Errorf("opening the weights directory: %w", err)
		}
		return rc, nil
	}
}

// DirSize is the total size of the regular files under dir, for progress.
func DirSize(dir string) (int64, error) { return dirtar.Size(dir) }
