package dataplane

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/gateway/contract"
)

// vxlanFrame is what a pod would send to a gateway's tunnel port to use an egress IP it is not
// entitled to: a VXLAN header with group 1's VNI around an Ethernet frame carrying a UDP
// datagram from src to dst.
func vxlanFrame(src, dst netip.Addr) []byte {
	b := []byte{0x08, 0, 0, 0, 0, 0, 1, 0} // I flag, VNI 1
	b = append(b, 0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00)
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 20+8+4)
	ip[8], ip[9] = 64, 17
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	udp := make([]byte, 8)
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 7)
	binary.BigEndian.PutUint16(udp[4:], 8+4)
	return append(append(append(b, ip...), udp...), 'p', 'w', 'n', 'd')
}

// TestPodCannotReachTunnel attacks a gateway from a pod: VXLAN frames to the gateway's tunnel
// port, at its v4 and v6 underlay addresses. The classifier on the pod's veth drops every one,
// counted reserved_port, whether or not the pod is steered (pod b is selected by no policy), and
// the gateway forwards nothing. A datagram to another port arrives, and a probe to the probe
// port (the controller probes from a pod) is answered.
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
	frame := vxlanFrame(c.topo.Pod("a").IP, dstG1)
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
	// The probe port is not reserved (the controller probes from a pod): gw1 answers.
	probe := dial("a", gw.IP, 8743)
	if _, err := probe.Write([]byte("EGRP\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01")); err != nil {
		t.Fatal(err)
	}
	_ = probe.SetReadDeadline(time.Now().Add(2 * time.Second))
	reply := make([]byte, 64)
	if n, err := probe.Read(reply); err != nil || n != 16 || reply[5]&0x80 == 0 {
		t.Errorf("probe from a pod: %d bytes % x, %v; want gw1's 16-byte reply", n, reply[:n], err)
	}
	if got := drops(w1After) - drops(w1); got != 4*n {
		t.Errorf("worker1 counted %d reserved_port drops, want %d (every frame to the tunnel port)", got, 4*n)
	}
	if got := forwarded(gw1After) - forwarded(gw1); got != 0 {
		t.Errorf("gw1 forwarded %d tunnelled packets for group 1 during the attack, want 0", got)
	}
}
