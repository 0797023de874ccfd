package bpf

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/test/netns"
)

// vxlanFrame is a VXLAN datagram's payload: the 8-byte header (I flag, VNI) and the inner
// Ethernet frame.
func vxlanFrame(vni uint32, inner []byte) []byte {
	b := make([]byte, 8, 8+len(inner))
	b[0] = 0x08
	binary.BigEndian.PutUint32(b[4:], vni<<8)
	return append(b, inner...)
}

// TestTunnelIngressVXLAN runs egressd_tun_ingress where it runs on a gateway: on tc ingress of
// a collect-metadata VXLAN device, fed by crafted VXLAN datagrams sent from another node's
// namespace, so that the device supplies the tunnel metadata (VNI, outer source) the program
// reads. A request of a served group from an admitted source (node, pod) is marked for SNAT
// and its source node recorded; the same frame from a host that is no node, a node's frame
// with another pod's source or for another group are dropped (foreign_node, foreign_source).
// A VNI with the reply bit goes to the local pod only for a flow pinned to the sender
// (unsolicited otherwise); an unserved group, a truncated inner frame and a datagram to
// another port are not taken.
func TestTunnelIngressVXLAN(t *testing.T) {
	topo := netns.New(t, netns.Spec{NoIPv6: true, NoHostileRules: true, Nodes: []netns.NodeSpec{{Name: "gw"}, {Name: "src"}, {Name: "rogue"}}})
	gw, src, rogue := topo.Node("gw"), topo.Node("src"), topo.Node("rogue")
	d := load(t, Limits{})
	const port = contract.DefaultTunnelPort
	var tunIndex int
	must(t, gw.Do(func() error {
		vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "edtest0"}, FlowBased: true, Port: port}
		if err := netlink.LinkAdd(vx); err != nil {
			return fmt.Errorf("adding the VXLAN device: %w", err)
		}
		l, err := netlink.LinkByName("edtest0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		tunIndex = l.Attrs().Index
		return d.AttachTCX(HookTunnelIngress, tunIndex, "edtest0")
	}))
	must(t, d.SetServed(5))
	must(t, d.SetServed(7))
	// src is a node running pod4, which a policy steers to group 5 (not 7); rogue is no node.
	must(t, d.SetSource(Source{Node: src.IP}))
	must(t, d.SetSource(Source{Node: src.IP, Group: 5, Pod: pod4}))

	var conn *net.UDPConn
	must(t, src.Do(func() error {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(gw.IP, port)))
		conn = c
		return err
	}))
	t.Cleanup(func() { conn.Close() })
	sendFrom := func(from *netns.Node, payload []byte, to uint16) {
		t.Helper()
		if to == port && from == src {
			_, err := conn.Write(payload)
			must(t, err)
			return
		}
		must(t, from.Do(func() error {
			c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(gw.IP, to)))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write(payload)
			return err
		}))
	}
	send := func(payload []byte, to uint16) { t.Helper(); sendFrom(src, payload, to) }
	// waitFor polls the maps: the datagram crosses the fabric and the device asynchronously.
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(3 * time.Second); !cond(); {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 3 s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	tcp := uint8(unix.IPPROTO_TCP)
	flow := func(sport uint16) FlowKey { return FlowKey{Src: pod4, Dst: dst4, Sport: sport, Dport: 80, Proto: tcp} }
	self := StatsKey{5, GatewaySelf}

	t.Run("request of a served group", func(t *testing.T) {
		before := packets(t, d, self)
		send(vxlanFrame(5, packet(pod4, dst4, tcp, 40000, 80)), port)
		waitFor("the flow's source node recorded", func() bool { _, _, ok := returnFlow(t, d, flow(40000)); return ok })
		node, group, _ := returnFlow(t, d, flow(40000))
		if node != src.IP || group != 5 {
			t.Errorf("return flow to %s group %d, want the sending node %s, group 5", node, group, src.IP)
		}
		if after := packets(t, d, self); after != before+1 {
			t.Errorf("counter %+v went from %d to %d, want +1", self, before, after)
		}
	})
	t.Run("wrong port", func(t *testing.T) {
		send(vxlanFrame(5, packet(pod4, dst4, tcp, 40001, 80)), port+100)
		// A datagram to the right port afterwards: once it is seen, the other one had its chance.
		send(vxlanFrame(5, packet(pod4, dst4, tcp, 40002, 80)), port)
		waitFor("the datagram to the tunnel port", func() bool { _, _, ok := returnFlow(t, d, flow(40002)); return ok })
		if _, _, ok := returnFlow(t, d, flow(40001)); ok {
			t.Error("a datagram to another port reached the tunnel program")
		}
	})
	// refused: a frame of group from a node is dropped for reason and its flow not recorded.
	refused := func(from *netns.Node, group uint32, inner FlowKey, reason int) {
		t.Helper()
		k := StatsKey{group, GatewaySelf}
		before := drops(t, d, k, reason)
		sendFrom(from, vxlanFrame(group, packet(inner.Src, inner.Dst, inner.Proto, inner.Sport, inner.Dport)), port)
		waitFor("a "+DropReasonNames[reason]+" drop", func() bool { return drops(t, d, k, reason) == before+1 })
		if _, _, ok := returnFlow(t, d, inner); ok {
			t.Errorf("a refused frame (%s) was recorded", DropReasonNames[reason])
		}
	}
	t.Run("unserved group", func(t *testing.T) { refused(src, 6, flow(40003), DropNotServed) })
	t.Run("host that is no node", func(t *testing.T) { refused(rogue, 5, flow(40010), DropForeignNode) })
	t.Run("node with a spoofed inner source", func(t *testing.T) {
		refused(src, 5, FlowKey{Src: other4, Dst: dst4, Sport: 40011, Dport: 80, Proto: tcp}, DropForeignSource)
	})
	t.Run("pod of the node in a group it is not steered to", func(t *testing.T) { refused(src, 7, flow(40012), DropForeignSource) })
	t.Run("reply bit hands only a solicited reply to the pod", func(t *testing.T) {
		reply := vxlanFrame(VNIReply|5, packet(dst4, pod4, tcp, 80, 40004))
		k := StatsKey{5, 0}
		unsolicited := func(what string, from *netns.Node) {
			t.Helper()
			before := drops(t, d, k, DropUnsolicited)
			sendFrom(from, reply, port)
			waitFor(what+": an unsolicited drop", func() bool { return drops(t, d, k, DropUnsolicited) == before+1 })
		}
		// No flow of this node: dropped, never NATed as a request.
		unsolicited("no flow", src)
		// The flow is pinned to src (as its gateway): a reply from rogue is not taken, nor one
		// of another group.
		setFlow(t, d, FlowKey{Src: pod4, Dst: dst4, Sport: 40004, Dport: 80, Proto: tcp},
			egressdFlow{Group: 5, Gateway: 9, Ifindex: uint32(tunIndex), GwUnderlay: be32(src.IP)})
		unsolicited("a host the flow is not pinned to", rogue)
		before := drops(t, d, StatsKey{6, 0}, DropUnsolicited)
		send(vxlanFrame(VNIReply|6, packet(dst4, pod4, tcp, 80, 40004)), port)
		waitFor("another group: an unsolicited drop", func() bool { return drops(t, d, StatsKey{6, 0}, DropUnsolicited) == before+1 })
		// From the flow's gateway it is delivered to the pod's interface (counted for the gateway).
		kGW := StatsKey{5, 9}
		delivered := packets(t, d, kGW)
		send(reply, port)
		waitFor("the reply delivered", func() bool { return packets(t, d, kGW) == delivered+1 })
		if _, _, ok := returnFlow(t, d, FlowKey{Src: dst4, Dst: pod4, Sport: 80, Dport: 40004, Proto: tcp}); ok {
			t.Error("a reply was recorded as a request")
		}
	})
	t.Run("truncated inner frame", func(t *testing.T) {
		k := StatsKey{0, 0}
		before := drops(t, d, k, DropMalformed)
		// Ethernet, IPv4 and two bytes of TCP: the device passes it, the ports cannot be read.
		send(vxlanFrame(5, packet(pod4, dst4, tcp, 40005, 80)[:14+20+2]), port)
		waitFor("a malformed drop", func() bool { return drops(t, d, k, DropMalformed) == before+1 })
		if _, _, ok := returnFlow(t, d, flow(40005)); ok {
			t.Error("a truncated frame was recorded")
		}
	})
}
