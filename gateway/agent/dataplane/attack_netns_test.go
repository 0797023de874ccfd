package dataplane

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/test/netns"
)

// vxlanFrame is a VXLAN datagram's payload as an attacker crafts it: the header with a VNI
// around an Ethernet frame carrying a UDP datagram from src:sport to dst:dport with payload
// "pwnd".
func vxlanFrame(vni uint32, src, dst netip.Addr, sport, dport uint16) []byte {
	b := make([]byte, 8, 64)
	b[0] = 0x08 // I flag
	binary.BigEndian.PutUint32(b[4:], vni<<8)
	b = append(b, 0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00)
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 20+8+4)
	ip[8], ip[9] = 64, 17
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	udp := make([]byte, 8)
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], 8+4)
	return append(append(append(b, ip...), udp...), 'p', 'w', 'n', 'd')
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// TestPodCannotReachTunnel attacks a gateway from a pod: VXLAN frames to the gateway's tunnel
// port, at its v4 and v6 underlay addresses, and probes to its probe port. The classifier on
// the pod's veth drops every one, counted reserved_port, whether or not the pod is steered (pod
// b is selected by no policy), and the gateway forwards nothing. A datagram to another port
// arrives; a probe from a Prober pod (the controller's) is answered, and a Prober still cannot
// reach the tunnel port.
func TestPodCannotReachTunnel(t *testing.T) {
	skipUnlessRoot(t)
	c := newCluster(t)
	gw := c.topo.Node("gw1")
	before := func(node string) map[bpf.StatsKey]bpf.Stats {
		st, err := c.dps[node].Stats()
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	drops := func(st map[bpf.StatsKey]bpf.Stats) uint64 { return st[bpf.StatsKey{}].Drops[bpf.DropReservedPort] }
	forwarded := func(st map[bpf.StatsKey]bpf.Stats) uint64 {
		return st[bpf.StatsKey{Group: 1, Gateway: bpf.GatewaySelf}].Packets
	}
	dial := func(from string, dst netip.Addr, port uint16) net.Conn {
		t.Helper()
		conn, err := c.topo.Pod(from).DialContext(ctxT(t), "udp", net.JoinHostPort(dst.String(), strconv.Itoa(int(port))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	send := func(from string, dst netip.Addr, port uint16, payload []byte, n int) {
		t.Helper()
		conn := dial(from, dst, port)
		for range n {
			if _, err := conn.Write(payload); err != nil {
				t.Fatal(err)
			}
		}
	}
	w1, gw1 := before("worker1"), before("gw1")
	frame := vxlanFrame(1, c.topo.Pod("a").IP, dstG1, 40000, 7)
	const n = 5
	for _, pod := range []string{"a", "b"} {
		send(pod, gw.IP, contract.DefaultTunnelPort, frame, n)
		send(pod, gw.IP6, contract.DefaultTunnelPort, frame, n)
	}
	w1After, gw1After := before("worker1"), before("gw1")

	// Not reserved: a datagram to a port nobody listens on arrives, and gw1's port unreachable
	// makes the next write on the connected socket fail with ECONNREFUSED.
	other := dial("a", gw.IP, 8744)
	refused := false
	for i := 0; i < 20 && !refused; i++ {
		_, err := other.Write(frame)
		refused = errors.Is(err, syscall.ECONNREFUSED)
		time.Sleep(10 * time.Millisecond)
	}
	if !refused {
		t.Error("a datagram to UDP 8744 never drew port unreachable from gw1: did it arrive?")
	}
	if got := drops(w1After) - drops(w1); got != 4*n {
		t.Errorf("worker1 counted %d reserved_port drops, want %d (every frame to the tunnel port)", got, 4*n)
	}
	// The probe port: closed to pods a and b, open to b once it is a Prober.
	probeReq := []byte("EGRP\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01")
	probe := func(pod string) (int, []byte, error) {
		conn := dial(pod, gw.IP, contract.DefaultProbePort)
		if _, err := conn.Write(probeReq); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		reply := make([]byte, 64)
		k, err := conn.Read(reply)
		return k, reply[:max(k, 0)], err
	}
	probeDrops := drops(before("worker1"))
	for _, pod := range []string{"a", "b"} {
		if k, reply, err := probe(pod); err == nil {
			t.Errorf("probe from pod %s (no prober) answered: %d bytes % x", pod, k, reply)
		}
	}
	if got := drops(before("worker1")) - probeDrops; got != 2 {
		t.Errorf("worker1 counted %d reserved_port drops for the probes, want 2", got)
	}
	st := c.states["worker1"]
	st.Pods = slices.Clone(st.Pods)
	for i := range st.Pods {
		st.Pods[i].Prober = st.Pods[i].Name == "b"
	}
	if err := c.dps["worker1"].Apply(ctxT(t), st); err != nil {
		t.Fatal(err)
	}
	if k, reply, err := probe("b"); err != nil || k != 16 || reply[5]&0x80 == 0 {
		t.Errorf("probe from prober pod b: %d bytes % x, %v; want gw1's 16-byte reply", k, reply, err)
	}
	w1 = before("worker1")
	send("b", gw.IP, contract.DefaultTunnelPort, frame, n)
	if got := drops(before("worker1")) - drops(w1); got != n {
		t.Errorf("prober pod b: %d of %d frames to the tunnel port dropped, want all", got, n)
	}
	if got := forwarded(gw1After) - forwarded(gw1); got != 0 {
		t.Errorf("gw1 forwarded %d tunnelled packets for group 1 during the attack, want 0", got)
	}
}

// TestTunnelAttacks attacks the tunnel of a gateway and of a source node from hosts that can
// reach it, with every frame well formed and aimed at the right port and group:
//   - a host that is no node (worker2, once gw1 no longer lists it among the nodes) sends a
//     frame with a selected pod's source: gw1 drops it, foreign_node;
//   - a node (worker1) sends frames with the source of a pod it does not run (c, of worker2)
//     and of its own pod that no policy selects (b): foreign_source;
//   - a gateway (gw2) sends a reply-bit frame for a flow of pod a that is pinned to gw1, and
//     one for no flow: worker1 drops both, unsolicited, and pod a reads neither.
//
// Controls: pod a's own traffic through gw1 keeps working, answered by the echo server.
func TestTunnelAttacks(t *testing.T) {
	skipUnlessRoot(t)
	c := newCluster(t)
	w1, w2, gw1, gw2 := c.topo.Node("worker1"), c.topo.Node("worker2"), c.topo.Node("gw1"), c.topo.Node("gw2")
	a, b, pc := c.topo.Pod("a"), c.topo.Pod("b"), c.topo.Pod("c")
	stats := func(node string, k bpf.StatsKey) bpf.Stats {
		t.Helper()
		st, err := c.dps[node].Stats()
		if err != nil {
			t.Fatal(err)
		}
		return st[k]
	}
	sendFrom := func(n *netns.Node, to netip.Addr, frame []byte, count int) {
		t.Helper()
		conn, err := n.DialContext(ctxT(t), "udp", net.JoinHostPort(to.String(), strconv.Itoa(contract.DefaultTunnelPort)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for range count {
			if _, err := conn.Write(frame); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitDrops := func(node string, k bpf.StatsKey, reason int, want uint64) {
		t.Helper()
		var got uint64
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if got = stats(node, k).Drops[reason]; got >= want {
				break
			}
		}
		if got != want {
			t.Errorf("%s counted %d %s drops for %+v, want %d", node, got, bpf.DropReasonNames[reason], k, want)
		}
	}
	const n = 5
	self1 := bpf.StatsKey{Group: 1, Gateway: bpf.GatewaySelf}

	// gw1 forgets worker2.
	st := c.states["gw1"]
	role := *st.Gateway
	role.Sources = slices.DeleteFunc(slices.Clone(role.Sources), func(s Source) bool { return s.Node == w2.IP })
	role.Nodes = slices.DeleteFunc(slices.Clone(role.Nodes), func(a netip.Addr) bool { return a == w2.IP })
	st.Gateway = &role
	if err := c.dps["gw1"].Apply(ctxT(t), st); err != nil {
		t.Fatal(err)
	}
	before := stats("gw1", self1)
	sendFrom(w2, gw1.IP, vxlanFrame(1, pc.IP, dstG1, 40001, 7007), n)
	waitDrops("gw1", self1, bpf.DropForeignNode, before.Drops[bpf.DropForeignNode]+n)

	sendFrom(w1, gw1.IP, vxlanFrame(1, pc.IP, dstG1, 40002, 7007), n)
	sendFrom(w1, gw1.IP, vxlanFrame(1, b.IP, dstG1, 40003, 7007), n)
	waitDrops("gw1", self1, bpf.DropForeignSource, before.Drops[bpf.DropForeignSource]+2*n)
	if got := stats("gw1", self1).Packets - before.Packets; got != 0 {
		t.Errorf("gw1 forwarded %d tunnelled packets of group 1 during the attacks, want 0", got)
	}

	// Pod a pins a UDP flow to gw1 from a fixed port, then gw2 answers it.
	conn, err := a.ListenPacket("udp4", net.JoinHostPort(a.IP.String(), "40100"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	echo := net.UDPAddrFromAddrPort(netip.AddrPortFrom(dstG1, 7007))
	if _, err := conn.WriteTo([]byte("hi"), echo); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 128)
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if k, _, err := conn.ReadFrom(buf); err != nil || strings.TrimSpace(string(buf[:k])) != c.eg["gw1"][0].String() {
		t.Fatalf("control: pod a's datagram through gw1 was answered %q, %v; want gw1's egress IP", buf[:k], err)
	}
	reply := bpf.StatsKey{Group: 1}
	w1Before := stats("worker1", reply).Drops[bpf.DropUnsolicited]
	sendFrom(gw2, w1.IP, vxlanFrame(bpf.VNIReply|1, dstG1, a.IP, 7007, 40100), n)
	sendFrom(gw2, w1.IP, vxlanFrame(bpf.VNIReply|1, dstG1, a.IP, 7007, 40101), n)
	waitDrops("worker1", reply, bpf.DropUnsolicited, w1Before+2*n)
	_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if k, _, err := conn.ReadFrom(buf); err == nil {
		t.Errorf("pod a read a forged reply %q", buf[:k])
	}
	// Control: the flow still works.
	if _, err := conn.WriteTo([]byte("hi"), echo); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if k, _, err := conn.ReadFrom(buf); err != nil || strings.TrimSpace(string(buf[:k])) != c.eg["gw1"][0].String() {
		t.Errorf("control after the attack: answered %q, %v; want gw1's egress IP", buf[:k], err)
	}
}
