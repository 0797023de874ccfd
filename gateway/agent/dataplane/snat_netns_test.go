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
	full := func() (n int) {
		mu.Lock()
		defer mu.Unlock()
		for _, ip := range egress {
			if seen[ip] >= perIP {
				n++
			}
		}
		return n
	}
	// Bounded: every IP is full after 48 successes; by then fewer than 1 run
	// in 10^4 has needed more than 64 refused attempts (three bins of 16
	// filled at random).
	const budget, maxAttempts = perIP * 3, perIP*3 + 64
	var clients []net.Conn
	t.Cleanup(func() {
		for _, c := range clients {
			_ = c.Close()
		}
	})
	firstFail, failed := -1, 0
	for attempt := 0; len(clients) < budget && attempt < maxAttempts; attempt++ {
		fullBefore := full()
		var c net.Conn
		err := a.Do(func() (err error) {
			// One SYN: a connection whose SNAT failed is dropped at the
			// gateway, and its retransmissions would fail the same way.
			c, err = (&net.Dialer{Timeout: time.Second}).Dial("tcp", dst.String())
			return err
		})
		if err != nil {
			failed++
			if firstFail < 0 {
				firstFail = len(clients)
				if fullBefore == 0 {
					mu.Lock()
					t.Fatalf("connection %d failed while no egress IP was full (per IP %v): %v", attempt, seen, err)
				}
			}
			continue
		}
		clients = append(clients, c)
		<-accepted
		if full() == 0 {
			// Below the first IP's budget: nothing refused, nothing at the
			// budget.
			u := usage()
			if u.InsertFailed != start.InsertFailed || len(u.Use) == 0 || u.Use[0].Ports >= perIP {
				t.Fatalf("after %d connections, no IP full: insert_failed %d→%d, use %v", len(clients), start.InsertFailed, u.InsertFailed, u.Use)
			}
		}
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
	var atBudget []netip.Addr
	for _, s := range u.Use {
		if s.Destination != dst || s.Ports != u.Budget {
			t.Errorf("usage %+v, want %d ports toward %s", s, u.Budget, dst)
		}
		atBudget = append(atBudget, s.EgressIP)
	}
	if !slices.Equal(atBudget, egress) {
		t.Errorf("IPs at their budget %v, want %v", atBudget, egress)
	}
	if failed > 0 && u.InsertFailed <= start.InsertFailed {
		t.Errorf("%d connections refused, conntrack insert_failed %d→%d", failed, start.InsertFailed, u.InsertFailed)
	}
	t.Logf("%d connections over %d egress IPs × %d ports; first refused after %d, %d refused, insert_failed +%d",
		len(clients), len(egress), perIP, firstFail, failed, u.InsertFailed-start.InsertFailed)
}
