package testenv_test

import (
	"archive/tar"
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/r8im/r8im/internal/testenv"
)

// Tar writes each entry as spelled, with the defaults filled in, and
// TarMembers reads them back as archive/tar sees them.
func TestTarRoundTrip(t *testing.T) {
	long := "src/weights/" + strings.Repeat("long", 40) + ".bin"
	b := testenv.Tar(t,
		testenv.Entry{Name: "pax_global_header", Type: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": "git archive"}},
		testenv.Dir("src/weights/"),
		testenv.File("src/weights/model.bin", "weights"),
		testenv.Symlink("src/weights/latest", "model.bin"),
		testenv.Hardlink("src/weights/copy", "src/weights/model.bin"),
		testenv.Entry{Name: "/etc/../dev/null", Type: tar.TypeChar, Devmajor: 1, Devminor: 3, Format: tar.FormatGNU},
		testenv.Entry{Name: long, Body: "x", Mode: 0o6755, Uid: 1000, Gid: 1001, Uname: "trainer",
			PAXRecords: map[string]string{"SCHILY.xattr.user.origin": "laptop"}},
	)
	var got []string
	for _, m := range testenv.TarMembers(t, bytes.NewReader(b)) {
		got = append(got, fmt.Sprintf("%c %s %q %s %o %d:%d %s %d,%d %v %s", m.Typeflag, m.Name, m.Body, m.Linkname, m.Mode,
			m.Uid, m.Gid, m.Uname, m.Devmajor, m.Devminor, m.ModTime.Equal(testenv.BaseCreated), m.PAXRecords["SCHILY.xattr.user.origin"]))
	}
	want := []string{
		`g pax_global_header ""  0 0:0  0,0 false `,
		`5 src/weights/ ""  755 0:0  0,0 true `,
		`0 src/weights/model.bin "weights"  644 0:0  0,0 true `,
		`2 src/weights/latest "" model.bin 644 0:0  0,0 true `,
		`1 src/weights/copy "" src/weights/model.bin 644 0:0  0,0 true `,
		`3 /etc/../dev/null ""  644 0:0  1,3 true `,
		`0 ` + long + ` "x"  6755 1000:1001 trainer 0,0 true laptop`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// PAXSparse is what archive/tar's Writer refuses to write: a PAX sparse
// file that its Reader expands to a terabyte.
func TestTarPAXSparse(t *testing.T) {
	b := testenv.Tar(t, testenv.File("a", "a"), testenv.PAXSparse("src/weights/huge.bin"), testenv.File("b", "b"))
	tr := tar.NewReader(bytes.NewReader(b))
	var got []string
	for range 3 {
		h, err := tr.Next()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %d %s", h.Name, h.Size, h.PAXRecords["GNU.sparse.major"]))
	}
	if want := "a 1 |src/weights/huge.bin 1099511627776 1|b 1 "; strings.Join(got, "|") != want {
		t.Errorf("entries %q, want %q", strings.Join(got, "|"), want)
	}
}

// WriteTar returns archive/tar's refusal; ReadTar names where a stream
// stops making sense.
func TestTarErrors(t *testing.T) {
	var buf bytes.Buffer
	if err := testenv.WriteTar(&buf, testenv.Symlink("l", "a\x00b")); err == nil || !strings.Contains(err.Error(), `writing "l"`) {
		t.Errorf("WriteTar of a NUL in a link target = %v; want archive/tar's refusal naming the entry", err)
	}
	good := testenv.Tar(t, testenv.File("a", strings.Repeat("a", 2000)))
	if m, err := testenv.ReadTar(bytes.NewReader(good[:1000])); err == nil || len(m) != 0 || !strings.Contains(err.Error(), `reading "a"`) {
		t.Errorf("ReadTar of a cut tar = %d entries, %v; want an error naming the entry", len(m), err)
	}
}
