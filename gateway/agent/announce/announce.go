// Package announce tells the neighbours on a link that an address now lives behind this
// node's interface: a gratuitous ARP request for IPv4, an unsolicited neighbour advertisement
// (override flag set) for IPv6. The agent sends them when a static egress IP moves to its
// node, so that routers and hosts on the subnet stop sending its replies to the old holder.
//
// Frames are built here and sent on an AF_PACKET socket, so the address need not pass the
// stack's checks (an IPv6 address egressd adds with NODAD is usable at once). The package
// returns errors and never logs.
package announce

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

const (
	etherTypeARP  = 0x0806
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd

	ethHeaderLen = 14
	// minFrameLen is the shortest Ethernet frame without its FCS; not every driver pads a
	// short frame, so ARP frames are padded here.
	minFrameLen = 60

	icmpv6NeighborAdvert = 136
	naFlagOverride       = 0x20
	optTargetLinkAddr    = 2
)

var (
	broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	// allNodesMAC is the Ethernet address of ff02::1 (33:33 + its last 32 bits).
	allNodesMAC = net.HardwareAddr{0x33, 0x33, 0x00, 0x00, 0x00, 0x01}
	allNodes    = netip.MustParseAddr("ff02::1")
)

// Send sends one announcement of ip on the interface named ifname, from the interface's MAC
// address. It works in the network namespace of the calling thread. The interface needs an
// Ethernet (6-byte) address; ip need not be assigned to it yet.
func Send(ifname string, ip netip.Addr) error {
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("announcing %s: finding interface %s: %w", ip, ifname, err)
	}
	frame, err := Frame(ifc.HardwareAddr, ip)
	if err != nil {
		return fmt.Errorf("announcing %s on %s: %w", ip, ifname, err)
	}
	if err := sendFrame(ifc.Index, frame); err != nil {
		return fmt.Errorf("announcing %s on %s: %w", ip, ifname, err)
	}
	return nil
}

// Frame builds the Ethernet frame announcing ip from mac: a broadcast gratuitous ARP request
// (sender and target address both ip) for IPv4, or an unsolicited neighbour advertisement to
// ff02::1 with the override flag and a target link-layer address option for IPv6.
func Frame(mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	if len(mac) != 6 {
		return nil, fmt.Errorf("interface has no Ethernet address (%q)", mac)
	}
	ip = ip.Unmap()
	switch {
	case !ip.IsValid():
		return nil, errors.New("invalid address")
	case ip.Is4():
		return garp(mac, ip), nil
	default:
		return unsolicitedNA(mac, ip), nil
	}
}

func ethHeader(dst, src net.HardwareAddr, etherType uint16) []byte {
	b := make([]byte, ethHeaderLen, minFrameLen)
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:14], etherType)
	return b
}

func garp(mac net.HardwareAddr, ip netip.Addr) []byte {
	b := ethHeader(broadcastMAC, mac, etherTypeARP)
	a := ip.As4()
	b = binary.BigEndian.AppendUint16(b, 1) // hardware type: Ethernet
	b = binary.BigEndian.AppendUint16(b, etherTypeIPv4)
	b = append(b, 6, 4)                     // address lengths
	b = binary.BigEndian.AppendUint16(b, 1) // request: accepted by hosts that ignore replies
	b = append(b, mac...)
	b = append(b, a[:]...)
	b = append(b, make([]byte, 6)...) // target hardware address: ignored (RFC 5227)
	b = append(b, a[:]...)
	for len(b) < minFrameLen {
		b = append(b, 0)
	}
	return b
}

func unsolicitedNA(mac net.HardwareAddr, ip netip.Addr) []byte {
	// ICMPv6: type, code, checksum, flags + reserved, target, one option (8 bytes).
	icmp := make([]byte, 0, 32)
	icmp = append(icmp, icmpv6NeighborAdvert, 0, 0, 0)
	icmp = append(icmp, naFlagOverride, 0, 0, 0) // not solicited, not a router
	icmp = append(icmp, ip.AsSlice()...)
	icmp = append(icmp, optTargetLinkAddr, 1)
	icmp = append(icmp, mac...)
	// The source is the target itself, as Linux does for its own unsolicited NAs: the address
	// is certainly on this link, and a link-local one may not exist yet.
	binary.BigEndian.PutUint16(icmp[2:4], icmpv6Checksum(ip, allNodes, icmp))

	b := ethHeader(allNodesMAC, mac, etherTypeIPv6)
	b = append(b, 0x60, 0, 0, 0) // version 6, no traffic class or flow label
	b = binary.BigEndian.AppendUint16(b, uint16(len(icmp)))
	b = append(b, unix.IPPROTO_ICMPV6, 255) // hop limit 255: receivers drop NDP with any other
	b = append(b, ip.AsSlice()...)
	b = append(b, allNodes.AsSlice()...)
	return append(b, icmp...)
}

// icmpv6Checksum is the Internet checksum over the IPv6 pseudo-header and msg (whose checksum
// field is zero).
func icmpv6Checksum(src, dst netip.Addr, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src.AsSlice())
	add(dst.AsSlice())
	var l [8]byte
	binary.BigEndian.PutUint32(l[0:4], uint32(len(msg)))
	l[7] = unix.IPPROTO_ICMPV6
	add(l[:])
	add(msg)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// sendFrame sends a complete Ethernet frame out of the interface. The socket has protocol 0,
// so it receives nothing.
func sendFrame(ifindex int, frame []byte) error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening packet socket: %w", err)
	}
	defer func() { _ = unix.Close(fd) }()
	to := &unix.SockaddrLinklayer{
		Ifindex:  ifindex,
		Protocol: htons(binary.BigEndian.Uint16(frame[12:14])),
		Halen:    6,
	}
	copy(to.Addr[:], frame[0:6])
	if err := unix.Sendto(fd, frame, 0, to); err != nil {
		return fmt.Errorf("sending: %w", err)
	}
	return nil
}

// htons puts a 16-bit value in network order for a sockaddr field the kernel reads as such.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}
