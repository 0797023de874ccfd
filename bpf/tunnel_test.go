package bpf

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// runCtx runs a program on pkt with skb->mark set, and returns the verdict and the mark the
// program left. BPF_PROG_TEST_RUN takes a context shorter than struct __sk_buff (len,
// pkt_type, mark, the rest zero) but wants room for all of it on the way out.
func runCtx(tb testing.TB, p *ebpf.Program, pkt []byte, mark uint32) (uint32, uint32) {
	tb.Helper()
	in := make([]byte, 12)
	binary.NativeEndian.PutUint32(in[8:], mark)
	out := make([]byte, 512)
	ret, err := p.Run(&ebpf.RunOptions{Data: pkt, Context: in, ContextOut: out})
	if err != nil {
		tb.Fatalf("running %s: %v", p, err)
	}
	return ret, binary.NativeEndian.Uint32(out[8:])
}

func setReturnFlow(tb testing.TB, d *Datapath, k FlowKey, node netip.Addr, group uint32) {
	tb.Helper()
	rk := k.raw()
	v := egressdReturnFlow{Node: be32(node), Group: group}
	must(tb, d.objs.ReturnFlows.Update(&rk, &v, ebpf.UpdateAny))
}

// setFlow pins a flow on a source node, as the classifier does.
func setFlow(tb testing.TB, d *Datapath, k FlowKey, f egressdFlow) {
	tb.Helper()
	rk := k.raw()
	must(tb, d.objs.Flows.Update(&rk, &f, ebpf.UpdateAny))
}

// returnFlow is the source node the gateway recorded for a flow, if any.
func returnFlow(tb testing.TB, d *Datapath, k FlowKey) (netip.Addr, uint32, bool) {
	tb.Helper()
	rk := k.raw()
	var v egressdReturnFlow
	if err := d.objs.ReturnFlows.Lookup(&rk, &v); err != nil {
		return netip.Addr{}, 0, false
	}
	return fromBE32(v.Node), v.Group, true
}

func drops(tb testing.TB, d *Datapath, k StatsKey, reason int) uint64 {
	tb.Helper()
	st, err := d.Stats()
	must(tb, err)
	return st[k].Drops[reason]
}

// TestTunnelEgress runs egressd_tun_egress, the gateway's re-encapsulation of de-NATed
// replies, on crafted frames: only replies nftables marked (magic + reply bit) are taken, and
// only those of a flow a source node tunnelled here go back into the tunnel, with the mark
// cleared so the stack does not route them again.
func TestTunnelEgress(t *testing.T) {
	d := load(t, Limits{})
	prog := d.Program(HookTunnelEgress)
	tcp := uint8(unix.IPPROTO_TCP)
	source := netip.MustParseAddr("192.168.0.11")
	// The original direction, pod → destination, as the tunnel ingress recorded it.
	setReturnFlow(t, d, FlowKey{Src: pod4, Dst: dst4, Sport: 40000, Dport: 80, Proto: tcp}, source, 5)
	reply := packet(dst4, pod4, tcp, 80, 40000)
	self := StatsKey{5, GatewaySelf}

	t.Run("no egressd mark passes", func(t *testing.T) {
		if got, _ := runCtx(t, prog, reply, 0x1234); got != actNext {
			t.Fatalf("verdict %#x, want next", got)
		}
	})
	t.Run("a tunnelled request (no reply bit) passes", func(t *testing.T) {
		if got, _ := runCtx(t, prog, reply, dm.Magic|dm.Tunnel|5); got != actNext {
			t.Fatalf("verdict %#x, want next", got)
		}
	})
	t.Run("another mark with the reply bit passes", func(t *testing.T) {
		if got, _ := runCtx(t, prog, reply, 0x12000000|dm.Reply); got != actNext {
			t.Fatalf("verdict %#x, want next", got)
		}
	})
	t.Run("reply of a recorded flow is encapsulated", func(t *testing.T) {
		before := packets(t, d, self)
		got, mark := runCtx(t, prog, reply, dm.Magic|dm.Reply)
		if got != actOK {
			t.Fatalf("verdict %#x, want TC_ACT_OK", got)
		}
		if mark != 0 {
			t.Errorf("mark %#x left on the encapsulated reply, want 0", mark)
		}
		if after := packets(t, d, self); after != before+1 {
			t.Errorf("counter %+v went from %d to %d, want +1", self, before, after)
		}
	})
	t.Run("reply of an unknown flow is dropped", func(t *testing.T) {
		k := StatsKey{0, GatewaySelf}
		before := drops(t, d, k, DropNoReturn)
		if got, _ := runCtx(t, prog, packet(dst4, pod4, tcp, 80, 40001), dm.Magic|dm.Reply); got != actShot {
			t.Fatalf("verdict %#x, want TC_ACT_SHOT", got)
		}
		if after := drops(t, d, k, DropNoReturn); after != before+1 {
			t.Errorf("no_return drops went from %d to %d, want +1", before, after)
		}
	})
	t.Run("truncated reply is dropped as malformed", func(t *testing.T) {
		k := StatsKey{0, GatewaySelf}
		before := drops(t, d, k, DropMalformed)
		// Ethernet, IPv4 and two bytes of TCP: the ports cannot be read.
		if got, _ := runCtx(t, prog, reply[:14+20+2], dm.Magic|dm.Reply); got != actShot {
			t.Fatalf("verdict %#x, want TC_ACT_SHOT", got)
		}
		if after := drops(t, d, k, DropMalformed); after != before+1 {
			t.Errorf("malformed drops went from %d to %d, want +1", before, after)
		}
	})
}

// TestTunnelEgressSteered: on a source node, a packet the classifier steered (magic, steer bit,
// group) reaches tc egress of the tunnel device through the stack; the program encapsulates it
// to the gateway its flow is pinned to and clears the mark. A datagram the stack reassembled
// finds the flow its fragments pinned (no ports); one without a pinned flow, or pinned in
// another group, is dropped (no_flow), never sent unencapsulated.
func TestTunnelEgressSteered(t *testing.T) {
	d := load(t, Limits{})
	prog := d.Program(HookTunnelEgress)
	tcp, udp := uint8(unix.IPPROTO_TCP), uint8(unix.IPPROTO_UDP)
	pin := func(k FlowKey, group uint32) {
		setFlow(t, d, k, egressdFlow{Group: group, Gateway: gwA.ID, Ifindex: 3, GwUnderlay: be32(gwA.Underlay)})
	}
	pin(FlowKey{Src: pod4, Dst: dst4, Sport: 40000, Dport: 80, Proto: tcp}, 5)
	pin(FlowKey{Src: pod4, Dst: dst4, Proto: udp}, 5) // pinned by fragments
	steer := dm.Magic | dm.Steer | 5
	for _, tc := range []struct {
		name   string
		pkt    []byte
		mark   uint32
		want   uint32
		reason int // drop counted under (5, 0), or -1
	}{
		{"pinned flow is encapsulated", packet(pod4, dst4, tcp, 40000, 80), steer, actOK, -1},
		{"reassembled datagram finds its fragments' flow", packet(pod4, dst4, udp, 40001, 53), steer, actOK, -1},
		{"no pinned flow is dropped", packet(pod4, dst4, tcp, 40002, 80), steer, actShot, DropNoFlow},
		{"flow of another group is dropped", packet(pod4, dst4, tcp, 40000, 80), dm.Magic | dm.Steer | 6, actShot, DropNoFlow},
		{"truncated is dropped", packet(pod4, dst4, tcp, 40000, 80)[:14+20+2], steer, actShot, DropMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := StatsKey{tc.mark & dm.GroupMask, 0}
			var before uint64
			if tc.reason >= 0 {
				before = drops(t, d, k, tc.reason)
			}
			got, mark := runCtx(t, prog, tc.pkt, tc.mark)
			if got != tc.want {
				t.Fatalf("verdict %#x, want %#x", got, tc.want)
			}
			if tc.want == actOK && mark != 0 {
				t.Errorf("mark %#x left on the encapsulated packet, want 0", mark)
			}
			if tc.reason >= 0 {
				if after := drops(t, d, k, tc.reason); after != before+1 {
					t.Errorf("%s drops went from %d to %d, want +1", DropReasonNames[tc.reason], before, after)
				}
			}
		})
	}
}

// fragment turns a whole IPv4 packet of packet() into one fragment of datagram id: its first
// n bytes of payload (first) or the rest (at offset n, n a multiple of 8).
func fragment(pkt []byte, id uint16, n int, first bool) []byte {
	ip := append([]byte{}, pkt[14:]...)
	payload := ip[20:]
	var out []byte
	binary.BigEndian.PutUint16(ip[4:], id)
	if first {
		out = append(ip[:20:20], payload[:n]...)
		binary.BigEndian.PutUint16(out[6:], 0x2000) // MF, offset 0
	} else {
		out = append(ip[:20:20], payload[n:]...)
		binary.BigEndian.PutUint16(out[6:], uint16(n/8))
	}
	binary.BigEndian.PutUint16(out[2:], uint16(len(out)))
	return append(append([]byte{}, pkt[:14]...), out...)
}

// TestTunnelEgressFragments: the stack fragments a datagram that does not fit the tunnel
// device after conntrack reassembled it, so tc egress sees fragments whose later pieces carry
// no ports. The first fragment finds its flow by its ports and records where the datagram
// goes; the later ones follow it, on a source node (steered) and on a gateway (replies). A
// later fragment of a datagram whose first fragment was not seen is dropped.
func TestTunnelEgressFragments(t *testing.T) {
	d := load(t, Limits{})
	prog := d.Program(HookTunnelEgress)
	udp := uint8(unix.IPPROTO_UDP)
	setFlow(t, d, FlowKey{Src: pod4, Dst: dst4, Sport: 40000, Dport: 53, Proto: udp},
		egressdFlow{Group: 5, Gateway: gwA.ID, Ifindex: 3, GwUnderlay: be32(gwA.Underlay)})
	setReturnFlow(t, d, FlowKey{Src: pod4, Dst: dst4, Sport: 40001, Dport: 53, Proto: udp}, testNodeIP, 5)
	steer := dm.Magic | dm.Steer | 5
	req := packet(pod4, dst4, udp, 40000, 53)
	reply := packet(dst4, pod4, udp, 53, 40001)
	for _, tc := range []struct {
		name string
		pkt  []byte
		mark uint32
		want uint32
	}{
		{"steered: first fragment", fragment(req, 7, 16, true), steer, actOK},
		{"steered: later fragment follows it", fragment(req, 7, 16, false), steer, actOK},
		{"steered: later fragment of an unseen datagram", fragment(req, 8, 16, false), steer, actShot},
		{"reply: first fragment", fragment(reply, 9, 16, true), dm.Magic | dm.Reply, actOK},
		{"reply: later fragment follows it", fragment(reply, 9, 16, false), dm.Magic | dm.Reply, actOK},
		{"reply: later fragment of an unseen datagram", fragment(reply, 10, 16, false), dm.Magic | dm.Reply, actShot},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := runCtx(t, prog, tc.pkt, tc.mark); got != tc.want {
				t.Fatalf("verdict %#x, want %#x", got, tc.want)
			}
		})
	}
}

// TestTunnelIngressWithoutTunnelMetadata: egressd_tun_ingress reads the VXLAN header's
// fields (VNI, outer source) from the tunnel metadata the VXLAN device attaches, which
// BPF_PROG_TEST_RUN cannot supply. A frame without it (not decapsulated by the device) goes on
// untouched and records nothing. TestTunnelIngressVXLAN feeds it real VXLAN datagrams.
func TestTunnelIngressWithoutTunnelMetadata(t *testing.T) {
	d := load(t, Limits{})
	must(t, d.SetServed(5))
	tcp := uint8(unix.IPPROTO_TCP)
	got, mark := runCtx(t, d.Program(HookTunnelIngress), packet(pod4, dst4, tcp, 40000, 80), 0)
	if got != actNext || mark != 0 {
		t.Fatalf("verdict %#x mark %#x, want next and no mark", got, mark)
	}
	if _, _, ok := returnFlow(t, d, FlowKey{Src: pod4, Dst: dst4, Sport: 40000, Dport: 80, Proto: tcp}); ok {
		t.Error("a return flow was recorded for a frame that did not come through the tunnel")
	}
}
