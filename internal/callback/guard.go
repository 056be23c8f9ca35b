package callback

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"syscall"
	"time"
)

// ErrPrivateAddress is wrapped by the errors of CheckURL and of a delivery
// refused because its host is, or resolves to, an address that is not
// public: loopback, private, link-local (cloud metadata services live
// there), carrier-grade NAT, multicast or reserved.
var ErrPrivateAddress = errors.New("not a public address")

// nonPublic lists the ranges that net/netip's predicates do not cover.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and broadcast
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64: would reach IPv4 space
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
}

// IsPublic reports whether ip is an address a callback may be sent to when
// private addresses are not allowed.
func IsPublic(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() ||
		ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// CheckURL refuses a callback URL whose host is, or resolves to, an
// address that is not public (ErrPrivateAddress), or a host that does not
// exist. It is the early check, at enqueue, that tells the application at
// once; deliveries check the address they connect to again, since a name
// can resolve elsewhere later. A lookup that fails for a transient reason
// lets the URL through for that reason.
func CheckURL(ctx context.Context, resolver *net.Resolver, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return errors.New("must be an http or https URL")
	}
	host := u.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil {
		if !IsPublic(ip) {
			return fmt.Errorf("host %s is %w", host, ErrPrivateAddress)
		}
		return nil
	}
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	ips, err := resolver.LookupNetIP(lctx, "ip", host)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return fmt.Errorf("host %s does not resolve", host)
		}
		return nil
	}
	for _, ip := range ips {
		if !IsPublic(ip) {
			return fmt.Errorf("host %s resolves to %s, %w", host, ip.Unmap(), ErrPrivateAddress)
		}
	}
	return nil
}

// publicOnly is a net.Dialer Control function that refuses connections to
// addresses that are not public. It runs after name resolution, on the
// address actually dialled, so DNS rebinding cannot get around it.
func publicOnly(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("callback address %q: %w", address, err)
	}
	if !IsPublic(ap.Addr()) {
		return fmt.Errorf("callback address %s is %w", ap.Addr().Unmap(), ErrPrivateAddress)
	}
	return nil
}
