package dataplane

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/test/netns"
)

// TestSNATPortBudget: a gateway holding three egress IPs for a group, with a
// port range of 16 ports per IP, carries 48 concurrent TCP connections from
// one pod to one destination address and port, three times what one IP can.
// Connections are opened one at a time and kept open. Each goes out with the
// IP the hash of its source picked, and a connection fails only once that
// IP's 16 ports toward the destination are all taken: until the first IP is
// full, none fails, conntrack refuses nothing and SNATUsage shows no IP at
// its budget; at the end every IP carries exactly its budget, SNATUsage says
// so, and conntrack counted the refused connections.
func TestSNATPortBudget(t *testing.T) {
	skipUnlessRoot(t)
	topo := netns.New(t, netns.Spec{NoIPv6: true, Nodes: []netns.NodeSpec{
		{Name: "worker1", Pods: []netns.PodSpec{{Name: "a"}}},
		{Name: "gw1"},
	}})
	const perIP = 16
	ports := PortRange{Min: 40000, Max: 40000 + perIP - 1}
	bpffs := mountBPFFS(t)
	w, gw, a := topo.Node("worker1"), topo.Node("gw1"), topo.Pod("a")
	egress := []netip.Addr{topo.Zones[0].Addr(200), topo.Zones[0].Addr(201), topo.Zones[0].Addr(202)}
	group := []Group{{ID: 1, Gateways: []GatewayNode{{ID: 1, NodeIP: gw.IP, EgressIPv4: egress[0], Healthy: true}}}}
	sets := []PolicySet{{ID: 1, Destinations: []Destination{{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Group: 1}}}}
	role := &GatewayRole{Groups: []ServedGroup{{Group: 1, EgressIPv4s: egress}}, Sources: []Source{{Node: w.IP, Group: 1, Pod: a.IP}}}
	for _, ip := range egress {
		role.Addresses = append(role.Addresses, EgressAddress{IP: ip, Interface: gw.Link})
	}
	var gwDP *Dataplane
	for n, s := range map[*netns.Node]State{
		w:  {NodeIP: w.IP, PolicySets: sets, Groups: group, Pods: []Pod{{Name: "a", IPs: []netip.Addr{a.IP}, Interface: a.HostIface, PolicySet: 1}}},
		gw: {NodeIP: gw.IP, Groups: group, Gateway: role},
	} {
		dp := New(Config{NetNS: n.Path(), PinRoot: filepath.Join(bpffs, n.Name), SNATPorts: ports})
		t.Cleanup(func() { _ = dp.Remove(context.Background()) })
		if err := dp.Apply(ctxT(t), s); err != nil {
			t.Fatalf("applying on %s: %v", n.Name, err)
		}
		if n == gw {
			gwDP = dp
		}
	}

	// The destination: one address and port on the external host, which
	// accepts and holds every connection and records its source.
	dst := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.10"), 7070)
	var ln net.Listener
	if err := topo.External.Do(func() (err error) {
		ln, err = net.Listen("tcp", dst.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	seen := map[netip.Addr]int{}
	var badPorts []netip.AddrPort
	accepted := make(chan struct{}, 1024)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			src := netip.MustParseAddrPort(c.RemoteAddr().String())
			mu.Lock()
			held = append(held, c)
			seen[src.Addr()]++
			if src.Port() < ports.Min || src.Port() > ports.Max {
				badPorts = append(badPorts, src)
			}
			mu.Unlock()
			accepted <- struct{}{}
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	})

	usage := func() SNATUsage {
		t.Helper()
		u, err := gwDP.SNATUsage()
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	start := usage()
	if start.Budget != perIP || len(start.Use) != 0 {
		t.Fatalf("before any connection: budget %d, use %v; want %d and none", start.Budget, start.Use, perIP)
	}
	dial := func() (net.Conn, error) {
		var c net.Conn
		err := a.Do(func() (err error) {
			// One SYN: a connection whose SNAT failed is dropped at the
			// gateway, and its retransmissions would fail the same way.
			c, err = (&net.Dialer{Timeout: time.Second}).Dial("tcp", dst.String())
			return err
		})
		return c, err
	}
	// Bounded: main's hash-only choice needed up to 64 refused attempts to fill all three IPs
	// (three bins of 16 filled at random); with the overflow none is refused.
	const budget, maxAttempts, beyond = perIP * 3, perIP*3 + 64, 3
	var clients []net.Conn
	t.Cleanup(func() {
		for _, c := range clients {
			_ = c.Close()
		}
	})
	firstFail, failed := -1, 0
	for attempt := 0; len(clients) < budget && attempt < maxAttempts; attempt++ {
		c, err := dial()
		if err != nil {
			failed++
			if firstFail < 0 {
				firstFail = len(clients)
				mu.Lock()
				t.Errorf("connection %d of %d refused below the combined budget (per IP %v): %v", len(clients)+1, budget, seen, err)
				mu.Unlock()
			}
			continue
		}
		clients = append(clients, c)
		<-accepted
		if failed == 0 && len(clients) < budget {
			// Below the combined budget: conntrack refused nothing and SNATUsage shows
			// nothing exhausted.
			u := usage()
			if u.InsertFailed != start.InsertFailed || len(u.Use) == 0 || u.Use[0].Exhausted {
				t.Fatalf("after %d connections: insert_failed %d→%d, use %v", len(clients), start.InsertFailed, u.InsertFailed, u.Use)
			}
		}
	}
	// At the budget: every further connection is refused, and counted.
	atBudget := usage()
	for range beyond {
		c, err := dial()
		if err == nil {
			clients = append(clients, c)
			<-accepted
			t.Errorf("connection %d of a budget of %d went through", len(clients), budget)
			continue
		}
		if firstFail < 0 {
			firstFail = len(clients)
		}
		failed++
	}
	mu.Lock()
	perIPSeen := map[netip.Addr]int{}
	for ip, n := range seen {
		perIPSeen[ip] = n
	}
	bad := slices.Clone(badPorts)
	mu.Unlock()
	if len(clients) != budget {
		t.Fatalf("%d connections open after %d refused, want %d (per IP %v)", len(clients), failed, budget, perIPSeen)
	}
	for _, ip := range egress {
		if perIPSeen[ip] != perIP {
			t.Errorf("egress IP %s carries %d connections, want %d (per IP %v)", ip, perIPSeen[ip], perIP, perIPSeen)
		}
	}
	if len(bad) != 0 {
		t.Errorf("sources outside the port range %s: %v", ports, bad)
	}
	u := usage()
	var full []netip.Addr
	for _, s := range u.Use {
		if s.Destination != dst || s.Ports != u.Budget || !s.Exhausted {
			t.Errorf("usage %+v, want %d ports toward %s, exhausted", s, u.Budget, dst)
		}
		full = append(full, s.EgressIP)
	}
	if !slices.Equal(full, egress) {
		t.Errorf("IPs at their budget %v, want %v", full, egress)
	}
	if got := u.InsertFailed - atBudget.InsertFailed; got < beyond {
		t.Errorf("%d connections refused at the budget, conntrack insert_failed +%d", beyond, got)
	}
	if got := refusedSum(u) - refusedSum(atBudget); got < beyond {
		t.Errorf("%d connections refused at the budget, %d counted with every egress IP full", beyond, got)
	}
	t.Logf("%d connections over %d egress IPs × %d ports; first refused at %d of %d, %d refused, insert_failed +%d, every IP full +%d",
		len(clients), len(egress), perIP, firstFail+1, budget, failed, u.InsertFailed-start.InsertFailed, refusedSum(u)-refusedSum(start))
}

func refusedSum(u SNATUsage) (n uint64) {
	for _, v := range u.Refused {
		n += v
	}
	return n
}
