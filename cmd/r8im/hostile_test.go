package main

import (
	"runtime"
	"strings"
	"testing"

	"github.com/r8im/r8im/internal/testenv"
)

// TestHostileRegistries runs `r8im layers` against each hostile registry:
// every run ends (no hang, no endless redirect) with an error saying what
// the registry did, free of the escapes it wrote, and the process allocates
// a few MiB at most of the GiB each answer declared.
func TestHostileRegistries(t *testing.T) {
	for _, tc := range []struct {
		mode testenv.Hostile
		want []string
	}{
		{testenv.RedirectLoop, []string{"too many redirects", "stopped after 10 redirects"}},
		{testenv.HugeManifest, []string{"too large", "1073741824 bytes", "--max-manifest-size"}},
		{testenv.EndlessManifest, []string{"too large", "4194304-byte limit"}},
		{testenv.HugeConfig, []string{"config sha256:", "too large"}},
		{testenv.StalledManifest, []string{"no data for 1s", "idle timeout"}},
		{testenv.EscapeError, []string{"not found", "owned"}},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			reg := testenv.NewHostileRegistry(t, tc.mode)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, _, err := r8im(t, nil, "layers", "--idle-timeout", "1s", reg.Host+"/base/hostile:v1")
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatal("r8im layers succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.ContainsAny(err.Error(), "\x1b\x07") {
				t.Errorf("error %q holds escapes the registry wrote", err)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
				t.Errorf("the command allocated %d MiB; want a few (the cap is 4 MiB)", alloc>>20)
			}
		})
	}
}

// TestTLSRegistry: a registry behind TLS with a private CA is refused with
// a message naming every fix, and works with --ca-file, or with --insecure
// (which skips verification, as crane's does).
func TestTLSRegistry(t *testing.T) {
	reg := testenv.Registry(t)
	base := testenv.PushBase(t, reg.Host, "base/tls", testenv.OCI)
	front, ca := testenv.TLSFront(t, reg.Host)
	ref := front + "/base/tls@" + base.DigestStr()

	_, _, err := r8im(t, nil, "layers", ref)
	if err == nil {
		t.Fatal("r8im layers trusted a certificate from an unknown CA")
	}
	for _, w := range []string{"not trusted", "--ca-file", "R8IM_CA_FILE", "SSL_CERT_FILE", "--insecure"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	for _, args := range [][]string{{"--ca-file", ca}, {"--insecure"}} {
		out, stderr, err := r8im(t, nil, append([]string{"layers", ref}, args...)...)
		if err != nil || !strings.Contains(out, "sha256:") {
			t.Errorf("r8im layers %v: %v\n%s%s", args, err, out, stderr)
		}
	}
}
