package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The fuzz targets run each program on arbitrary frames and judge the verdict with frame, a
// strict parser written here from the RFCs, not from egressd.c: a frame that is not a
// well-formed IP packet of a steered flow must never be redirected, and a well-formed one
// must be. `go test` runs the seeds; `make fuzz` fuzzes each target for FUZZTIME.

// maxFrame keeps inputs within what BPF_PROG_TEST_RUN takes for an skb.
const maxFrame = 1500

type frameKind int

const (
	notIP     frameKind = iota // no Ethernet header, or an EtherType that is neither IPv4 nor IPv6
	malformed                  // IP, but a header the stack would drop
	wellFormed
)

// frame is what the oracle reads from a fuzzed frame.
type frame struct {
	kind     frameKind
	src, dst netip.Addr // IPv4 addresses as 4-byte addresses, IPv6 as 16-byte ones
	proto    uint8      // IPv4 protocol, or the IPv6 next header (extension headers included)
	// sport, dport: TCP/UDP ports, or the ICMP echo identifier in sport; zero for
	// fragments, whose later pieces carry no ports.
	sport, dport uint16
	// udpDst is the UDP destination port wherever the UDP header is in the frame: whole
	// datagrams, IPv4 first fragments, and IPv6 first fragments behind a fragment header.
	udpDst uint16
	// firstFrag is set on an IPv4 first fragment of TCP or UDP with both ports in it, which
	// are fragSport and fragDport.
	firstFrag            bool
	fragSport, fragDport uint16
}

// parseFrame is the oracle's parser. IPv4: version 4, IHL at least 5, a total length that
// covers the header and fits in the frame (Ethernet padding after it is allowed). IPv6:
// version 6, the payload length fits, no IPv4-mapped source (RFC 4291 §2.5.5.2: not for the
// wire). A non-fragment TCP, UDP or ICMP packet needs its whole header (20, 8, 8 bytes) inside
// the datagram.
func parseFrame(b []byte) frame {
	if len(b) < 14 {
		return frame{kind: notIP}
	}
	var f frame
	var l4 []byte
	frag := false
	switch binary.BigEndian.Uint16(b[12:]) {
	case 0x0800:
		ip := b[14:]
		if len(ip) < 20 || ip[0]>>4 != 4 {
			return frame{kind: malformed}
		}
		hl, tot := int(ip[0]&0x0f)*4, int(binary.BigEndian.Uint16(ip[2:]))
		if hl < 20 || tot < hl || tot > len(ip) {
			return frame{kind: malformed}
		}
		f.src = netip.AddrFrom4([4]byte(ip[12:16]))
		f.dst = netip.AddrFrom4([4]byte(ip[16:20]))
		f.proto = ip[9]
		frag = binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 // MF or an offset
		l4 = ip[hl:tot]
	case 0x86dd:
		ip := b[14:]
		if len(ip) < 40 || ip[0]>>4 != 6 {
			return frame{kind: malformed}
		}
		end := 40 + int(binary.BigEndian.Uint16(ip[4:]))
		if end > len(ip) {
			return frame{kind: malformed}
		}
		f.src = netip.AddrFrom16([16]byte(ip[8:24]))
		f.dst = netip.AddrFrom16([16]byte(ip[24:40]))
		if f.src.Is4In6() {
			return frame{kind: malformed}
		}
		f.proto = ip[6]
		l4 = ip[40:end]
	default:
		return frame{kind: notIP}
	}
	f.kind = wellFormed
	if frag {
		off := binary.BigEndian.Uint16(b[14+6:]) & 0x1fff
		if f.proto == unix.IPPROTO_UDP && off == 0 && len(l4) >= 8 {
			f.udpDst = binary.BigEndian.Uint16(l4[2:])
		}
		if (f.proto == unix.IPPROTO_UDP || f.proto == unix.IPPROTO_TCP) && off == 0 && len(l4) >= 4 {
			f.firstFrag = true
			f.fragSport, f.fragDport = binary.BigEndian.Uint16(l4[0:]), binary.BigEndian.Uint16(l4[2:])
		}
		return f
	}
	if f.proto == unix.IPPROTO_FRAGMENT && len(l4) >= 16 && l4[0] == unix.IPPROTO_UDP &&
		binary.BigEndian.Uint16(l4[2:])&0xfff8 == 0 {
		f.udpDst = binary.BigEndian.Uint16(l4[10:])
	}
	switch f.proto {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP:
		need := 8
		if f.proto == unix.IPPROTO_TCP {
			need = 20
		}
		if len(l4) < need {
			return frame{kind: malformed}
		}
		f.sport, f.dport = binary.BigEndian.Uint16(l4[0:]), binary.BigEndian.Uint16(l4[2:])
		if f.proto == unix.IPPROTO_UDP {
			f.udpDst = f.dport
		}
	case unix.IPPROTO_ICMP, unix.IPPROTO_ICMPV6:
		if len(l4) < 8 {
			return frame{kind: malformed}
		}
		// Echo request/reply (ICMP 8/0, ICMPv6 128/129): flows are told apart by the
		// identifier, the same in both directions (docs/datapath.md).
		switch l4[0] {
		case 0, 8, 128, 129:
			f.sport = binary.BigEndian.Uint16(l4[4:])
		}
	}
	return f
}

// steering is the policy the fuzzed classifier runs with, as the oracle sees it.
type steering struct {
	sets  map[netip.Addr]uint32 // pod → policy set (0: selected by no policy)
	rules []fuzzRule            // policy set 1
	gw    map[uint32]uint32     // group → its one gateway; a group not here does not exist
}

type fuzzRule struct {
	prefix   netip.Prefix
	group    uint32
	excluded bool
}

// group is the group a frame must be steered to, if any: its source is a pod of a policy set
// and the longest rule prefix holding its destination is not an exclusion.
func (s steering) group(f frame) (uint32, bool) {
	if f.kind != wellFormed || s.sets[f.src] == 0 {
		return 0, false
	}
	best := -1
	var r fuzzRule
	for _, c := range s.rules {
		if c.prefix.Contains(f.dst) && c.prefix.Bits() > best {
			best, r = c.prefix.Bits(), c
		}
	}
	if best < 0 || r.excluded {
		return 0, false
	}
	return r.group, true
}

var fuzzSteering = steering{
	sets: map[netip.Addr]uint32{pod4: 1, pod6: 1, other4: 0},
	rules: []fuzzRule{
		{prefix: netip.MustParsePrefix("203.0.113.0/24"), group: 5},
		{prefix: netip.MustParsePrefix("203.0.113.128/25"), excluded: true},
		{prefix: netip.MustParsePrefix("203.0.113.16/28"), group: 6},
		{prefix: netip.MustParsePrefix("198.51.100.0/24"), group: 7}, // group 7 does not exist
		{prefix: netip.MustParsePrefix("2001:db8::/32"), group: 5},
	},
	gw: map[uint32]uint32{5: gwA.ID, 6: gwB.ID},
}

func loadSteering(tb testing.TB, s steering) *Datapath {
	d := load(tb, Limits{})
	for ip, set := range s.sets {
		must(tb, d.SetEndpoint(ip, Endpoint{PolicySet: set, Ifindex: 1}))
	}
	for _, r := range s.rules {
		must(tb, d.SetRule(RuleKey{1, r.prefix}, Rule{Group: r.group, Excluded: r.excluded}))
	}
	must(tb, d.SetGroup(5, []Gateway{gwA}))
	must(tb, d.SetGroup(6, []Gateway{gwB}))
	return d
}

// statsTotal is every packet and drop counted, over all keys.
func statsTotal(tb testing.TB, d *Datapath) (map[StatsKey]Stats, uint64) {
	tb.Helper()
	st, err := d.Stats()
	must(tb, err)
	var n uint64
	for _, s := range st {
		n += s.Packets
		for _, x := range s.Drops {
			n += x
		}
	}
	return st, n
}

// ipv4Frame and ipv6Frame build frames from header fields the seeds mangle.
func ipv4Frame(ihl, ver uint8, totDelta int, frag uint16, proto uint8, src, dst netip.Addr, opts, l4 []byte) []byte {
	b := append(append([]byte{}, hostMAC...), podMAC...)
	b = append(b, 0x08, 0x00)
	ip := make([]byte, 20)
	ip[0] = ver<<4 | ihl
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(opts)+len(l4)+totDelta))
	binary.BigEndian.PutUint16(ip[6:], frag)
	ip[8], ip[9] = 64, proto
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	b = append(b, ip...)
	b = append(b, opts...)
	return append(b, l4...)
}

func ipv6Frame(next uint8, src, dst netip.Addr, payload []byte) []byte {
	b := append(append([]byte{}, hostMAC...), podMAC...)
	b = append(b, 0x86, 0xdd)
	ip := make([]byte, 40)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(payload)))
	ip[6], ip[7] = next, 64
	s, d := src.As16(), dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	b = append(b, ip...)
	return append(b, payload...)
}

func tcpHeader(sport, dport uint16) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	h[12] = 5 << 4
	return h
}

// seedFrames are well-formed packets of every kind the programs handle and the malformed
// ones of issue 13: truncated headers, IP options, fragments, IPv6 extension headers.
func seedFrames(src4, dst4 netip.Addr, src6, dst6 netip.Addr, sport, dport uint16) [][]byte {
	tcp, udp := uint8(unix.IPPROTO_TCP), uint8(unix.IPPROTO_UDP)
	full := packet(src4, dst4, tcp, sport, dport)
	opts := []byte{0x94, 0x04, 0, 0} // router alert
	hopByHop := append([]byte{unix.IPPROTO_TCP, 0, 1, 4, 0, 0, 0, 0}, tcpHeader(sport, dport)...)
	v6tcp := packet(src6, dst6, tcp, sport, dport)
	mapped := netip.AddrFrom16(src4.As16())
	seeds := [][]byte{
		full,
		packet(src4, dst4, udp, sport, dport),
		packet(src4, dst4, unix.IPPROTO_ICMP, sport, 0),
		v6tcp,
		packet(src6, dst6, udp, sport, dport),
		packet(src6, dst6, unix.IPPROTO_ICMPV6, sport, 0),
		append(append([]byte{}, full...), make([]byte, 16)...),                              // Ethernet padding
		ipv4Frame(6, 4, 0, 0, tcp, src4, dst4, opts, tcpHeader(sport, dport)),               // IP options
		ipv4Frame(5, 4, 0, 0x2000, tcp, src4, dst4, nil, tcpHeader(sport, dport)),           // first fragment
		ipv4Frame(5, 4, 0, 0x0010, tcp, src4, dst4, nil, make([]byte, 8)),                   // later fragment
		ipv4Frame(5, 4, 0, 0x0001, tcp, src4, dst4, nil, nil),                               // fragment, no payload
		ipv6Frame(0, src6, dst6, hopByHop),                                                  // hop-by-hop options
		ipv6Frame(44, src6, dst6, make([]byte, 8)),                                          // fragment header
		ipv6Frame(59, src6, dst6, nil),                                                      // no next header
		ipv4Frame(4, 4, 0, 0, tcp, src4, dst4, nil, tcpHeader(sport, dport)),                // IHL below 5
		ipv4Frame(5, 6, 0, 0, tcp, src4, dst4, nil, tcpHeader(sport, dport)),                // version 6 in IPv4
		ipv4Frame(15, 4, 0, 0, tcp, src4, dst4, nil, tcpHeader(sport, dport)),               // IHL past the datagram
		ipv4Frame(5, 4, 100, 0, tcp, src4, dst4, nil, tcpHeader(sport, dport)),              // longer than the frame
		ipv4Frame(5, 4, -10, 0, tcp, src4, dst4, nil, tcpHeader(sport, dport)),              // TCP header cut by tot_len
		ipv4Frame(5, 4, 0, 0, tcp, src4, dst4, nil, []byte{0x9c, 0x40, 0, 80}),              // 4 bytes of TCP
		ipv4Frame(5, 4, 0, 0, unix.IPPROTO_ICMP, src4, dst4, nil, []byte{8, 0, 0, 0, 0, 7}), // short ICMP
		ipv6Frame(tcp, mapped, dst6, tcpHeader(sport, dport)),                               // IPv4-mapped source
		v6tcp[:14+40+2], // ports cut short
		full[:14+10],    // IPv4 header cut short
		full[:14],       // Ethernet only
		append(append(append([]byte{}, full[:12]...), 0x81, 0x00, 0, 1), full[12:]...), // VLAN tag
	}
	v6ver := append([]byte{}, v6tcp...)
	v6ver[14] = 0x40 // version 4 in an IPv6 header
	return append(append(seeds, v6ver), reservedPortFrames(src4, dst4, src6, dst6)...)
}

// reservedPortFrames are UDP packets to the tunnel and probe ports, which the classifier drops
// from any pod whatever their destination: whole datagrams, first fragments (IPv4, and IPv6
// behind a fragment header), a later fragment (no ports: passed), and TCP to the port (passed).
func reservedPortFrames(src4, dst4, src6, dst6 netip.Addr) [][]byte {
	udp := uint8(unix.IPPROTO_UDP)
	udpHdr := func(dport uint16) []byte {
		h := make([]byte, 8)
		binary.BigEndian.PutUint16(h[0:], 40000)
		binary.BigEndian.PutUint16(h[2:], dport)
		binary.BigEndian.PutUint16(h[4:], 1400)
		return h
	}
	v6frag := func(off uint16, dport uint16) []byte {
		fh := []byte{unix.IPPROTO_UDP, 0, byte(off >> 8), byte(off) | 1, 0, 0, 0, 7} // M flag set
		return ipv6Frame(unix.IPPROTO_FRAGMENT, src6, dst6, append(fh, udpHdr(dport)...))
	}
	return [][]byte{
		packet(src4, dst4, udp, 40000, fuzzTunnelPort),
		packet(src4, dst4, udp, 40000, fuzzProbePort),
		packet(src6, dst6, udp, 40000, fuzzTunnelPort),
		ipv4Frame(5, 4, 0, 0x2000, udp, src4, dst4, nil, udpHdr(fuzzTunnelPort)), // first fragment
		ipv4Frame(5, 4, 0, 0x2010, udp, src4, dst4, nil, udpHdr(fuzzTunnelPort)), // later fragment
		v6frag(0, fuzzTunnelPort),                                                // IPv6 first fragment
		v6frag(0x10<<3, fuzzTunnelPort),                                          // IPv6 later fragment
		packet(src4, dst4, unix.IPPROTO_TCP, 40000, fuzzTunnelPort),              // TCP
		packet(src4, dst4, udp, fuzzTunnelPort, 53),                              // from the port
	}
}

// shortIP reports a frame with an IPv4 or IPv6 EtherType too short for the IP header:
// BPF_PROG_TEST_RUN refuses those (EINVAL) before the program runs, so they cannot be tested
// here.
func shortIP(pkt []byte) bool {
	switch binary.BigEndian.Uint16(pkt[12:]) {
	case 0x0800:
		return len(pkt) < 14+20
	case 0x86dd:
		return len(pkt) < 14+40
	}
	return false
}

func fuzzRun(tb testing.TB, p *ebpf.Program, pkt []byte, mark uint32) (ret, markOut uint32, out []byte) {
	tb.Helper()
	in := make([]byte, 12)
	binary.NativeEndian.PutUint32(in[8:], mark)
	ctx := make([]byte, 512)
	opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)+256), Context: in, ContextOut: ctx}
	ret, err := p.Run(opts)
	if err != nil {
		tb.Fatalf("running %s on % x: %v", p, pkt, err)
	}
	return ret, binary.NativeEndian.Uint32(ctx[8:]), opts.DataOut
}

// FuzzClassifier: egressd_pod redirects exactly the well-formed packets of a steered flow (a
// pod of a policy set to a destination whose longest rule is not an exclusion) and counts
// each on its group's gateway; a flow of a group that does not exist is dropped and counted
// no_group; everything else goes on to the stack (next) with no counter moved.
func FuzzClassifier(f *testing.F) {
	dst6 := netip.MustParseAddr("2001:db8::10")
	for _, dst := range []netip.Addr{dst4, netip.MustParseAddr("203.0.113.20"), netip.MustParseAddr("203.0.113.200"), netip.MustParseAddr("198.51.100.1")} {
		for _, s := range seedFrames(pod4, dst, pod6, dst6, 40000, 80) {
			f.Add(s)
		}
	}
	for _, s := range seedFrames(other4, dst4, netip.MustParseAddr("fd44:1::9"), netip.MustParseAddr("2001:db9::1"), 40000, 80) {
		f.Add(s)
	}
	d := loadSteering(f, fuzzSteering)
	prog := d.Program(HookPod)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if len(pkt) < 14 || len(pkt) > maxFrame || shortIP(pkt) {
			return // BPF_PROG_TEST_RUN takes no skb without an Ethernet header
		}
		fr := parseFrame(pkt)
		before, totalBefore := statsTotal(t, d)
		ret, mark, _ := fuzzRun(t, prog, pkt, 0)
		got := verdict(ret, mark)
		after, totalAfter := statsTotal(t, d)
		gid, steered := fuzzSteering.group(fr)
		gw, exists := fuzzSteering.gw[gid]
		switch {
		case fr.kind == wellFormed && fr.udpDst != 0 && (fr.udpDst == fuzzTunnelPort || fr.udpDst == fuzzProbePort):
			k := StatsKey{0, 0}
			if got != actShot || after[k].Drops[DropReservedPort] != before[k].Drops[DropReservedPort]+1 || totalAfter != totalBefore+1 {
				t.Fatalf("frame %+v to a reserved port: verdict %#x, want a drop counted reserved_port\n% x", fr, got, pkt)
			}
		case !steered:
			if got != actNext || totalAfter != totalBefore {
				t.Fatalf("%v frame %+v: verdict %#x, counters %d → %d; want next, none counted\n% x", fr.kind, fr, got, totalBefore, totalAfter, pkt)
			}
		case !exists:
			k := StatsKey{gid, 0}
			if got != actShot || after[k].Drops[DropNoGroup] != before[k].Drops[DropNoGroup]+1 || totalAfter != totalBefore+1 {
				t.Fatalf("frame %+v of group %d (absent): verdict %#x, want a drop counted no_group\n% x", fr, gid, got, pkt)
			}
		default:
			k := StatsKey{gid, gw}
			if got != actSteered || mark != dm.Magic|dm.Steer|gid || after[k].Packets != before[k].Packets+1 || totalAfter != totalBefore+1 {
				t.Fatalf("frame %+v of group %d: verdict %#x mark %#x, counter %+v %d → %d; want it steered (mark %#x) and counted on gateway %d\n% x",
					fr, gid, got, mark, k, before[k].Packets, after[k].Packets, dm.Magic|dm.Steer|gid, gw, pkt)
			}
		}
	})
}

// FuzzTunnelEgress: egressd_tun_egress takes only frames marked as a source node's steered
// packets (magic and steer bit: with no flow pinned here, dropped no_flow or malformed) or as
// egressd replies (magic and reply bit); any other mark, reply bit or not, goes on untouched.
// Of the replies, one of a recorded flow is encapsulated (OK, mark cleared, counted), any other
// well-formed one dropped as no_return, and a frame that is not a well-formed IP packet dropped
// as malformed.
func FuzzTunnelEgress(f *testing.F) {
	src := netip.MustParseAddr("192.168.0.11")
	dst6 := netip.MustParseAddr("2001:db8::10")
	recorded := map[FlowKey]uint32{
		{Src: pod4, Dst: dst4, Sport: 40000, Dport: 80, Proto: unix.IPPROTO_TCP}: 5,
		{Src: pod6, Dst: dst6, Sport: 40000, Dport: 80, Proto: unix.IPPROTO_TCP}: 6,
		{Src: pod4, Dst: dst4, Sport: 80, Proto: unix.IPPROTO_ICMP}:              5,
	}
	marks := []uint32{dm.Magic | dm.Reply, dm.Magic | dm.Reply | 5, dm.Magic | dm.Tunnel | 5, 0x12000000 | dm.Reply, dm.Reply, dm.Magic | dm.Steer | 5, 0}
	for _, s := range seedFrames(dst4, pod4, dst6, pod6, 80, 40000) {
		for _, m := range marks {
			f.Add(s, m)
		}
	}
	// ICMP echo reply (type 0) of the recorded echo flow.
	f.Add(ipv4Frame(5, 4, 0, 0, unix.IPPROTO_ICMP, dst4, pod4, nil, []byte{0, 0, 0, 0, 0, 80, 0, 1}), dm.Magic|dm.Reply)
	d := load(f, Limits{})
	for k, g := range recorded {
		setReturnFlow(f, d, k, src, g)
	}
	prog := d.Program(HookTunnelEgress)
	self := uint32(GatewaySelf)
	f.Fuzz(func(t *testing.T, pkt []byte, mark uint32) {
		if len(pkt) < 14 || len(pkt) > maxFrame || shortIP(pkt) {
			return
		}
		fr := parseFrame(pkt)
		before, totalBefore := statsTotal(t, d)
		got, markOut, _ := fuzzRun(t, prog, pkt, mark)
		forgetFrag(t, d, pkt) // each input on its own: no fragment follows an earlier input's first
		after, totalAfter := statsTotal(t, d)
		drop := func(reason int) {
			k := StatsKey{0, self}
			if got != actShot || after[k].Drops[reason] != before[k].Drops[reason]+1 || totalAfter != totalBefore+1 {
				t.Fatalf("mark %#x %v frame %+v: verdict %#x, want a drop counted %s\n% x", mark, fr.kind, fr, got, DropReasonNames[reason], pkt)
			}
		}
		if mark&(dm.MagicMask|dm.Steer) == dm.Magic|dm.Steer {
			// A source node's steered packet (checked before the reply bit, as in C). No flow
			// is pinned in this datapath: a well-formed one is dropped no_flow, anything else
			// malformed, both under (group, no gateway).
			k := StatsKey{mark & dm.GroupMask, 0}
			reason := DropNoFlow
			if fr.kind != wellFormed {
				reason = DropMalformed
			}
			if got != actShot || after[k].Drops[reason] != before[k].Drops[reason]+1 || totalAfter != totalBefore+1 {
				t.Fatalf("steered mark %#x %v frame %+v: verdict %#x, want a drop counted %s under %+v\n% x", mark, fr.kind, fr, got, DropReasonNames[reason], k, pkt)
			}
			// Any of 65536 groups comes from the fuzzed mark: forget its counter, or the stats
			// map fills and every input's walk of it slows the run a hundredfold.
			skey := egressdStatsKey{Group: k.Group, Gateway: k.Gateway}
			if err := d.objs.Stats.Delete(&skey); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				t.Fatal(err)
			}
			return
		}
		if mark&(dm.MagicMask|dm.Reply) != dm.Magic|dm.Reply {
			if got != actNext || markOut != mark || totalAfter != totalBefore {
				t.Fatalf("mark %#x: verdict %#x mark %#x, want next, the mark kept, none counted\n% x", mark, got, markOut, pkt)
			}
			return
		}
		if fr.kind != wellFormed {
			drop(DropMalformed)
			return
		}
		// The original direction of the reply: echo identifiers stay, ports swap. A first
		// fragment is looked up with the ports it carries (later ones follow it, see
		// TestTunnelEgressFragments).
		orig := FlowKey{Src: fr.dst, Dst: fr.src, Sport: fr.dport, Dport: fr.sport, Proto: fr.proto}
		if fr.firstFrag {
			orig.Sport, orig.Dport = fr.fragDport, fr.fragSport
		}
		if fr.proto == unix.IPPROTO_ICMP || fr.proto == unix.IPPROTO_ICMPV6 {
			orig.Sport, orig.Dport = fr.sport, 0
		}
		gid, ok := recorded[orig]
		if !ok {
			drop(DropNoReturn)
			return
		}
		k := StatsKey{gid, self}
		if got != actOK || markOut != mark&^dm.Mask || after[k].Packets != before[k].Packets+1 || totalAfter != totalBefore+1 {
			t.Fatalf("reply of recorded flow %+v: verdict %#x mark %#x, want OK, egressd's bits of the mark cleared (the rest kept), counted\n% x", orig, got, markOut, pkt)
		}
	})
}

// forgetFrag deletes the fragment map entry an IPv4 first fragment may have written (key:
// source, destination, the id as on the wire, protocol), so that inputs stay independent.
func forgetFrag(tb testing.TB, d *Datapath, pkt []byte) {
	tb.Helper()
	if len(pkt) < 14+20 || binary.BigEndian.Uint16(pkt[12:]) != 0x0800 {
		return
	}
	ip := pkt[14:]
	k := egressdFragKey{Src: binary.NativeEndian.Uint32(ip[12:16]), Dst: binary.NativeEndian.Uint32(ip[16:20]),
		Id: binary.NativeEndian.Uint16(ip[4:6]), Proto: ip[9]}
	if err := d.objs.Frags.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		tb.Fatal(err)
	}
}

// probeRequest is the oracle's reading of a probe request the reflector must answer
// (docs/control-plane.md): IPv4 without options or fragmenting, to the node, UDP to the probe
// port, exactly the 16-byte probe, magic EGRP, version 1, no reply flag.
func probeRequest(b []byte, node netip.Addr, port uint16) bool {
	if len(b) < 14+20+8+16 || binary.BigEndian.Uint16(b[12:]) != 0x0800 {
		return false
	}
	ip, udp, probe := b[14:34], b[34:42], b[42:58]
	return ip[0] == 0x45 && ip[9] == unix.IPPROTO_UDP &&
		binary.BigEndian.Uint16(ip[6:])&0x3fff == 0 &&
		binary.BigEndian.Uint16(ip[2:]) == 20+8+16 &&
		netip.AddrFrom4([4]byte(ip[16:20])) == node &&
		binary.BigEndian.Uint16(udp[2:]) == port && binary.BigEndian.Uint16(udp[4:]) == 8+16 &&
		bytes.Equal(probe[:4], probeMagic) && probe[4] == 1 && probe[5]&0x80 == 0
}

// FuzzProbe: egressd_probe answers exactly the probe requests to this node, in place and back
// out of the interface (MACs, addresses and ports swapped, reply flag, TTL 64); anything else,
// reply bits set, other addresses, IP options, fragments, short frames, goes on untouched.
func FuzzProbe(f *testing.F) {
	other := netip.MustParseAddr("192.168.0.99")
	for _, r := range []probeReq{{}, {noCsum: true}, {flags: 0x80}, {flags: 0x81}, {version: 2}, {magic: []byte("EGRQ")},
		{frag: true}, {dst: other}, {dport: probePort + 1}, {extra: 1}, {ttl: 1}} {
		req := probeFrame(r)
		f.Add(req)
		f.Add(req[:len(req)-1])
		opt := append(append([]byte{}, req[:34]...), append([]byte{1, 1, 1, 0}, req[34:]...)...)
		opt[14] = 0x46 // IHL 6: one word of options (NOPs)
		f.Add(opt)
	}
	for _, s := range seedFrames(proberIP, nodeIP, netip.MustParseAddr("fd00::11"), netip.MustParseAddr("fd00::21"), 40001, probePort) {
		f.Add(s)
	}
	d := load(f, Limits{})
	must(f, d.SetProbe(ProbeConfig{Port: probePort, NodeIP: nodeIP}))
	prog := d.Program(HookProbe)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if len(pkt) < 14 || len(pkt) > maxFrame || shortIP(pkt) {
			return
		}
		got, _, out := fuzzRun(t, prog, pkt, 0)
		if !probeRequest(pkt, nodeIP, probePort) {
			if got != actNext || !bytes.Equal(out, pkt) {
				t.Fatalf("not a probe request: verdict %#x, frame changed %v, want next and untouched\n% x", got, !bytes.Equal(out, pkt), pkt)
			}
			return
		}
		if got != actRedirect || len(out) != len(pkt) {
			t.Fatalf("probe request: verdict %#x, %d bytes out; want a redirect of %d bytes\n% x", got, len(out), len(pkt), pkt)
		}
		swapped := bytes.Equal(out[0:6], pkt[6:12]) && bytes.Equal(out[6:12], pkt[0:6]) &&
			bytes.Equal(out[26:30], pkt[30:34]) && bytes.Equal(out[30:34], pkt[26:30]) &&
			bytes.Equal(out[34:36], pkt[36:38]) && bytes.Equal(out[36:38], pkt[34:36])
		if !swapped || out[22] != 64 || out[47] != 0x80 {
			t.Fatalf("probe reply not the request turned around: % x\nrequest % x", out, pkt)
		}
		if csum(pkt[14:34], 0) == 0 && csum(out[14:34], 0) != 0 {
			t.Fatalf("a valid IPv4 checksum became invalid: % x", out[14:34])
		}
	})
}
