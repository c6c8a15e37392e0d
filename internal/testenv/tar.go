package testenv

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"testing"
)

// Entry is one entry of a test tarball. Zero fields take the defaults of a
// synthetic layer: a regular file, mode 0644 (0755 for a directory), owner
// 0:0, mtime BaseCreated, PAX format. Any header archive/tar's Writer
// accepts can be spelled out (absolute and ".." names, devices, long names,
// PAX records); PAXSparse writes what it refuses.
type Entry struct {
	Name     string
	Type     byte // tar.TypeReg when zero
	Body     string
	Linkname string
	Mode     int64 // default 0644, 0755 for directories
	Uid, Gid int
	// Uname and Gname are the owner names, "" for none.
	Uname, Gname string
	// Devmajor and Devminor are a character or block device's numbers.
	Devmajor, Devminor int64
	// PAXRecords are extended header records ("SCHILY.xattr.<name>" for
	// an xattr); for a tar.TypeXGlobalHeader entry, all it holds.
	PAXRecords map[string]string
	Format     tar.Format // tar.FormatPAX when zero; tar.FormatGNU for GNU-only types

	raw []byte // blocks written as they are, instead of a header (PAXSparse)
}

// File is a regular file entry.
func File(name, body string) Entry { return Entry{Name: name, Body: body} }

// Dir is a directory entry.
func Dir(name string) Entry { return Entry{Name: name, Type: tar.TypeDir} }

// Symlink is a symbolic link entry.
func Symlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Linkname: target}
}

// Hardlink is a hard link entry to an earlier entry of the same layer.
func Hardlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeLink, Linkname: target}
}

// Whiteout deletes name from lower layers (OCI .wh.<name>).
func Whiteout(name string) Entry {
	return File(path.Join(path.Dir(name), ".wh."+path.Base(name)), "")
}

// Opaque hides the lower layers' contents of dir (OCI .wh..wh..opq).
func Opaque(dir string) Entry { return File(path.Join(dir, ".wh..wh..opq"), "") }

// PAXSparse is a PAX 1.0 sparse file (GNU.sparse.* records) of 1 TiB
// holding one byte at its end: tar.Reader expands it into a terabyte of
// zeros. archive/tar's Writer drops those records, so its blocks are
// written by hand.
func PAXSparse(name string) Entry {
	var recs []byte
	for _, kv := range [][2]string{{"GNU.sparse.major", "1"}, {"GNU.sparse.minor", "0"}, {"GNU.sparse.name", name}, {"GNU.sparse.realsize", "1099511627776"}} {
		recs = append(recs, paxRecord(kv[0], kv[1])...)
	}
	raw := append(rawHeader("PaxHeaders/"+name, tar.TypeXHeader, int64(len(recs))), padBlock(recs)...)
	sparseMap := padBlock([]byte("1\n1099511627775\n1\n")) // one data byte at offset 1 TiB - 1
	raw = append(raw, rawHeader(name, tar.TypeReg, int64(len(sparseMap))+1)...)
	return Entry{Name: name, raw: append(raw, padBlock(append(sparseMap, 'x'))...)}
}

// WriteTar writes entries, in order, as a tar to w (no implied parent
// directories); the error is archive/tar's when it cannot encode one.
func WriteTar(w io.Writer, entries ...Entry) error {
	tw := tar.NewWriter(w)
	for _, e := range entries {
		if err := writeEntry(tw, w, e); err != nil {
			return fmt.Errorf("writing %q: %w", e.Name, err)
		}
	}
	return tw.Close()
}

// Tar is the uncompressed tar of entries (WriteTar), failing the test if
// one cannot be written.
func Tar(t testing.TB, entries ...Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteTar(&buf, entries...); err != nil {
		t.Fatalf("building a test tarball: %v", err)
	}
	return buf.Bytes()
}

func writeEntry(tw *tar.Writer, w io.Writer, e Entry) error {
	if e.raw != nil {
		if err := tw.Flush(); err != nil {
			return err
		}
		_, err := w.Write(e.raw)
		return err
	}
	if e.Type == tar.TypeXGlobalHeader { // archive/tar takes nothing else
		return tw.WriteHeader(&tar.Header{Typeflag: e.Type, Name: e.Name, PAXRecords: e.PAXRecords})
	}
	h := &tar.Header{Typeflag: e.Type, Name: e.Name, Linkname: e.Linkname, Mode: e.Mode, Size: int64(len(e.Body)),
		Uid: e.Uid, Gid: e.Gid, Uname: e.Uname, Gname: e.Gname, Devmajor: e.Devmajor, Devminor: e.Devminor,
		ModTime: BaseCreated, PAXRecords: e.PAXRecords, Format: e.Format}
	if h.Typeflag == 0 {
		h.Typeflag = tar.TypeReg
	}
	if h.Mode == 0 {
		h.Mode = 0o644
		if h.Typeflag == tar.TypeDir {
			h.Mode = 0o755
		}
	}
	if h.Format == tar.FormatUnknown {
		h.Format = tar.FormatPAX
	}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err := io.WriteString(tw, e.Body)
	return err
}

// rawHeader is a ustar header block, for entries archive/tar will not write.
func rawHeader(name string, typ byte, size int64) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:], "0000644\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:], fmt.Sprintf("%011o\x00", size))
	copy(b[136:], fmt.Sprintf("%011o\x00", 0))
	b[156] = typ
	copy(b[257:], "ustar\x0000")
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// paxRecord is "<len> key=value\n", len counting itself.
func paxRecord(k, v string) []byte {
	rest := " " + k + "=" + v + "\n"
	n := len(rest) + 1
	for len(strconv.Itoa(n))+len(rest) != n {
		n++
	}
	return []byte(strconv.Itoa(n) + rest)
}

func padBlock(b []byte) []byte {
	return append(b, make([]byte, (512-len(b)%512)%512)...)
}

// TarMember is one entry of a tar as archive/tar reads it: the header and
// the body.
type TarMember struct {
	*tar.Header
	Body string
}

// ReadTar reads every entry of the tar stream r.
func ReadTar(r io.Reader) ([]TarMember, error) {
	var out []TarMember
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("reading the tar after %d entries: %w", len(out), err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			return out, fmt.Errorf("reading %q: %w", h.Name, err)
		}
		out = append(out, TarMember{h, string(body)})
	}
}

// TarMembers is ReadTar, failing the test on an error.
func TarMembers(t testing.TB, r io.Reader) []TarMember {
	t.Helper()
	m, err := ReadTar(r)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
