package bpf

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/test/netns"
)

// runOutIn runs a program in n's namespace (where its route lookups happen) on pkt with
// skb->mark set and returns the verdict and the frame it left.
func runOutIn(tb testing.TB, n *netns.Node, p *ebpf.Program, pkt []byte, mark uint32) (uint32, []byte) {
	tb.Helper()
	in := make([]byte, 12)
	binary.NativeEndian.PutUint32(in[8:], mark)
	out := make([]byte, 512)
	data := make([]byte, len(pkt)+256)
	opts := &ebpf.RunOptions{Data: pkt, DataOut: data, Context: in, ContextOut: out}
	var ret uint32
	must(tb, n.Do(func() error {
		var err error
		ret, err = p.Run(opts)
		return err
	}))
	return ret, opts.DataOut
}

// checkVXLAN checks the frame an encapsulating program produced: outer IPv4 from the node to
// remote (header checksum valid, DF clear, TTL 64), UDP to the tunnel port from the flow-hash
// range with a zero checksum, the VXLAN header with vni, and the original frame inside.
func checkVXLAN(t *testing.T, frame, inner []byte, remote netip.Addr, vni uint32) {
	t.Helper()
	const hdr = 14 + 20 + 8 + 8
	if len(frame) != hdr+len(inner) {
		t.Fatalf("frame of %d bytes, want %d (the %d-byte frame and %d bytes of headers)", len(frame), hdr+len(inner), len(inner), hdr)
	}
	if et := binary.BigEndian.Uint16(frame[12:]); et != unix.ETH_P_IP {
		t.Errorf("outer ethertype %#x, want IPv4", et)
	}
	ip := frame[14:34]
	if ip[0] != 0x45 || binary.BigEndian.Uint16(ip[2:]) != uint16(len(frame)-14) || ip[6]&0x40 != 0 || ip[8] != 64 ||
		ip[9] != unix.IPPROTO_UDP {
		t.Errorf("outer IPv4 header % x: want version 4, IHL 5, total length %d, DF clear, TTL 64, UDP", ip, len(frame)-14)
	}
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	if sum != 0xffff {
		t.Errorf("outer IPv4 header checksum does not verify (sum %#x)", sum)
	}
	if src, dst := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20])); src != testNodeIP || dst != remote {
		t.Errorf("outer %s → %s, want %s → %s", src, dst, testNodeIP, remote)
	}
	udp := frame[34:42]
	sport, dport := binary.BigEndian.Uint16(udp), binary.BigEndian.Uint16(udp[2:])
	if sport < 32768 || sport >= 61000 || dport != fuzzTunnelPort {
		t.Errorf("outer UDP %d → %d, want a source port in 32768-60999 and the tunnel port %d", sport, dport, fuzzTunnelPort)
	}
	if l := binary.BigEndian.Uint16(udp[4:]); l != uint16(len(frame)-34) {
		t.Errorf("UDP length %d, want %d", l, len(frame)-34)
	}
	if c := binary.BigEndian.Uint16(udp[6:]); c != 0 {
		t.Errorf("UDP checksum %#x, want 0 (RFC 7348)", c)
	}
	vx := frame[42:50]
	if vx[0] != 0x08 || vx[1]|vx[2]|vx[3]|vx[7] != 0 || binary.BigEndian.Uint32(vx[4:])>>8 != vni {
		t.Errorf("VXLAN header % x, want flags 08 and VNI %#x", vx, vni)
	}
	if !bytes.Equal(frame[hdr:], inner) {
		t.Errorf("inner frame changed:\n got % x\nwant % x", frame[hdr:], inner)
	}
}

// TestTunnelEgressEncap: with a next hop known for the peer and its neighbour resolved,
// egressd_tun_egress encapsulates the frame itself (a source node's steered packet to its
// gateway, a gateway's reply to its source node) and redirects it, counted InProgram; while
// the neighbour is unresolved (route lookup NO_NEIGH) or without a next hop, it sets the
// tunnel key and leaves the frame untouched to the tunnel device, counted by reason. The
// programs run in a node's namespace whose underlay holds the test node's address, with the
// peers on link.
func TestTunnelEgressEncap(t *testing.T) {
	topo := netns.New(t, netns.Spec{NoIPv6: true, NoHostileRules: true, Nodes: []netns.NodeSpec{{Name: "self"}}})
	self := topo.Node("self")
	must(t, self.AddAddr(self.Link, netip.PrefixFrom(testNodeIP, 24)))
	l, err := self.Netlink().LinkByName(self.Link)
	must(t, err)
	d := load(t, Limits{})
	prog := d.Program(HookTunnelEgress)
	tcp := uint8(unix.IPPROTO_TCP)
	flow := FlowKey{Src: pod4, Dst: dst4, Sport: 40000, Dport: 80, Proto: tcp}
	setFlow(t, d, flow, egressdFlow{Group: 5, Gateway: gwA.ID, Ifindex: 3, GwUnderlay: be32(gwA.Underlay)})
	source := netip.MustParseAddr("192.168.0.12")
	setReturnFlow(t, d, flow, source, 5)
	steered := packet(pod4, dst4, tcp, 40000, 80)
	reply := packet(dst4, pod4, tcp, 80, 40000)
	self5 := StatsKey{5, GatewaySelf}
	fallback := func(t *testing.T, what string, want func(EncapStats) uint64) {
		t.Helper()
		before, err := d.EncapStats()
		must(t, err)
		got, frame := runOutIn(t, self, prog, steered, dm.Magic|dm.Steer|5)
		if got != actOK {
			t.Fatalf("verdict %#x, want TC_ACT_OK (to the tunnel device)", got)
		}
		if !bytes.Equal(frame, steered) {
			t.Errorf("frame changed on the tunnel device's path")
		}
		after, err := d.EncapStats()
		must(t, err)
		if want(after) != want(before)+1 || after.InProgram != before.InProgram {
			t.Errorf("encapsulation counters %+v → %+v, want %s +1", before, after, what)
		}
	}

	t.Run("no next hop: the tunnel device encapsulates", func(t *testing.T) {
		fallback(t, "NoNexthop", func(s EncapStats) uint64 { return s.NoNexthop })
	})
	for _, peer := range []netip.Addr{gwA.Underlay, source} {
		must(t, d.SetNexthop(peer, Nexthop{Ifindex: l.Attrs().Index}))
	}
	if nh, err := d.Nexthops(); err != nil || len(nh) != 2 || nh[source] != (Nexthop{Ifindex: l.Attrs().Index}) {
		t.Fatalf("next hops %v (%v), want both peers", nh, err)
	}
	t.Run("neighbour unresolved: the tunnel device encapsulates", func(t *testing.T) {
		fallback(t, "Route[NO_NEIGH]", func(s EncapStats) uint64 { return s.Route[7] })
	})
	peerMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x21}
	for _, peer := range []netip.Addr{gwA.Underlay, source} {
		must(t, self.Netlink().NeighAdd(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_INET,
			State: netlink.NUD_PERMANENT, IP: peer.AsSlice(), HardwareAddr: peerMAC}))
	}
	inProgram := func(t *testing.T, pkt []byte, mark uint32, remote netip.Addr, vni uint32) {
		t.Helper()
		before, err := d.EncapStats()
		must(t, err)
		got, frame := runOutIn(t, self, prog, pkt, mark)
		if got != actRedirect {
			t.Fatalf("verdict %#x, want TC_ACT_REDIRECT", got)
		}
		checkVXLAN(t, frame, pkt, remote, vni)
		if !bytes.Equal(frame[:6], peerMAC) || !bytes.Equal(frame[6:12], l.Attrs().HardwareAddr) {
			t.Errorf("outer MACs %x → %x, want %s → %s", frame[6:12], frame[:6], l.Attrs().HardwareAddr, peerMAC)
		}
		after, err := d.EncapStats()
		must(t, err)
		if after.InProgram != before.InProgram+1 || after.Fallback() != before.Fallback() {
			t.Errorf("encapsulation counters %+v → %+v, want InProgram +1", before, after)
		}
	}

	t.Run("steered packet", func(t *testing.T) {
		inProgram(t, steered, dm.Magic|dm.Steer|5, gwA.Underlay, 5)
	})
	t.Run("reply", func(t *testing.T) {
		before := packets(t, d, self5)
		inProgram(t, reply, dm.Magic|dm.Reply, source, VNIReply|5)
		if after := packets(t, d, self5); after != before+1 {
			t.Errorf("counter %+v went from %d to %d, want +1", self5, before, after)
		}
	})
	t.Run("inner IPv6", func(t *testing.T) {
		pod6, dst6 := netip.MustParseAddr("fd00::2"), netip.MustParseAddr("2001:db8::10")
		k := FlowKey{Src: pod6, Dst: dst6, Sport: 40000, Dport: 80, Proto: tcp}
		setFlow(t, d, k, egressdFlow{Group: 5, Gateway: gwA.ID, Ifindex: 3, GwUnderlay: be32(gwA.Underlay)})
		inProgram(t, packet(pod6, dst6, tcp, 40000, 80), dm.Magic|dm.Steer|5, gwA.Underlay, 5)
	})
}
