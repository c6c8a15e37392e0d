package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
)

// ErrBlockedAddress is wrapped by the error of a connection refused because
// of its address (see Options.GuardPrivate).
var ErrBlockedAddress = errors.New("connection to a non-public address refused")

// BlockedError names the address a connection was refused to and its kind.
type BlockedError struct {
	Addr netip.Addr
	Kind string // "loopback", "private", "link-local", …
}

func (e *BlockedError) Error() string {
	return fmt.Sprintf("%v: %s is a %s address, and it is not in the allowed private networks", ErrBlockedAddress, e.Addr, e.Kind)
}

func (e *BlockedError) Unwrap() error { return ErrBlockedAddress }

// nonPublic are the ranges, besides what netip classifies, that no public
// server has.
var nonPublic = []struct {
	p    netip.Prefix
	kind string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "this-network"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared (carrier-grade NAT)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF-reserved"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
}

// nat64 embeds an IPv4 address in its last 32 bits.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// Classify returns the kind of a non-public address ("loopback", "private",
// "link-local", "unspecified", "multicast", …), or "" for a public one.
func Classify(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is6() && nat64.Contains(ip) {
		b := ip.As16()
		return Classify(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
	}
	switch {
	case !ip.IsValid():
		return "invalid"
	case ip.IsLoopback():
		return "loopback"
	case ip.IsPrivate():
		return "private"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return "link-local"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		return "multicast"
	}
	for _, r := range nonPublic {
		if r.p.Contains(ip) {
			return r.kind
		}
	}
	return ""
}

// control is a dialer's ControlContext refusing non-public addresses not in
// allow. It sees the address actually dialed, after name resolution, so a
// name that resolves (or re-resolves) to an internal address is caught.
func control(allow []netip.Prefix) func(context.Context, string, string, syscall.RawConn) error {
	return func(_ context.Context, _, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("%w: cannot read the address %q", ErrBlockedAddress, address)
		}
		ip := ap.Addr().Unmap()
		kind := Classify(ip)
		if kind == "" {
			return nil
		}
		for _, p := range allow {
			if p.Contains(ip) {
				return nil
			}
		}
		return &BlockedError{Addr: ip, Kind: kind}
	}
}

// dialWithWriteDeadline dials with d and fails any write that makes no
// progress for idle (the server stopped reading).
func dialWithWriteDeadline(d *net.Dialer, idle time.Duration) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &writeDeadlineConn{Conn: c, idle: idle, host: addr}, nil
	}
}

type writeDeadlineConn struct {
	net.Conn
	idle time.Duration
	host string
}

func (c *writeDeadlineConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.idle)); err != nil {
		return 0, err
	}
	n, err := c.Conn.Write(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		err = &IdleError{Op: "sending to", Host: c.host, Idle: c.idle}
	}
	return n, err
}
