package dataplane

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// TestDestinationFirstAfterMove: pod a's connection leaves through gw1 with gw1's egress IP;
// the IP moves to gw2 (gw1 drops it, gw2 mounts it, the router learns its new holder) while
// worker1 still lists gw1, so the destination's next segment reaches gw2 before any of the
// pod's: gw2 has no conntrack entry for the connection. Once worker1 lists gw2 with the IP,
// the pod's next segment follows it there, and the connection goes on both ways, from the same
// address and port. Before the stray chain, gw2's stack reset the destination's segment and
// the connection died with it.
func TestDestinationFirstAfterMove(t *testing.T) {
	c := newCluster(t)
	gw2, x := c.topo.Node("gw2"), c.eg["gw1"][0]
	pc, sc, _ := c.connectThroughGW1(t, 7073)

	// The move: gw1 no longer holds x, gw2 serves it; worker1 does not know yet.
	c.states["gw1"] = State{NodeIP: c.states["gw1"].NodeIP, PolicySets: c.states["gw1"].PolicySets,
		Groups: c.states["gw1"].Groups, Pods: c.states["gw1"].Pods, ProbePort: c.states["gw1"].ProbePort}
	role := c.states["gw2"].Gateway
	role.Addresses = append(role.Addresses, EgressAddress{IP: x, Interface: gw2.Link})
	role.Groups[0].EgressIPv4s = []netip.Addr{x}
	for _, n := range []string{"gw1", "gw2"} {
		if err := c.dps[n].Apply(ctxT(t), c.states[n]); err != nil {
			t.Fatalf("applying the move on %s: %v", n, err)
		}
	}
	if out, err := c.topo.Router.Run("ip", "neigh", "flush", "to", x.String()); err != nil {
		t.Fatalf("flushing the router's neighbour %s: %v: %s", x, err, out)
	}
	// The destination speaks first, and its segment reaches gw2; wait until its stack either
	// got a reset or retransmitted (no answer: dropped).
	if _, err := sc.Write([]byte("from the destination\n")); err != nil {
		t.Fatal(err)
	}
	if err := waitTCP(ctxT(t), sc, func(i *unix.TCPInfo) bool { return i.State == unix.BPF_TCP_CLOSE || i.Total_retrans > 0 }); err != nil {
		t.Fatal(err)
	}

	// worker1 learns that gw2 holds x now (gw1 gone): the flow follows the address.
	g := c.states["worker1"].Groups
	g[0].Gateways = []GatewayNode{{ID: c.gwIDs["gw2"], NodeIP: gw2.IP, EgressIPv4: x, Healthy: true}}
	if err := c.dps["worker1"].Apply(ctxT(t), c.states["worker1"]); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.Write([]byte("from the pod\n")); err != nil {
		t.Fatal(err)
	}
	// The destination reading the pod's line on its connection is the proof that it came from
	// the same address and port.
	for _, side := range []struct {
		name string
		conn net.Conn
		want string
	}{{"the destination", sc, "from the pod\n"}, {"pod a", pc, "from the destination\n"}} {
		_ = side.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		line, err := bufio.NewReader(side.conn).ReadString('\n')
		if err != nil || line != side.want {
			t.Fatalf("%s read %q, %v after the move; want %q", side.name, line, err, side.want)
		}
	}
}

// connectThroughGW1 opens a connection from pod a to dstG1:port and checks that the
// destination sees gw1's egress IP; it returns both ends and the address the destination saw.
func (c *cluster) connectThroughGW1(t *testing.T, port uint16) (pod, dest net.Conn, seen string) {
	t.Helper()
	dst := netip.AddrPortFrom(dstG1, port)
	ln, err := c.topo.External.Listen("tcp", dst.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		if sc, err := ln.Accept(); err == nil {
			accepted <- sc
		}
	}()
	pc, err := c.topo.Pod("a").DialContext(ctxT(t), "tcp", dst.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	sc := <-accepted
	t.Cleanup(func() { _ = sc.Close() })
	seen = sc.RemoteAddr().String()
	if x := c.eg["gw1"][0]; netip.MustParseAddrPort(seen).Addr() != x {
		t.Fatalf("the destination saw %s, want gw1's egress IP %s", seen, x)
	}
	return pc, sc, seen
}

// waitTCP polls c's TCP_INFO until ok or ctx ends.
func waitTCP(ctx context.Context, c net.Conn, ok func(*unix.TCPInfo) bool) error {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return err
	}
	for {
		var info *unix.TCPInfo
		var ierr error
		if err := raw.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.SOL_TCP, unix.TCP_INFO) }); err != nil {
			return err
		}
		if ierr != nil {
			return fmt.Errorf("reading TCP_INFO: %w", ierr)
		}
		if ok(info) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting on the destination's socket (state %d, %d retransmissions): %w", info.State, info.Total_retrans, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestMoveBackAfterStraySegment: pod a's connection leaves through gw1 with egress IP x; x moves
// to gw2 and, before the router learns it, the destination's next segment still reaches gw1,
// which holds x no more and forwards it, leaving a conntrack entry for it (destination → x, the
// reply tuple of the pod's translation). The connection goes on through gw2. Then x comes back
// to gw1 (a drain of gw2, as a rolling upgrade does): gw1 must translate the pod's connection
// to x and its port again. With the forwarded segment's entry still there, that tuple was taken
// and the pod's segments never reached the destination's connection again (here the
// destination's read times out; in the lab the destination reset it): the connections of
// BenchmarkFailover drain-long that broke when their address returned (10 of 85).
func TestMoveBackAfterStraySegment(t *testing.T) {
	c := newCluster(t)
	gw1, gw2, x := c.topo.Node("gw1"), c.topo.Node("gw2"), c.eg["gw1"][0]
	pc, sc, seen := c.connectThroughGW1(t, 7074)
	pr, sr := bufio.NewReader(pc), bufio.NewReader(sc)
	exchange := func(when string) {
		t.Helper()
		for _, side := range []struct {
			name     string
			from, at net.Conn // written on, read on
			to       *bufio.Reader
		}{{"the destination", pc, sc, sr}, {"pod a", sc, pc, pr}} {
			msg := "to " + side.name + " " + when + "\n"
			if _, err := side.from.Write([]byte(msg)); err != nil {
				t.Fatalf("%s: writing to %s: %v", when, side.name, err)
			}
			_ = side.at.SetReadDeadline(time.Now().Add(20 * time.Second))
			line, err := side.to.ReadString('\n')
			if err != nil || line != msg {
				t.Fatalf("%s read %q, %v %s; want %q (the destination saw the pod as %s)", side.name, line, err, when, msg, seen)
			}
		}
	}
	exchange("before the moves")

	orig1, orig2 := c.states["gw1"], c.states["gw2"]
	withX := func(s State, n *netns.Node) State {
		role := *s.Gateway
		role.Addresses = append(slices.Clone(role.Addresses), EgressAddress{IP: x, Interface: n.Link})
		role.Groups = slices.Clone(role.Groups)
		role.Groups[0].EgressIPv4s = []netip.Addr{x}
		s.Gateway = &role
		return s
	}
	apply := func(node string, s State) {
		t.Helper()
		if err := c.dps[node].Apply(ctxT(t), s); err != nil {
			t.Fatalf("applying on %s: %v", node, err)
		}
	}
	// listed tells worker1 who holds x; nil while it moves (no holder listed: the pod's
	// segments wait on its node, as the agents' hold does).
	listed := func(n *netns.Node) {
		t.Helper()
		s := c.states["worker1"]
		s.Groups = slices.Clone(s.Groups)
		s.Groups[0].Gateways = nil
		if n != nil {
			s.Groups[0].Gateways = []GatewayNode{{ID: c.gwIDs[n.Name], NodeIP: n.IP, EgressIPv4: x, Healthy: true}}
		}
		apply("worker1", s)
	}
	flushRouter := func() {
		t.Helper()
		if out, err := c.topo.Router.Run("ip", "neigh", "flush", "to", x.String()); err != nil {
			t.Fatalf("flushing the router's neighbour %s: %v: %s", x, err, out)
		}
	}

	// x leaves gw1; the router still sends it there. The destination's segment reaches gw1.
	listed(nil)
	apply("gw1", State{NodeIP: orig1.NodeIP, PolicySets: orig1.PolicySets, Groups: orig1.Groups, Pods: orig1.Pods, ProbePort: orig1.ProbePort})
	if _, err := sc.Write([]byte("to pod a while x moves\n")); err != nil {
		t.Fatal(err)
	}
	if err := waitTCP(ctxT(t), sc, func(i *unix.TCPInfo) bool { return i.State == unix.BPF_TCP_CLOSE || i.Total_retrans > 0 }); err != nil {
		t.Fatal(err)
	}
	// x lands on gw2, the router and worker1 learn it; the connection goes on through gw2.
	apply("gw2", withX(orig2, gw2))
	flushRouter()
	listed(gw2)
	// The pod speaks first: its segment rebuilds the translation on gw2, and the
	// destination's retransmission gets through after it.
	if _, err := pc.Write([]byte("to the destination on gw2\n")); err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		name string
		conn net.Conn
		from *bufio.Reader
		want string
	}{{"the destination", sc, sr, "to the destination on gw2\n"}, {"pod a", pc, pr, "to pod a while x moves\n"}} {
		_ = r.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		if line, err := r.from.ReadString('\n'); err != nil || line != r.want {
			t.Fatalf("%s read %q, %v after the move to gw2; want %q", r.name, line, err, r.want)
		}
	}
	exchange("on gw2")

	// x comes back to gw1.
	listed(nil)
	apply("gw2", orig2)
	apply("gw1", orig1)
	flushRouter()
	listed(gw1)
	exchange("back on gw1")
}
