package imageops_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/r8im/r8im/imageops"
	"github.com/r8im/r8im/internal/testenv"
)

var policyTime = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// The test tarballs are testenv's (testenv.Tar), under short names.
type tarEntry = testenv.Entry

var (
	tarReg      = testenv.File
	tarDir      = testenv.Dir
	tarSymlink  = testenv.Symlink
	tarHardlink = testenv.Hardlink
)

// makeTar is testenv.Tar with an owner name on every entry ("trainer",
// unless one is set): RewriteTar must drop it.
func makeTar(tb testing.TB, entries ...tarEntry) []byte {
	tb.Helper()
	owned := make([]tarEntry, len(entries))
	for i, e := range entries {
		if e.Uname == "" {
			e.Uname, e.Gname = "trainer", "trainer"
		}
		owned[i] = e
	}
	return testenv.Tar(tb, owned...)
}

// unterminated is tarball b cut off after its last entry: without the two
// zero blocks that end an archive (archive/tar's Writer adds just those).
func unterminated(b []byte) []byte { return b[:len(b)-1024] }

// paxSparseTar holds src/weights/model.bin, then a PAX (1.0) sparse file of
// one TiB: archive/tar reads it as a terabyte of zeros.
func paxSparseTar(tb testing.TB) []byte {
	tb.Helper()
	return makeTar(tb, tarReg("src/weights/model.bin", "w"), testenv.PAXSparse("src/weights/huge.bin"))
}

// readEntry is one entry of a rewritten tarball.
type readEntry = testenv.TarMember

func listTarball(tb testing.TB, b []byte) []readEntry {
	tb.Helper()
	return testenv.TarMembers(tb, bytes.NewReader(b))
}

func names(entries []readEntry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.Name)
	}
	return out
}

func TestRewriteTarRefuses(t *testing.T) {
	model := tarReg("src/weights/model.bin", "weights")
	tests := []struct {
		name    string
		policy  imageops.TarPolicy
		entries []tarEntry
		entry   string // the refused entry
		reason  string // a part of the reason
	}{
		{"dotdot leaving the target", imageops.TarPolicy{},
			[]tarEntry{model, tarReg("src/weights/../../etc/passwd", "x")}, "src/weights/../../etc/passwd", climbs},
		{"dotdot in a relative tarball", imageops.TarPolicy{},
			[]tarEntry{tarReg("model.bin", "w"), tarReg("../predict.py", "x")}, "../predict.py", climbs},
		{"dotdot in a relative tarball with allow-outside", imageops.TarPolicy{AllowOutsideTarget: true},
			[]tarEntry{tarReg("model.bin", "w"), tarReg("../predict.py", "x")}, "../predict.py", climbs},
		{"dotdot leaving the root with allow-outside", imageops.TarPolicy{AllowOutsideTarget: true},
			[]tarEntry{tarReg("model.bin", "w"), tarReg("../../../../x", "x")}, "../../../../x", climbs},
		{"dotdot leaving the root in an absolute path", imageops.TarPolicy{AllowOutsideTarget: true},
			[]tarEntry{model, tarReg("/../etc/passwd", "x")}, "/../etc/passwd", climbs},
		// Issue 15: these used to be cleaned into /src/weights/etc/cron.d/x
		// and /src/weights/model.bin, silently.
		{"dotdot as the first entry", imageops.TarPolicy{},
			[]tarEntry{tarReg("src/weights/../../etc/cron.d/x", "x")}, "src/weights/../../etc/cron.d/x", climbs},
		{"dotdot after a relative entry", imageops.TarPolicy{},
			[]tarEntry{tarReg("model.bin", "w"), tarReg("src/weights/../../etc/cron.d/x", "x")}, "src/weights/../../etc/cron.d/x", climbs},
		{"dotdot back to the top", imageops.TarPolicy{},
			[]tarEntry{tarReg("a.bin", "w"), tarReg("sub/../model.bin", "x")}, "sub/../model.bin", climbs},
		{"hard link climbing", imageops.TarPolicy{},
			[]tarEntry{model, tarHardlink("src/weights/h", "src/weights/../../etc/passwd")}, "src/weights/h", "whose path " + climbs},
		{"absolute path outside the target", imageops.TarPolicy{},
			[]tarEntry{model, tarReg("/etc/passwd", "x")}, "/etc/passwd", "absolute path outside the target /src/weights"},
		{"outside the target", imageops.TarPolicy{},
			[]tarEntry{model, tarReg("src/predict.py", "x")}, "src/predict.py", "outside the target /src/weights"},
		{"mixed layouts", imageops.TarPolicy{},
			[]tarEntry{tarReg("model.bin", "w"), tarReg("src/weights/other.bin", "x")}, "src/weights/other.bin", "mixes layouts"},
		{"absolute symlink outside", imageops.TarPolicy{},
			[]tarEntry{model, tarSymlink("src/weights/passwd", "/etc/passwd")}, "src/weights/passwd", "resolves to /etc/passwd outside the target"},
		{"relative symlink outside", imageops.TarPolicy{},
			[]tarEntry{model, tarSymlink("src/weights/code", "../predict.py")}, "src/weights/code", "resolves to /src/predict.py outside the target"},
		{"relative symlink outside in a relative tarball", imageops.TarPolicy{},
			[]tarEntry{tarReg("model.bin", "w"), tarSymlink("sub/up", "../../..")}, "sub/up", "resolves to / outside the target"},
		{"symlink with an empty target", imageops.TarPolicy{},
			[]tarEntry{model, tarSymlink("src/weights/nothing", "")}, "src/weights/nothing", "empty target"},
		{"hard link outside", imageops.TarPolicy{},
			[]tarEntry{model, tarHardlink("src/weights/passwd", "etc/passwd")}, "src/weights/passwd", "outside the target"},
		{"hard link to a later entry", imageops.TarPolicy{},
			[]tarEntry{model, tarHardlink("src/weights/copy", "src/weights/later.bin"), tarReg("src/weights/later.bin", "x")},
			"src/weights/copy", "not an earlier entry"},
		{"hard link to a directory", imageops.TarPolicy{},
			[]tarEntry{model, tarDir("src/weights/sub/"), tarHardlink("src/weights/copy", "src/weights/sub")}, "src/weights/copy", "directory"},
		{"character device", imageops.TarPolicy{},
			[]tarEntry{model, {Name: "src/weights/null", Type: tar.TypeChar}}, "src/weights/null", "character device"},
		{"block device", imageops.TarPolicy{},
			[]tarEntry{model, {Name: "src/weights/sda", Type: tar.TypeBlock}}, "src/weights/sda", "block device"},
		{"fifo", imageops.TarPolicy{},
			[]tarEntry{model, {Name: "src/weights/pipe", Type: tar.TypeFifo}}, "src/weights/pipe", "fifo"},
		{"GNU sparse file", imageops.TarPolicy{},
			[]tarEntry{model, {Name: "src/weights/sparse.bin", Type: tar.TypeGNUSparse, Format: tar.FormatGNU}}, "src/weights/sparse.bin", "GNU sparse"},
		{"PAX sparse file", imageops.TarPolicy{}, nil, // paxSparseTar
			"src/weights/huge.bin", "sparse file"},
		{"contiguous file", imageops.TarPolicy{},
			[]tarEntry{model, {Name: "src/weights/cont.bin", Type: tar.TypeCont, Body: "abc"}}, "src/weights/cont.bin", "unsupported entry type"},
		{"whiteout", imageops.TarPolicy{},
			[]tarEntry{model, tarReg("src/weights/.wh.old.bin", "")}, "src/weights/.wh.old.bin", "whiteout"},
		{"opaque whiteout", imageops.TarPolicy{},
			[]tarEntry{model, tarReg("src/weights/.wh..wh..opq", "")}, "src/weights/.wh..wh..opq", "whiteout"},
		{"name too long", imageops.TarPolicy{MaxNameLength: 40},
			[]tarEntry{model, tarReg("src/weights/"+strings.Repeat("x", 40), "x")}, "src/weights/" + strings.Repeat("x", 40), "over the limit of 40"},
		{"too many entries", imageops.TarPolicy{MaxEntries: 2},
			[]tarEntry{model, tarReg("src/weights/b", "b"), tarReg("src/weights/c", "c")}, "src/weights/c", "more than 2 entries"},
		{"empty name", imageops.TarPolicy{},
			[]tarEntry{model, tarReg("", "x")}, "", "empty name"},
		{"file replacing the target", imageops.TarPolicy{},
			[]tarEntry{model, tarReg("src/weights", "x")}, "src/weights", "replace the directory /src/weights"},
		{"symlink replacing a parent", imageops.TarPolicy{},
			[]tarEntry{model, tarSymlink("src", "/tmp")}, "src", "replace the directory /src"},
		{"entry through a symlink", imageops.TarPolicy{},
			[]tarEntry{model, tarSymlink("src/weights/here", "."), tarReg("src/weights/here/x", "x")}, "src/weights/here/x",
			"goes through /src/weights/here, a symlink earlier in the weights, so it would be written at /src/weights/x"},
		// Issue 12: links resolved through links, as the kernel does.
		{"symlink through a symlink to /etc/passwd", imageops.TarPolicy{},
			[]tarEntry{model, tarSymlink("src/weights/s", "."), tarSymlink("src/weights/e", "s/s/s/../../../etc/passwd")}, "src/weights/e",
			"resolves to /etc/passwd (following the symlink /src/weights/s) outside the target /src/weights"},
		{"symlink through a symlink to the code", imageops.TarPolicy{},
			[]tarEntry{model, tarSymlink("src/weights/s", "."), tarSymlink("src/weights/code", "s/..")}, "src/weights/code",
			"resolves to /src (following the symlink /src/weights/s) outside the target"},
		{"symlink made escaping by a later symlink", imageops.TarPolicy{},
			[]tarEntry{model, tarSymlink("src/weights/e", "s/s/s/../../../etc/passwd"), tarSymlink("src/weights/s", ".")}, "src/weights/e",
			"once the later entries of the weights are in place"},
		{"symlink escaping with allow-outside", imageops.TarPolicy{AllowOutsideTarget: true},
			[]tarEntry{model, tarSymlink("src/weights/s", "."), tarSymlink("src/weights/e", "s/../../../..")}, "src/weights/e", "climbs above the image root"},
		{"symlink to itself", imageops.TarPolicy{},
			[]tarEntry{model, tarSymlink("src/weights/self", "self")}, "src/weights/self", "more than 40 symlinks"},
		{"symlink loop", imageops.TarPolicy{},
			[]tarEntry{model, tarSymlink("src/weights/a", "b"), tarSymlink("src/weights/b", "c"), tarSymlink("src/weights/c", "a")}, "src/weights/c", "more than 40 symlinks"},
		{"entry through a symlink by its raw name", imageops.TarPolicy{},
			[]tarEntry{model, tarSymlink("src/weights/s", "."), tarReg("src/weights/s/../x", "x")}, "src/weights/s/../x", "so it would be written at /src/x"},
		{"symlink chain of 41", imageops.TarPolicy{}, chain(41), "src/weights/l1", "more than 40 symlinks"},
		{"file over a symlink", imageops.TarPolicy{},
			[]tarEntry{model, tarSymlink("src/weights/l", "model.bin"), tarReg("src/weights/l", "x")}, "src/weights/l", "made /src/weights/l a symlink"},
		{"directory over a symlink", imageops.TarPolicy{},
			[]tarEntry{model, tarSymlink("src/weights/l", "model.bin"), tarDir("src/weights/l/")}, "src/weights/l/", "does not write over symlinks"},
		{"hard link to itself", imageops.TarPolicy{},
			[]tarEntry{model, tarHardlink("src/weights/model.bin", "src/weights/model.bin")}, "src/weights/model.bin", "the link itself, beneath it or one of its directories"},
		{"hard link to its directory's place", imageops.TarPolicy{},
			[]tarEntry{model, tarReg("src/weights/a", "a"), tarHardlink("src/weights/a/0", "src/weights/a")}, "src/weights/a/0", "made /src/weights/a a regular file, so nothing can go beneath it"},
		{"hard link through a symlink out", imageops.TarPolicy{},
			[]tarEntry{model, tarSymlink("src/weights/s", "."), tarHardlink("src/weights/h", "src/weights/s/../predict.py")}, "src/weights/h",
			"resolves to /src/predict.py (following the symlink /src/weights/s) outside the target"},
		{"hard link to a symlink that escapes from its new place", imageops.TarPolicy{},
			[]tarEntry{model, tarDir("src/weights/a/"), tarSymlink("src/weights/a/l", "../model.bin"), tarHardlink("src/weights/h", "src/weights/a/l")}, "src/weights/h",
			`hard link to the symlink /src/weights/a/l, so a symlink to "../model.bin", which resolves to /src/model.bin outside`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.policy.ModTime = policyTime
			in := makeTar(t, tc.entries...)
			if tc.entries == nil {
				in = paxSparseTar(t)
			}
			var out bytes.Buffer
			_, err := imageops.RewriteTar(&out, bytes.NewReader(in), tc.policy)
			var pe *imageops.PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("RewriteTar = %v, want a *PolicyError", err)
			}
			if len(pe.Violations) != 1 {
				t.Fatalf("violations = %+v, want one", pe.Violations)
			}
			v := pe.Violations[0]
			if v.Entry != tc.entry || !strings.Contains(v.Reason, tc.reason) {
				t.Errorf("violation = %+v, want entry %q with a reason containing %q", v, tc.entry, tc.reason)
			}
			if !strings.Contains(err.Error(), v.Reason) {
				t.Errorf("error %q does not give the reason", err)
			}
		})
	}
}

const climbs = `climbs out of its first directory through ".."`

// chain is n symlinks l1 -> l2 -> … -> ln -> model.bin, written last
// first so that each resolves when it comes.
func chain(n int) []tarEntry {
	entries := []tarEntry{tarReg("src/weights/model.bin", "w")}
	for i := n; i >= 1; i-- {
		to := fmt.Sprintf("l%d", i+1)
		if i == n {
			to = "model.bin"
		}
		entries = append(entries, tarSymlink(fmt.Sprintf("src/weights/l%d", i), to))
	}
	return entries
}

func TestRewriteTarListsEveryViolation(t *testing.T) {
	in := makeTar(t,
		tarReg("src/weights/model.bin", "w"),
		tarReg("src/predict.py", "code"), // after this one nothing more is written
		tarReg("src/weights/ok.bin", "ok"),
		tarEntry{Name: "src/weights/null", Type: tar.TypeChar},
		tarReg("src/weights/.wh.config.json", ""),
		tarSymlink("src/weights/etc", "/etc"),
	)
	var out bytes.Buffer
	_, err := imageops.RewriteTar(&out, bytes.NewReader(in), imageops.TarPolicy{ModTime: policyTime})
	var pe *imageops.PolicyError
	if !errors.As(err, &pe) {
		t.Fatalf("RewriteTar = %v, want a *PolicyError", err)
	}
	var got []string
	for _, v := range pe.Violations {
		got = append(got, v.Entry)
	}
	want := []string{"src/predict.py", "src/weights/null", "src/weights/.wh.config.json", "src/weights/etc"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("violations for %v, want %v", got, want)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "the weights tarball has 4 entries r8im will not write:\n  - src/predict.py: ") {
		t.Errorf("error starts %q", msg)
	}
	for _, e := range want {
		if !strings.Contains(msg, "\n  - "+e+": ") {
			t.Errorf("error does not list %s:\n%s", e, msg)
		}
	}
}

func TestRewriteTarCapsTheListedViolations(t *testing.T) {
	entries := []tarEntry{tarReg("src/weights/model.bin", "w")}
	for i := range 60 {
		entries = append(entries, tarReg(fmt.Sprintf("src/code%02d.py", i), "x"))
	}
	entries = append(entries, tarReg("src/weights/bad\nname", "x"), tarReg("/etc/passwd", "x"))
	var out bytes.Buffer
	_, err := imageops.RewriteTar(&out, bytes.NewReader(makeTar(t, entries...)), imageops.TarPolicy{})
	var pe *imageops.PolicyError
	if !errors.As(err, &pe) || len(pe.Violations) != 61 {
		t.Fatalf("RewriteTar = %v, want a *PolicyError with 61 violations", err)
	}
	msg := err.Error()
	if got := strings.Count(msg, "\n  - "); got != 50 {
		t.Errorf("error lists %d violations, want 50", got)
	}
	if !strings.HasSuffix(msg, "\n  ... and 11 more") || !strings.Contains(msg, "has 61 entries") {
		t.Errorf("error does not count the rest:\n%s", msg)
	}
}

func TestRewriteTarAccepts(t *testing.T) {
	tests := []struct {
		name    string
		policy  imageops.TarPolicy
		entries []tarEntry
		want    []string // names in the output, after the target directories
	}{
		{"prefixed", imageops.TarPolicy{},
			[]tarEntry{tarDir("./"), tarDir("src/"), tarDir("src/weights/"), tarReg("src/weights/model.bin", "weights"),
				tarDir("src/weights/sub/"), tarReg("src/weights/sub/config.json", "{}")},
			[]string{"src/weights/model.bin", "src/weights/sub/", "src/weights/sub/config.json"}},
		{"prefixed with ./", imageops.TarPolicy{},
			[]tarEntry{tarDir("."), tarReg("./src/weights/model.bin", "weights")},
			[]string{"src/weights/model.bin"}},
		{"relative", imageops.TarPolicy{},
			[]tarEntry{tarDir("./"), tarReg("./model.bin", "weights"), tarDir("sub"), tarReg("sub/config.json", "{}"), tarReg("src/x.py", "py")},
			[]string{"src/weights/model.bin", "src/weights/sub/", "src/weights/sub/config.json", "src/weights/src/x.py"}},
		{"absolute under the target", imageops.TarPolicy{},
			[]tarEntry{tarDir("/src/weights"), tarReg("/src/weights/model.bin", "weights"), tarReg("/src/weights/b.bin", "b")},
			[]string{"src/weights/model.bin", "src/weights/b.bin"}},
		{"absolute in a relative tarball", imageops.TarPolicy{},
			[]tarEntry{tarReg("model.bin", "weights"), tarReg("/src/weights/b.bin", "b")},
			[]string{"src/weights/model.bin", "src/weights/b.bin"}},
		{"links inside the target", imageops.TarPolicy{},
			[]tarEntry{tarReg("src/weights/model.bin", "weights"), tarSymlink("src/weights/latest", "model.bin"),
				tarSymlink("src/weights/abs", "/src/weights/model.bin"), tarSymlink("src/weights/self", "."),
				tarHardlink("src/weights/copy", "src/weights/model.bin"), tarHardlink("src/weights/copy2", "/src/weights/model.bin")},
			[]string{"src/weights/model.bin", "src/weights/latest", "src/weights/abs", "src/weights/self", "src/weights/copy", "src/weights/copy2"}},
		{"links in a relative tarball", imageops.TarPolicy{},
			[]tarEntry{tarReg("model.bin", "weights"), tarDir("sub/"), tarSymlink("sub/m", "../model.bin"), tarHardlink("copy", "model.bin")},
			[]string{"src/weights/model.bin", "src/weights/sub/", "src/weights/sub/m", "src/weights/copy"}},
		{"allow outside the target", imageops.TarPolicy{AllowOutsideTarget: true},
			[]tarEntry{tarReg("src/weights/model.bin", "weights"), tarReg("src/predict.py", "code"), tarReg("/etc/motd", "hi"),
				tarSymlink("src/weights/cache", "/root/.cache"), tarHardlink("src/predict2.py", "src/predict.py")},
			[]string{"src/weights/model.bin", "src/predict.py", "etc/motd", "src/weights/cache", "src/predict2.py"}},
		{"links through links inside the target", imageops.TarPolicy{},
			[]tarEntry{tarReg("src/weights/model.bin", "weights"), tarDir("src/weights/v2/"), tarReg("src/weights/v2/config.json", "{}"),
				tarSymlink("src/weights/latest", "v2"), tarSymlink("src/weights/cfg", "latest/config.json"),
				tarSymlink("src/weights/up", "../weights/model.bin"), tarSymlink("src/weights/v2/back", "../latest/../model.bin"),
				tarHardlink("src/weights/cfg2", "src/weights/latest/config.json"), tarReg("src/weights/a/b/../c.bin", "c")},
			[]string{"src/weights/model.bin", "src/weights/v2/", "src/weights/v2/config.json", "src/weights/latest", "src/weights/cfg",
				"src/weights/up", "src/weights/v2/back", "src/weights/cfg2", "src/weights/a/c.bin"}},
		{"another target", imageops.TarPolicy{Target: "models/llama/"},
			[]tarEntry{tarReg("model.bin", "weights")},
			[]string{"models/llama/model.bin"}},
		{"root target", imageops.TarPolicy{Target: "/"},
			[]tarEntry{tarDir("./"), tarReg("src/predict.py", "code"), tarReg("/etc/motd", "hi")},
			[]string{"src/predict.py", "etc/motd"}},
		{"git archive global header", imageops.TarPolicy{},
			[]tarEntry{{Name: "pax_global_header", Type: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": "git archive"}}, tarReg("model.bin", "weights")},
			[]string{"src/weights/model.bin"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.policy.ModTime = policyTime
			in := makeTar(t, tc.entries...)
			var out bytes.Buffer
			stats, err := imageops.RewriteTar(&out, bytes.NewReader(in), tc.policy)
			if err != nil {
				t.Fatalf("RewriteTar: %v", err)
			}
			got := listTarball(t, out.Bytes())
			var dirs []string
			for d := path.Clean("/" + tc.policy.Target); d != "/"; d = path.Dir(d) {
				dirs = append([]string{d[1:] + "/"}, dirs...)
			}
			if tc.policy.Target == "" {
				dirs = []string{"src/", "src/weights/"}
			}
			want := append(dirs, tc.want...)
			if fmt.Sprint(names(got)) != fmt.Sprint(want) {
				t.Fatalf("names = %q, want %q", names(got), want)
			}
			if stats.Entries != len(tc.want) {
				t.Errorf("stats = %+v for %d entries", stats, len(tc.want))
			}
			inBodies := map[string]string{}
			for _, e := range tc.entries {
				inBodies[path.Base(e.Name)] = e.Body
			}
			for _, e := range got {
				h := e.Header
				if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
					t.Errorf("%s: owner %d:%d %q:%q, want root", h.Name, h.Uid, h.Gid, h.Uname, h.Gname)
				}
				if !h.ModTime.Equal(policyTime) {
					t.Errorf("%s: mtime %v, want %v", h.Name, h.ModTime, policyTime)
				}
				if h.Mode&^0o777 != 0 {
					t.Errorf("%s: mode %o has more than rwx bits", h.Name, h.Mode)
				}
				//lint:ignore SA1019 Xattrs is what older readers fill
				if len(h.PAXRecords) != 0 || len(h.Xattrs) != 0 {
					t.Errorf("%s: PAX records %v", h.Name, h.PAXRecords)
				}
				if h.Typeflag == tar.TypeReg && e.Body != inBodies[path.Base(h.Name)] {
					t.Errorf("%s: body %q, want %q", h.Name, e.Body, inBodies[path.Base(h.Name)])
				}
			}
		})
	}
}

func TestRewriteTarNormalizesHeaders(t *testing.T) {
	in := makeTar(t,
		tarEntry{Name: "src/weights/", Type: tar.TypeDir, Mode: 0o700},
		tarEntry{Name: "src/weights/run.sh", Body: "#!/bin/sh\n", Mode: 0o6755, Uid: 1000, Gid: 1000,
			PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "\x01\x00\x00\x02", "SCHILY.xattr.user.x": "y"}},
		tarEntry{Name: "src/weights/tmp/", Type: tar.TypeDir, Mode: 0o1777},
		tarEntry{Name: "src/weights/" + strings.Repeat("long", 40) + ".bin", Body: "long name"},
	)
	var out bytes.Buffer
	stats, err := imageops.RewriteTar(&out, bytes.NewReader(in), imageops.TarPolicy{ModTime: policyTime})
	if err != nil {
		t.Fatal(err)
	}
	if stats != (imageops.TarStats{Entries: 3, Files: 2, Bytes: int64(len("#!/bin/sh\n") + len("long name"))}) {
		t.Errorf("stats = %+v", stats)
	}
	modes := map[string]int64{}
	for _, e := range listTarball(t, out.Bytes()) {
		modes[e.Name] = e.Mode
		if len(e.PAXRecords) > 0 && e.PAXRecords["path"] == "" {
			t.Errorf("%s: PAX records %v kept", e.Name, e.PAXRecords)
		}
	}
	want := map[string]int64{
		"src/": 0o755, "src/weights/": 0o755, // written by RewriteTar, the input's 0700 is dropped
		"src/weights/run.sh": 0o755, "src/weights/tmp/": 0o777,
		"src/weights/" + strings.Repeat("long", 40) + ".bin": 0o644,
	}
	if fmt.Sprint(modes) != fmt.Sprint(want) {
		t.Errorf("modes = %v, want %v (octal: %s)", modes, want, "0755=493 0644=420 0777=511")
	}
	if bytes.Contains(out.Bytes(), []byte("security.capability")) || bytes.Contains(out.Bytes(), []byte("trainer")) {
		t.Error("the output keeps xattrs or owner names")
	}
}

func TestRewriteTarIsReproducible(t *testing.T) {
	entries := []tarEntry{
		tarReg("model.bin", strings.Repeat("w", 3000)),
		tarEntry{Name: "sub/", Type: tar.TypeDir, Uid: 7, Gid: 7},
		tarSymlink("sub/latest", "../model.bin"),
		tarReg(strings.Repeat("n", 150), "long name"),
	}
	in := makeTar(t, entries...)
	// The same files with other owners and times.
	for i := range entries {
		entries[i].Uid, entries[i].Gid = 4242, 4242
		entries[i].PAXRecords = map[string]string{"SCHILY.xattr.user.origin": "laptop"}
	}
	other := makeTar(t, entries...)
	if bytes.Equal(in, other) {
		t.Fatal("test inputs should differ")
	}
	var outs [][]byte
	for _, b := range [][]byte{in, in, other} {
		var out bytes.Buffer
		if _, err := imageops.RewriteTar(&out, bytes.NewReader(b), imageops.TarPolicy{ModTime: policyTime}); err != nil {
			t.Fatal(err)
		}
		outs = append(outs, out.Bytes())
	}
	if !bytes.Equal(outs[0], outs[1]) {
		t.Error("two rewrites of the same tarball differ")
	}
	if !bytes.Equal(outs[0], outs[2]) {
		t.Error("owners and xattrs of the input change the output")
	}
}

// errAfterReader returns its data, then err.
type errAfterReader struct {
	data []byte
	err  error
}

func (r *errAfterReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestRewriteTarBadStreams(t *testing.T) {
	good := makeTar(t, tarReg("src/weights/model.bin", strings.Repeat("w", 2000)), tarReg("src/weights/b.bin", "b"))
	garbage := append(append([]byte{}, good[:512*5]...), bytes.Repeat([]byte("garbage!"), 256)...)
	errNetwork := errors.New("connection reset by peer")
	tests := []struct {
		name  string
		input io.Reader
		is    error  // the error RewriteTar returns must match
		not   error  // and must not match
		msg   string // a part of its message
	}{
		{"zero bytes", bytes.NewReader(nil), imageops.ErrEmptyTar, nil, "no files"},
		{"no entries", bytes.NewReader(makeTar(t)), imageops.ErrEmptyTar, nil, "no files"},
		{"only the target directories", bytes.NewReader(makeTar(t, tarDir("./"), tarDir("src/"), tarDir("/src/weights/"))), imageops.ErrEmptyTar, nil, "no files"},
		{"truncated in a body", bytes.NewReader(good[:1000]), imageops.ErrTruncatedTar, io.ErrUnexpectedEOF, `inside entry "src/weights/model.bin"`},
		{"truncated in a header", bytes.NewReader(good[:512*5+100]), imageops.ErrTruncatedTar, io.ErrUnexpectedEOF, `after entry "src/weights/model.bin"`},
		{"truncated at a block boundary", bytes.NewReader(unterminated(makeTar(t, tarReg("src/weights/model.bin", "w")))), imageops.ErrTruncatedTar, io.ErrUnexpectedEOF, "end-of-archive"},
		{"garbage after an entry", bytes.NewReader(garbage), imageops.ErrCorruptTar, nil, `after entry "src/weights/model.bin"`},
		{"two tarballs concatenated", bytes.NewReader(append(append([]byte{}, good...), makeTar(t, tarReg("src/weights/c.bin", "c"))...)), imageops.ErrCorruptTar, nil, "two tarballs concatenated"},
		{"not a tar", strings.NewReader(strings.Repeat("not a tar ", 100)), imageops.ErrCorruptTar, nil, "at its first entry"},
		{"source error", &errAfterReader{good[:3000], errNetwork}, errNetwork, imageops.ErrTruncatedTar, "reading the weights tarball"},
		{"source's own unexpected EOF stays transient", &errAfterReader{good[:3000], io.ErrUnexpectedEOF}, io.ErrUnexpectedEOF, imageops.ErrTruncatedTar, "reading the weights tarball"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := imageops.RewriteTar(io.Discard, tc.input, imageops.TarPolicy{})
			if !errors.Is(err, tc.is) {
				t.Fatalf("RewriteTar = %v, want %v", err, tc.is)
			}
			if tc.not != nil && errors.Is(err, tc.not) {
				t.Errorf("RewriteTar = %v, which matches %v", err, tc.not)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
		})
	}
}

func TestRewriteTarReadsRecordPadding(t *testing.T) {
	in := makeTar(t, tarReg("model.bin", "w"))
	in = append(in, make([]byte, 10240-len(in)%10240)...) // GNU tar's 20-block records
	if _, err := imageops.RewriteTar(io.Discard, bytes.NewReader(in), imageops.TarPolicy{}); err != nil {
		t.Fatalf("RewriteTar: %v", err)
	}
}

func TestRewriteTarViolationsAndTruncation(t *testing.T) {
	in := makeTar(t, tarReg("src/weights/a", "a"), tarReg("src/predict.py", strings.Repeat("p", 3000)))
	_, err := imageops.RewriteTar(io.Discard, bytes.NewReader(in[:2000]), imageops.TarPolicy{})
	var pe *imageops.PolicyError
	if !errors.As(err, &pe) || !errors.Is(err, imageops.ErrTruncatedTar) {
		t.Fatalf("RewriteTar = %v, want the violation and the truncation", err)
	}
}

type failingWriter struct{ after int }

var errDiskFull = errors.New("disk full")

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.after < len(p) {
		return 0, errDiskFull
	}
	w.after -= len(p)
	return len(p), nil
}

func TestRewriteTarWriteError(t *testing.T) {
	in := makeTar(t, tarReg("src/weights/model.bin", strings.Repeat("w", 100_000)))
	for _, after := range []int{0, 3000} {
		_, err := imageops.RewriteTar(&failingWriter{after: after}, bytes.NewReader(in), imageops.TarPolicy{})
		if !errors.Is(err, errDiskFull) || !strings.Contains(err.Error(), "writing") {
			t.Errorf("after %d bytes: RewriteTar = %v, want the write error", after, err)
		}
	}
}

// fuzzSeeds are tarballs from the tests above, accepted and refused.
func fuzzSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	return [][]byte{
		makeTar(tb, tarDir("./"), tarDir("src/"), tarDir("src/weights/"), tarReg("src/weights/model.bin", "weights"), tarDir("src/weights/sub/"), tarReg("src/weights/sub/c.json", "{}")),
		makeTar(tb, tarReg("model.bin", "weights"), tarDir("sub"), tarSymlink("sub/m", "../model.bin"), tarHardlink("copy", "model.bin")),
		makeTar(tb, tarReg("/src/weights/model.bin", "w"), tarSymlink("src/weights/abs", "/src/weights/model.bin"), tarHardlink("src/weights/copy", "/src/weights/model.bin")),
		makeTar(tb, tarReg("src/weights/model.bin", "w"), tarReg("src/predict.py", "code"), tarReg("../x", "x"), tarReg("/etc/passwd", "x")),
		makeTar(tb, tarReg("model.bin", "w"), tarReg("src/weights/other.bin", "x"), tarSymlink("up", "../../.."), tarSymlink("e", "")),
		makeTar(tb, tarReg("src/weights/m", "w"), tarEntry{Name: "src/weights/null", Type: tar.TypeChar}, tarEntry{Name: "src/weights/p", Type: tar.TypeFifo},
			tarEntry{Name: "src/weights/c", Type: tar.TypeCont, Body: "abc"}, tarReg("src/weights/.wh..wh..opq", "")),
		makeTar(tb, tarReg("src/weights/m", "w"), tarEntry{Name: "src/weights/s", Type: tar.TypeGNUSparse, Format: tar.FormatGNU}),
		makeTar(tb, tarReg("src/weights/m", "w"), tarSymlink("src/weights/here", "."), tarReg("src/weights/here/x", "x"), tarSymlink("src", "/tmp"), tarHardlink("src/weights/h", "src/weights/nope")),
		makeTar(tb, tarEntry{Name: "src/weights/run", Body: "#!", Mode: 0o6755, Uid: 1000, Gid: 1000, PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "x"}},
			tarReg("src/weights/"+strings.Repeat("long", 40), "l")),
		makeTar(tb, tarEntry{Name: "pax_global_header", Type: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": "git archive"}}, tarReg("a", "a"), tarReg("b/../../c", "c")),
		unterminated(makeTar(tb, tarReg("src/weights/model.bin", "w"))),
		paxSparseTar(tb),
	}
}

func FuzzRewriteTar(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	const target = "src/weights"
	inTarget := func(p string) bool { return p == target || strings.HasPrefix(p, target+"/") }
	f.Fuzz(func(t *testing.T, data []byte, allowOutside bool) {
		policy := imageops.TarPolicy{AllowOutsideTarget: allowOutside, ModTime: policyTime, MaxEntries: 1000}
		var out bytes.Buffer
		_, err := imageops.RewriteTar(&out, bytes.NewReader(data), policy)
		if err != nil {
			var pe *imageops.PolicyError
			if !errors.As(err, &pe) && !errors.Is(err, imageops.ErrEmptyTar) &&
				!errors.Is(err, imageops.ErrTruncatedTar) && !errors.Is(err, imageops.ErrCorruptTar) {
				t.Fatalf("unclassified error: %v", err)
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("error matches io.ErrUnexpectedEOF: %v", err)
			}
			return
		}
		// Headers may grow (a prefix can force a PAX header), content may not.
		if out.Len() > 4*len(data)+4096 {
			t.Fatalf("%d input bytes became %d output bytes", len(data), out.Len())
		}
		var again bytes.Buffer
		if _, err := imageops.RewriteTar(&again, bytes.NewReader(data), policy); err != nil || !bytes.Equal(out.Bytes(), again.Bytes()) {
			t.Fatalf("a second rewrite differs (err %v)", err)
		}

		seen := map[string]bool{}
		members, err := testenv.ReadTar(bytes.NewReader(out.Bytes()))
		if err != nil {
			t.Fatalf("the output is not a valid tar: %v", err)
		}
		for _, m := range members {
			h := m.Header
			name := strings.TrimSuffix(h.Name, "/")
			if name == "" || strings.HasPrefix(name, "/") || path.Clean(name) != name || name == ".." || strings.HasPrefix(name, "../") {
				t.Fatalf("output name %q is not a clean relative path", h.Name)
			}
			if !allowOutside && !inTarget(name) && name != "src" {
				t.Fatalf("output entry %q is outside the target", h.Name)
			}
			if (name == "src" || name == target) && h.Typeflag != tar.TypeDir {
				t.Fatalf("output entry %q replaces a target directory", h.Name)
			}
			for _, c := range strings.Split(name, "/") {
				if strings.HasPrefix(c, ".wh.") {
					t.Fatalf("output entry %q is a whiteout", h.Name)
				}
			}
			if h.Uid != 0 || h.Gid != 0 || h.Mode&^0o777 != 0 || len(h.PAXRecords) > 0 && h.PAXRecords["path"] == "" && h.PAXRecords["linkpath"] == "" && h.PAXRecords["size"] == "" {
				t.Fatalf("output entry %q keeps owner %d:%d, mode %o or records %v", h.Name, h.Uid, h.Gid, h.Mode, h.PAXRecords)
			}
			switch h.Typeflag {
			case tar.TypeDir, tar.TypeReg:
			case tar.TypeSymlink:
				resolved := path.Clean("/" + path.Dir(name) + "/" + h.Linkname)
				if strings.HasPrefix(h.Linkname, "/") {
					resolved = path.Clean(h.Linkname)
				}
				if !allowOutside && !inTarget(strings.TrimPrefix(resolved, "/")) {
					t.Fatalf("symlink %q -> %q resolves outside the target", h.Name, h.Linkname)
				}
			case tar.TypeLink:
				if !seen[h.Linkname] || (!allowOutside && !inTarget(h.Linkname)) {
					t.Fatalf("hard link %q -> %q is not to an earlier entry in the target", h.Name, h.Linkname)
				}
			default:
				t.Fatalf("output entry %q has type %q", h.Name, h.Typeflag)
			}
			for d := path.Dir(name); d != "."; d = path.Dir(d) {
				if seen[d+"\x00symlink"] {
					t.Fatalf("output entry %q is beneath the symlink %q", h.Name, d)
				}
			}
			if h.Typeflag != tar.TypeDir {
				seen[name] = true
			}
			if h.Typeflag == tar.TypeSymlink {
				seen[name+"\x00symlink"] = true
			}
		}
	})
}

// rewrite runs RewriteTar on entries and returns the refused entry names
// (nil when it accepts them) and the output.
func rewrite(t *testing.T, policy imageops.TarPolicy, entries ...tarEntry) ([]string, []readEntry, error) {
	t.Helper()
	policy.ModTime = policyTime
	var out bytes.Buffer
	_, err := imageops.RewriteTar(&out, bytes.NewReader(makeTar(t, entries...)), policy)
	if err == nil {
		return nil, listTarball(t, out.Bytes()), nil
	}
	var pe *imageops.PolicyError
	if !errors.As(err, &pe) {
		t.Fatalf("RewriteTar = %v, want nil or a *PolicyError", err)
	}
	var refused []string
	for _, v := range pe.Violations {
		refused = append(refused, v.Entry)
	}
	return refused, nil, err
}

// The two tarballs of issue 12: each link is inside the target by its text,
// outside once resolved through the others.
func TestRewriteTarLinkAttacks(t *testing.T) {
	model := tarReg("src/weights/model.bin", "w")
	for _, tc := range []struct {
		name    string
		entries []tarEntry
		refused []string
		say     []string
	}{
		{"e to /etc/passwd through s", []tarEntry{model, tarSymlink("src/weights/s", "."), tarSymlink("src/weights/e", "s/s/s/../../../etc/passwd")},
			[]string{"src/weights/e"}, []string{"src/weights/e: it is a symlink", "resolves to /etc/passwd (following the symlink /src/weights/s)"}},
		{"code over /src, then predict.py through it", []tarEntry{model, tarSymlink("src/weights/s", "."), tarSymlink("src/weights/code", "s/.."), tarReg("src/weights/code/predict.py", "pwned")},
			[]string{"src/weights/code", "src/weights/code/predict.py"},
			[]string{"resolves to /src (following the symlink /src/weights/s) outside the target", "goes through /src/weights/code, a symlink earlier in the weights, so it would be written at /src/predict.py"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refused, _, err := rewrite(t, imageops.TarPolicy{}, tc.entries...)
			if fmt.Sprint(refused) != fmt.Sprint(tc.refused) {
				t.Fatalf("refused %q (%v), want %q", refused, err, tc.refused)
			}
			for _, s := range tc.say {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error does not say %q:\n%v", s, err)
				}
			}
		})
	}
}

// A LinkSet carries the links of one weights layer into the next: each
// second layer below passes alone (but the hard link, whose file is in the
// first) and is refused after the first.
func TestRewriteTarLinksAcrossLayers(t *testing.T) {
	model := tarReg("src/weights/model.bin", "w")
	for _, tc := range []struct {
		name          string
		first, second []tarEntry
		refused       string
		say           string
	}{
		{"a link through a link of the layer before", []tarEntry{model, tarSymlink("src/weights/s", ".")},
			[]tarEntry{tarSymlink("src/weights/code", "s/..")}, "src/weights/code", "resolves to /src (following the symlink /src/weights/s)"},
		{"a file through a link of the layer before", []tarEntry{model, tarSymlink("src/weights/code", "../weights")},
			[]tarEntry{tarReg("src/weights/code/predict.py", "x")}, "src/weights/code/predict.py", "goes through /src/weights/code"},
		{"a link made escaping by the next layer", []tarEntry{model, tarSymlink("src/weights/e", "s/s/s/../../../etc/passwd")},
			[]tarEntry{tarSymlink("src/weights/s", ".")}, "/src/weights/e", "it comes from an earlier weights layer"},
		{"a hard link to a symlink of the layer before", []tarEntry{model, tarDir("src/weights/a/"), tarSymlink("src/weights/a/l", "../model.bin")},
			[]tarEntry{tarHardlink("src/weights/h", "src/weights/a/l")}, "src/weights/h", "resolves to /src/model.bin outside"},
		{"over a symlink of the layer before", []tarEntry{model, tarSymlink("src/weights/l", "model.bin")},
			[]tarEntry{tarReg("src/weights/l", "x")}, "src/weights/l", "made /src/weights/l a symlink"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if refused, _, err := rewrite(t, imageops.TarPolicy{}, tc.second...); err != nil && !strings.Contains(err.Error(), "not an earlier entry") {
				t.Fatalf("the second layer alone is refused (%q): %v", refused, err)
			}
			links := imageops.NewLinkSet()
			if refused, _, err := rewrite(t, imageops.TarPolicy{Links: links}, tc.first...); err != nil {
				t.Fatalf("the first layer is refused (%q): %v", refused, err)
			}
			// A retried pass starts from a clone: both see the first layer only.
			for range 2 {
				refused, _, err := rewrite(t, imageops.TarPolicy{Links: links.Clone()}, tc.second...)
				if len(refused) != 1 || refused[0] != tc.refused || !strings.Contains(err.Error(), tc.say) {
					t.Fatalf("after the first layer: refused %q, %v; want %q saying %q", refused, err, tc.refused, tc.say)
				}
			}
		})
	}
	t.Run("hard link to a file of the layer before", func(t *testing.T) {
		links := imageops.NewLinkSet()
		if _, _, err := rewrite(t, imageops.TarPolicy{Links: links}, model, tarDir("src/weights/v1/"), tarReg("src/weights/v1/c.json", "{}"), tarSymlink("src/weights/latest", "v1")); err != nil {
			t.Fatal(err)
		}
		_, out, err := rewrite(t, imageops.TarPolicy{Links: links}, tarHardlink("src/weights/c.json", "src/weights/latest/c.json"))
		if err != nil {
			t.Fatal(err)
		}
		if h := out[len(out)-1].Header; h.Linkname != "src/weights/v1/c.json" {
			t.Errorf("hard link to %q, want the resolved src/weights/v1/c.json", h.Linkname)
		}
	})
}

func TestRewriteTarSymlinkDepth(t *testing.T) {
	if refused, _, err := rewrite(t, imageops.TarPolicy{}, chain(40)...); err != nil {
		t.Fatalf("a chain of 40 symlinks is refused (%q): %v", refused, err)
	}
	if refused, _, _ := rewrite(t, imageops.TarPolicy{}, chain(41)...); fmt.Sprint(refused) != "[src/weights/l1]" {
		t.Fatalf("a chain of 41 symlinks: refused %q, want src/weights/l1", refused)
	}
}

// Links through a chain of long links, many times over, would take hours to
// resolve: the work of one publish is bounded, and what is left unresolved
// is refused.
func TestRewriteTarLinkWorkIsBounded(t *testing.T) {
	entries := []tarEntry{tarReg("src/weights/model.bin", "w")}
	detour := strings.Repeat("x/../", 800) // 1600 components, 4000 bytes
	for i := 38; i >= 1; i-- {
		to := fmt.Sprintf("l%d", i+1)
		if i == 38 {
			to = "model.bin"
		}
		entries = append(entries, tarSymlink(fmt.Sprintf("src/weights/l%d", i), detour+to))
	}
	for i := range 1000 {
		entries = append(entries, tarSymlink(fmt.Sprintf("src/weights/p%d", i), "l1"))
	}
	refused, _, err := rewrite(t, imageops.TarPolicy{}, entries...)
	if err == nil || !strings.Contains(err.Error(), "took more than 20000000 steps") {
		t.Fatalf("RewriteTar = %v; want the links refused past the resolution budget", err)
	}
	if len(refused) == 0 || !strings.HasPrefix(refused[0], "src/weights/p") {
		t.Errorf("refused %q, want the pointers past the budget", refused[:min(len(refused), 3)])
	}
}
