package config

import (
	"crypto/x509"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Network bounds what r8im accepts from the servers it connects to
// (registries, weights hosts, callback receivers) and which CAs it trusts.
type Network struct {
	// CAFile is a PEM file of CAs trusted besides the system's (which
	// SSL_CERT_FILE replaces): a private registry's, weights host's or
	// callback receiver's.
	CAFile string
	// MaxManifestSize caps manifests, indexes, image configs and every
	// other registry answer but blob contents.
	MaxManifestSize int64
	// IdleTimeout fails a connection that carries no byte for this long
	// while r8im waits on the server (a stalled body, a server that stopped
	// reading); response headers may take five times as long.
	IdleTimeout time.Duration
	// AllowPrivateNetworks (worker only) are the loopback, private,
	// link-local or other non-public addresses that weights URLs and
	// callbacks may connect to; every other non-public address is refused,
	// whatever name resolved to it. Registries and S3 endpoints are the
	// operator's and are not limited.
	AllowPrivateNetworks []netip.Prefix

	roots     *x509.CertPool
	rootsFile string
}

// Defaults of Network.
const (
	DefaultMaxManifestSize = 4 << 20
	DefaultIdleTimeout     = 60 * time.Second
)

func (n *Network) bind(b *binder) {
	b.bind(stringVar(&n.CAFile, ""), "ca-file", "", []string{"R8IM_CA_FILE"}, plain,
		"PEM file of CAs to trust besides the system's (SSL_CERT_FILE), for a private registry or weights host")
	b.bind(sizeVar(&n.MaxManifestSize, DefaultMaxManifestSize), "max-manifest-size", "", []string{"R8IM_MAX_MANIFEST_SIZE"}, plain,
		"largest manifest, index or image config accepted from a registry")
	b.bind(durationVar(&n.IdleTimeout, DefaultIdleTimeout), "idle-timeout", "", []string{"R8IM_IDLE_TIMEOUT"}, plain,
		"fail a connection that carries no byte for this long while waiting on the server")
}

// bindWorker adds the settings only the worker uses.
func (n *Network) bindWorker(b *binder) {
	b.bind(&prefixesValue{p: &n.AllowPrivateNetworks}, "allow-private-networks", "", []string{"R8IM_ALLOW_PRIVATE_NETWORKS"}, plain,
		"comma-separated IPs or CIDRs (e.g. 127.0.0.0/8,10.20.0.0/16) of loopback or private addresses that weights URLs and callbacks may connect to; other non-public addresses are refused")
}

func (n *Network) validate(b *binder) []Problem {
	var ps []Problem
	if n.MaxManifestSize < 64<<10 || n.MaxManifestSize > 1<<30 {
		ps = append(ps, b.problem("max-manifest-size", "must be between 64KiB and 1GiB, got %d bytes", n.MaxManifestSize))
	}
	if n.IdleTimeout < 100*time.Millisecond || n.IdleTimeout > time.Hour {
		ps = append(ps, b.problem("idle-timeout", "must be between 100ms and 1h, got %s", n.IdleTimeout))
	}
	if _, err := n.RootCAs(); err != nil {
		ps = append(ps, b.problem("ca-file", "%v", err))
	}
	return ps
}

// RootCAs returns the system's CAs plus CAFile's, or nil (meaning the
// system's) when CAFile is empty. The pool is read once and kept.
func (n *Network) RootCAs() (*x509.CertPool, error) {
	if n.CAFile == "" {
		return nil, nil
	}
	if n.roots != nil && n.rootsFile == n.CAFile {
		return n.roots, nil
	}
	pem, err := os.ReadFile(n.CAFile)
	if err != nil {
		return nil, fmt.Errorf("cannot read the CA file: %v", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate (-----BEGIN CERTIFICATE-----)", n.CAFile)
	}
	n.roots, n.rootsFile = pool, n.CAFile
	return pool, nil
}

// prefixesValue is a comma-separated list of IPs and CIDRs.
type prefixesValue struct{ p *[]netip.Prefix }

func (v *prefixesValue) Type() string { return "networks" }

func (v *prefixesValue) String() string {
	s := make([]string, len(*v.p))
	for i, p := range *v.p {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func (v *prefixesValue) Set(s string) error {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return fmt.Errorf("%q is neither an IP nor a CIDR such as 10.0.0.0/8", f)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	*v.p = out
	return nil
}
