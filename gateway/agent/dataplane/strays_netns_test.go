package dataplane

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/test/netns"
)

// TestStrayTCPToEgressIP: TCP from outside to a gateway's egress IP that is no reply of a
// connection the gateway NATs (as a destination's retransmission is, when the egress IP just
// moved to this gateway and the pod's next segment has not rebuilt the NAT binding yet) is
// dropped, never answered with a reset that would kill the connection. The gateway's own NAT
// is unchanged: the pod's connection through it works, and the destination sees the egress IP.
func TestStrayTCPToEgressIP(t *testing.T) {
	skipUnlessRoot(t)
	topo := netns.New(t, netns.Spec{NoIPv6: true, Nodes: []netns.NodeSpec{
		{Name: "worker1", Pods: []netns.PodSpec{{Name: "a"}}},
		{Name: "gw1"},
	}})
	bpffs := mountBPFFS(t)
	w, gw, a := topo.Node("worker1"), topo.Node("gw1"), topo.Pod("a")
	egress := topo.Zones[0].Addr(200)
	group := []Group{{ID: 1, Gateways: []GatewayNode{{ID: 1, NodeIP: gw.IP, EgressIPv4: egress, Healthy: true}}}}
	sets := []PolicySet{{ID: 1, Destinations: []Destination{{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Group: 1}}}}
	role := &GatewayRole{Groups: []ServedGroup{{Group: 1, EgressIPv4s: []netip.Addr{egress}}},
		Sources:   []Source{{Node: w.IP, Group: 1, Pod: a.IP}},
		Addresses: []EgressAddress{{IP: egress, Interface: gw.Link}}}
	for n, s := range map[*netns.Node]State{
		w:  {NodeIP: w.IP, PolicySets: sets, Groups: group, Pods: []Pod{{Name: "a", IPs: []netip.Addr{a.IP}, Interface: a.HostIface, PolicySet: 1}}},
		gw: {NodeIP: gw.IP, Groups: group, Gateway: role},
	} {
		dp := New(Config{NetNS: n.Path(), PinRoot: filepath.Join(bpffs, n.Name)})
		t.Cleanup(func() { _ = dp.Remove(context.Background()) })
		if err := dp.Apply(ctxT(t), s); err != nil {
			t.Fatalf("applying on %s: %v", n.Name, err)
		}
	}

	// The gateway's NAT still carries the pod's connection, seen from the egress IP.
	dst := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.10"), 7071)
	ln, err := topo.External.Listen("tcp", dst.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	seen := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		seen <- c.RemoteAddr().String()
		_ = c.Close()
	}()
	c, err := a.DialContext(ctxT(t), "tcp", dst.String())
	if err != nil {
		t.Fatalf("pod a's connection to %s through %s: %v", dst, egress, err)
	}
	_ = c.Close()
	if src := netip.MustParseAddrPort(<-seen).Addr(); src != egress {
		t.Fatalf("the destination saw pod a's connection from %s, want the egress IP %s", src, egress)
	}

	// A connection attempt from outside to the egress IP, where nothing listens: a reset
	// (connection refused) is what the gateway's stack would answer; dropped, it times out.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err = topo.External.DialContext(ctx, "tcp", netip.AddrPortFrom(egress, 7072).String())
	if err == nil {
		_ = c.Close()
		t.Fatalf("a connection from outside to %s:7072 was accepted", egress)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("the gateway answered TCP from outside to its egress IP %s with a reset: %v", egress, err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("connecting from outside to %s:7072: %v, want a timeout (dropped)", egress, err)
	}
}
