package config_test

import (
	"crypto/x509"
	"encoding/pem"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/r8im/r8im/config"
)

func TestNetworkDefaults(t *testing.T) {
	w := loadWorker(t, nil)
	r := load(t, config.NewR8im(), nil)
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]config.Network{"worker": w.Network, "r8im": r.Network} {
		checkFields(t, []field{
			{name + " Network.CAFile", n.CAFile, ""},
			{name + " Network.MaxManifestSize", n.MaxManifestSize, int64(4 << 20)},
			{name + " Network.IdleTimeout", n.IdleTimeout, 60 * time.Second},
			{name + " Network.AllowPrivateNetworks", len(n.AllowPrivateNetworks), 0},
		})
	}
	if _, ok := r.Redacted()["R8IM_ALLOW_PRIVATE_NETWORKS"]; ok {
		t.Error("r8im has R8IM_ALLOW_PRIVATE_NETWORKS; only the worker connects to event-provided hosts")
	}
}

// caFile writes the certificate of a TLS test server as PEM.
func caFile(t *testing.T) (string, *x509.Certificate) {
	t.Helper()
	srv := httptest.NewTLSServer(nil)
	srv.Close()
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, srv.Certificate()
}

func TestNetworkLoads(t *testing.T) {
	ca, cert := caFile(t)
	w := loadWorker(t, env{
		"R8IM_CA_FILE": ca, "R8IM_MAX_MANIFEST_SIZE": "1MiB", "R8IM_IDLE_TIMEOUT": "5s",
		"R8IM_ALLOW_PRIVATE_NETWORKS": "127.0.0.1, 10.0.0.0/8,::1,192.168.1.7/16",
	})
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("192.168.0.0/16")}
	checkFields(t, []field{
		{"Network.MaxManifestSize", w.Network.MaxManifestSize, int64(1 << 20)},
		{"Network.IdleTimeout", w.Network.IdleTimeout, 5 * time.Second},
		{"Network.AllowPrivateNetworks", w.Network.AllowPrivateNetworks, want},
	})
	pool, err := w.Network.RootCAs()
	if err != nil || pool == nil {
		t.Fatalf("RootCAs() = %v, %v", pool, err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Errorf("the CA file's certificate does not verify against RootCAs(): %v", err)
	}
	r := load(t, config.NewR8im(), nil, "--ca-file", ca, "--idle-timeout", "2s", "--max-manifest-size", "64KiB")
	if err := r.Validate(); err != nil || r.Network.CAFile != ca || r.Network.IdleTimeout != 2*time.Second || r.Network.MaxManifestSize != 64<<10 {
		t.Errorf("r8im flags: %+v, %v", r.Network, err)
	}
}

func TestNetworkProblems(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, env, value, flag, want string
		kinds                        []string
	}{
		{"CA file missing", "R8IM_CA_FILE", filepath.Join(dir, "none.pem"), "--ca-file", "cannot read", []string{"worker", "r8im"}},
		{"CA file not PEM", "R8IM_CA_FILE", notPEM, "--ca-file", "no PEM certificate", []string{"worker", "r8im"}},
		{"manifest cap tiny", "R8IM_MAX_MANIFEST_SIZE", "1KiB", "--max-manifest-size", "between 64KiB and 1GiB", []string{"worker", "r8im"}},
		{"idle timeout zero", "R8IM_IDLE_TIMEOUT", "0s", "--idle-timeout", "between 100ms and 1h", []string{"worker", "r8im"}},
		{"idle timeout not a duration", "R8IM_IDLE_TIMEOUT", "soon", "", "cannot use", []string{"worker", "r8im"}},
		{"private network not an address", "R8IM_ALLOW_PRIVATE_NETWORKS", "lan", "", "neither an IP nor a CIDR", []string{"worker"}},
	} {
		for _, k := range kinds {
			if !slices.Contains(tc.kinds, k.name) {
				continue
			}
			t.Run(k.name+"/"+tc.name, func(t *testing.T) {
				ps := problems(t, load(t, k.new(), env{tc.env: tc.value}).Validate())
				if len(ps) != 1 || !strings.Contains(ps[0].Setting, tc.env) || !strings.Contains(ps[0].Setting, tc.flag) || !strings.Contains(ps[0].Message, tc.want) {
					t.Errorf("problems %v; want one naming %s %s and saying %q", ps, tc.env, tc.flag, tc.want)
				}
			})
		}
	}
}
