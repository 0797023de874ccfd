package announce

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
)

var mac = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}

func TestGARPFrame(t *testing.T) {
	ip := netip.MustParseAddr("192.0.2.10")
	b, err := Frame(mac, ip)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != minFrameLen {
		t.Errorf("frame is %d bytes, want %d (padded)", len(b), minFrameLen)
	}
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x0a, 0x08, 0x06, // Ethernet, broadcast
		0, 1, 0x08, 0, 6, 4, 0, 1, // Ethernet/IPv4, request
		0x02, 0, 0, 0, 0, 0x0a, 192, 0, 2, 10, // sender = us
		0, 0, 0, 0, 0, 0, 192, 0, 2, 10, // target address = sender address
	}
	if !bytes.Equal(b[:len(want)], want) {
		t.Errorf("frame\n% x\nwant\n% x", b[:len(want)], want)
	}
	if !bytes.Equal(b[len(want):], make([]byte, minFrameLen-len(want))) {
		t.Errorf("padding is not zero: % x", b[len(want):])
	}
}

func TestNAFrame(t *testing.T) {
	ip := netip.MustParseAddr("2001:db8::10")
	b, err := Frame(mac, ip)
	if err != nil {
		t.Fatal(err)
	}
	eth, ip6, icmp := b[:14], b[14:54], b[54:]
	if !bytes.Equal(eth, []byte{0x33, 0x33, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 0x0a, 0x86, 0xdd}) {
		t.Errorf("Ethernet header % x", eth)
	}
	if ip6[0]>>4 != 6 || int(binary.BigEndian.Uint16(ip6[4:6])) != len(icmp) || ip6[6] != 58 || ip6[7] != 255 {
		t.Errorf("IPv6 header % x (want version 6, payload %d, ICMPv6, hop limit 255)", ip6, len(icmp))
	}
	if src, dst := netip.AddrFrom16([16]byte(ip6[8:24])), netip.AddrFrom16([16]byte(ip6[24:40])); src != ip || dst != allNodes {
		t.Errorf("addresses %s → %s, want %s → ff02::1", src, dst, ip)
	}
	if len(icmp) != 32 || icmp[0] != 136 || icmp[1] != 0 || icmp[4] != 0x20 {
		t.Errorf("ICMPv6 % x: want a 32-byte NA with only the override flag", icmp)
	}
	if got := netip.AddrFrom16([16]byte(icmp[8:24])); got != ip {
		t.Errorf("target %s, want %s", got, ip)
	}
	if !bytes.Equal(icmp[24:], append([]byte{2, 1}, mac...)) {
		t.Errorf("option % x, want the target link-layer address", icmp[24:])
	}
	// A correct checksum makes the sum over pseudo-header and message (checksum included) 0.
	if c := icmpv6Checksum(ip, allNodes, icmp); c != 0 {
		t.Errorf("checksum does not verify (residue %#04x)", c)
	}
}

func TestFrameErrors(t *testing.T) {
	if _, err := Frame(nil, netip.MustParseAddr("192.0.2.1")); err == nil {
		t.Error("no MAC: want an error")
	}
	if _, err := Frame(mac, netip.Addr{}); err == nil {
		t.Error("invalid address: want an error")
	}
	if err := Send("no-such-if0", netip.MustParseAddr("192.0.2.1")); err == nil {
		t.Error("missing interface: want an error")
	}
}
