package dataplane

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/test/netns"
)

// TestPathMTU runs the datapath on a 1400-byte underlay (pods 1400 too, so the tunnel's inner
// MTU, 1350, is below what pods send): steered traffic crosses the source node's stack, which
// tells the pod the tunnel's MTU the usual way.
//   - TCP: 20 MB up and 20 MB down complete (MSS clamped on the source node and the gateway).
//   - UDP with DF (IP_PMTUDISC_DO): a 1372-byte datagram draws ICMP "fragmentation needed"
//     from the source node; the pod's kernel learns 1350 (IP_MTU), its next write of that
//     size fails with EMSGSIZE, and a 1322-byte datagram is answered through the gateway.
//   - UDP without DF: a 1372-byte datagram is fragmented and answered.
func TestPathMTU(t *testing.T) {
	skipUnlessRoot(t)
	topo := netns.New(t, netns.Spec{NoIPv6: true, MTU: 1400, Nodes: []netns.NodeSpec{
		{Name: "worker1", Pods: []netns.PodSpec{{Name: "a"}}},
		{Name: "gw1"},
	}})
	egress := applyPairBed(t, topo)
	a := topo.Pod("a")
	expectSeen(t, a, dstG1, egress)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, dir := range []netns.Direction{netns.Upload, netns.Download} {
		if _, err := a.Transfer(ctx, dstG1, 20<<20, dir); err != nil {
			t.Errorf("TCP over a 1400-byte underlay: %v", err)
		}
	}

	pc, err := a.ListenPacket("udp4", net.JoinHostPort(a.IP.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	conn := pc.(*net.UDPConn)
	raw, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	sockopt := func(name string, f func(fd int) error) {
		t.Helper()
		var serr error
		if err := raw.Control(func(fd uintptr) { serr = f(int(fd)) }); err != nil || serr != nil {
			t.Fatalf("%s: %v %v", name, err, serr)
		}
	}
	echo := net.UDPAddrFromAddrPort(netip.AddrPortFrom(dstG1, netns.UDPPort))
	answered := func(size int) error {
		if _, err := conn.WriteTo(make([]byte, size), echo); err != nil {
			return err
		}
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 256)
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			return err
		}
		if got := strings.TrimSpace(string(buf[:n])); got != egress.String() {
			return errors.New("answered from the wrong source: server saw " + got)
		}
		return nil
	}
	// Without DF first: fragmented by the source node, answered.
	sockopt("IP_MTU_DISCOVER dont", func(fd int) error {
		return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT)
	})
	if err := answered(1372); err != nil {
		t.Errorf("1372-byte datagram without DF: %v", err)
	}
	sockopt("IP_MTU_DISCOVER do", func(fd int) error {
		return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
	})
	// The first oversize write leaves the pod; the source node answers with ICMP.
	_, _ = conn.WriteTo(make([]byte, 1372), echo)
	var emsgsize bool
	for i := 0; i < 50 && !emsgsize; i++ {
		time.Sleep(20 * time.Millisecond)
		_, err := conn.WriteTo(make([]byte, 1372), echo)
		emsgsize = errors.Is(err, syscall.EMSGSIZE)
	}
	if !emsgsize {
		t.Error("a 1372-byte DF datagram never failed with EMSGSIZE: the pod did not learn the tunnel's MTU")
	}
	// IP_MTU needs a connected socket: one in the pod, to the same destination.
	dc, err := a.DialContext(ctx, "udp4", echo.String())
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	draw, err := dc.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mtu int
	var merr error
	if err := draw.Control(func(fd uintptr) { mtu, merr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU) }); err != nil || merr != nil {
		t.Fatalf("IP_MTU: %v %v", err, merr)
	}
	if mtu != 1350 {
		t.Errorf("path MTU to %s learnt by the pod: %d, want 1350 (the tunnel's)", dstG1, mtu)
	}
	if err := answered(1350 - 28); err != nil {
		t.Errorf("1322-byte DF datagram: %v", err)
	}
}
