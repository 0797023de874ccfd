package netns

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/egressd/egressd/test/privileged"
)

// clusterSpec is the shape the datapath tests use: 2 workers and 2 gateways on one L2.
func clusterSpec() Spec {
	return Spec{Nodes: []NodeSpec{
		{Name: "worker1", Pods: []PodSpec{{Name: "a"}, {Name: "b"}}},
		{Name: "worker2", Pods: []PodSpec{{Name: "c"}}},
		{Name: "gw1", Pods: []PodSpec{{Name: "g"}}},
		{Name: "gw2"},
	}}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type probe struct {
	name string
	do   func(from *Namespace, ctx context.Context, dst netip.Addr) (netip.Addr, error)
}

var probes = []probe{
	{"http", (*Namespace).HTTPGet},
	{"udp", (*Namespace).UDPEcho},
	{"icmp", (*Namespace).Ping},
}

func expectSeen(t *testing.T, from *Namespace, dst, want netip.Addr) {
	t.Helper()
	for _, p := range probes {
		got, err := p.do(from, ctxT(t), dst)
		if err != nil {
			t.Errorf("%s %s → %s: %v", p.name, from.Name, dst, err)
			continue
		}
		if got != want {
			t.Errorf("%s %s → %s: server saw %s, want %s", p.name, from.Name, dst, got, want)
		}
	}
}

func TestClusterTopology(t *testing.T) {
	topo := New(t, clusterSpec())
	a, b, c, g := topo.Pod("a"), topo.Pod("b"), topo.Pod("c"), topo.Pod("g")
	w1 := topo.Node("worker1")
	if a.Node != w1 || !strings.HasPrefix(a.HostIface, "lxc") || len(a.HostIface) != 15 {
		t.Fatalf("pod a: node %s host iface %q", a.Node.Name, a.HostIface)
	}
	for _, p := range []*Pod{b, c} {
		if err := p.StartServers(); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("pod to pod keeps the pod IP", func(t *testing.T) {
		expectSeen(t, a.Namespace, c.IP, a.IP)   // across nodes
		expectSeen(t, a.Namespace, c.IP6, a.IP6) // across nodes, IPv6
		expectSeen(t, a.Namespace, b.IP, a.IP)   // same node
		expectSeen(t, g.Namespace, b.IP6, g.IP6)
	})
	t.Run("pod to external is masqueraded to the node IP", func(t *testing.T) {
		for _, p := range []*Pod{a, c, g} {
			for _, dst := range topo.External.Addr4() {
				expectSeen(t, p.Namespace, dst, p.Node.IP)
			}
			for _, dst := range topo.External.Addr6() {
				expectSeen(t, p.Namespace, dst, p.Node.IP6)
			}
		}
	})
	t.Run("node to external keeps the node IP", func(t *testing.T) {
		expectSeen(t, w1.Namespace, topo.External.Addrs[0], w1.IP)
	})
	t.Run("hostile rules are in place", func(t *testing.T) {
		out, err := w1.Run("nft", "list", "table", "inet", HostileTable)
		if err != nil {
			t.Skipf("nft not usable: %v", err)
		}
		for _, want := range []string{"masquerade", "ct state invalid drop", w1.PodCIDR.String(), w1.PodCIDR6.String()} {
			if !strings.Contains(string(out), want) {
				t.Errorf("hostile table lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("bulk transfer 100 MB both ways", func(t *testing.T) {
		ctx := ctxT(t)
		for _, dir := range []Direction{Upload, Download} {
			res, err := a.Transfer(ctx, topo.External.Addrs[0], 100<<20, dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("dir %d: %v", dir, res)
		}
		res, err := a.Transfer(ctx, c.IP6, 100<<20, Upload)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("pod to pod v6: %v", res)
	})
	t.Run("long-running flow", func(t *testing.T) {
		f, err := c.StartFlow(ctxT(t), topo.External.Addr6()[0], FlowOptions{Interval: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		st := f.Stop()
		if len(st.Errors) != 0 || st.Answered < 10 || len(st.Sources) != 1 || st.Sources[0] != c.Node.IP6 {
			t.Errorf("flow stats: %+v", st)
		}
	})
	t.Run("unplugging a node cuts it off", func(t *testing.T) {
		port, err := topo.Fabric.Netlink().LinkByName(w1.FabricPort)
		if err != nil {
			t.Fatal(err)
		}
		if err := topo.Fabric.Netlink().LinkSetDown(port); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if _, err := a.HTTPGet(ctx, topo.External.Addrs[0]); err == nil {
			t.Error("request from a node without underlay succeeded")
		}
		if err := topo.Fabric.Netlink().LinkSetUp(port); err != nil {
			t.Fatal(err)
		}
		if _, err := a.HTTPGet(ctxT(t), topo.External.Addrs[0]); err != nil {
			t.Error(err)
		}
	})
}

func TestRoutedZones(t *testing.T) {
	topo := New(t, Spec{
		Routed:          true,
		HostIfacePrefix: "cali",
		Zones:           []ZoneSpec{{Name: "us-east-1a"}, {Name: "us-east-1b"}},
		Nodes: []NodeSpec{
			{Name: "n1", Zone: "us-east-1a", Pods: []PodSpec{{Name: "p1"}}},
			{Name: "n2", Zone: "us-east-1b", Pods: []PodSpec{{Name: "p2"}}},
			{Name: "n3", Zone: "us-east-1b"},
		},
	})
	p1, p2 := topo.Pod("p1"), topo.Pod("p2")
	if topo.Zones[0].Bridge == topo.Zones[1].Bridge {
		t.Fatalf("routed zones share bridge %s", topo.Zones[0].Bridge)
	}
	if !strings.HasPrefix(p1.HostIface, "cali") {
		t.Errorf("host iface %q", p1.HostIface)
	}
	if got, want := topo.Node("n3").IP, netip.MustParseAddr("10.0.1.11"); got != want {
		t.Errorf("n3 IP %s, want %s", got, want)
	}
	if err := p2.StartServers(); err != nil {
		t.Fatal(err)
	}
	expectSeen(t, p1.Namespace, p2.IP, p1.IP)
	expectSeen(t, p1.Namespace, p2.IP6, p1.IP6)
	expectSeen(t, p2.Namespace, topo.External.Addrs[0], p2.Node.IP)
	expectSeen(t, p2.Namespace, topo.External.Addr6()[0], p2.Node.IP6)
}

func TestWithoutHostileRulesIPv4Only(t *testing.T) {
	topo := New(t, Spec{NoHostileRules: true, NoIPv6: true, HostIfacePrefix: "veth",
		Nodes: []NodeSpec{{Name: "n", Pods: []PodSpec{{Name: "p"}}}}})
	p := topo.Pod("p")
	if len(topo.External.Addr6()) != 0 {
		t.Errorf("IPv4-only topology has external v6 addresses %v", topo.External.Addr6())
	}
	expectSeen(t, p.Namespace, topo.External.Addrs[0], p.IP)
}

func TestCloseLeavesNothing(t *testing.T) {
	privileged.Require(t, "network namespaces")
	rootLinks := linkNames(t)
	topo, err := Build(context.Background(), clusterSpec())
	if err != nil {
		t.Fatal(err)
	}
	if got := linkNames(t); got != rootLinks {
		t.Errorf("root namespace links changed while the bed is up:\n%s\nwas\n%s", got, rootLinks)
	}
	if err := topo.Pod("a").StartServers(); err != nil {
		t.Fatal(err)
	}
	f, err := topo.Pod("c").StartFlow(ctxT(t), topo.External.Addrs[0], FlowOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := countNamespaces(t, topo.ID); n != 3+4+4 {
		t.Errorf("%d namespaces while up, want 11", n)
	}
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.Done():
	default:
		t.Error("flow still running after Close")
	}
	if n := countNamespaces(t, topo.ID); n != 0 {
		t.Errorf("%d namespaces left after Close", n)
	}
	if got := linkNames(t); got != rootLinks {
		t.Errorf("root namespace links changed:\n%s\nwas\n%s", got, rootLinks)
	}
	if err := topo.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestSweep(t *testing.T) {
	privileged.Require(t, "network namespaces")
	prefix := "edtbsweep-"
	live, err := Build(context.Background(), Spec{Prefix: prefix, Nodes: []NodeSpec{{Name: "n"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	// A namespace of a "crashed" run: its pid is above pid_max, so certainly dead.
	dead := prefix + "abcdef-999999999-node"
	h, err := createNamespace(dead)
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	if err := Sweep(prefix); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(runDir + "/" + dead); !os.IsNotExist(err) {
		t.Errorf("dead namespace %s survived Sweep (%v)", dead, err)
		_ = deleteNamespace(dead)
	}
	if n := countNamespaces(t, live.ID); n != 4 {
		t.Errorf("Sweep removed namespaces of a live run: %d left, want 4", n)
	}
}

func TestDoRestoresThread(t *testing.T) {
	topo := New(t, Spec{Nodes: []NodeSpec{{Name: "n"}}})
	var inside []string
	err := topo.Router.Do(func() error {
		links, err := netlink.LinkList()
		for _, l := range links {
			inside = append(inside, l.Attrs().Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(inside, " "), "ext0") {
		t.Errorf("Do did not run in the router namespace: links %v", inside)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("panic inside Do was not re-raised")
			}
		}()
		_ = topo.Router.Do(func() error { panic("boom") })
	}()
	if strings.Contains(linkNames(t), "ext0") {
		t.Error("the test's namespace is the router's after Do")
	}
}

func linkNames(t *testing.T) string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return strings.Join(names, " ")
}

func countNamespaces(t *testing.T, id string) int {
	t.Helper()
	entries, err := os.ReadDir(runDir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), id+"-") {
			n++
		}
	}
	return n
}

func TestIsolatedNodesFollowRouter(t *testing.T) {
	topo := New(t, Spec{IsolatedNodes: true, Nodes: []NodeSpec{
		{Name: "n1", Pods: []PodSpec{{Name: "p1"}}},
		{Name: "n2", Pods: []PodSpec{{Name: "p2"}}},
	}})
	n1, n2 := topo.Node("n1"), topo.Node("n2")
	p1, p2 := topo.Pod("p1"), topo.Pod("p2")
	if err := p2.StartServers(); err != nil {
		t.Fatal(err)
	}
	expectSeen(t, p1.Namespace, p2.IP, p1.IP)
	expectSeen(t, p1.Namespace, p2.IP6, p1.IP6)
	expectSeen(t, p1.Namespace, topo.External.Addrs[0], n1.IP)
	// n1 reached n2 through the router: it knows n2's address by the router's MAC.
	leg, err := topo.Router.Netlink().LinkByName(topo.Zones[0].RouterLink)
	if err != nil {
		t.Fatal(err)
	}
	neighs, err := n1.Netlink().NeighList(0, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, nb := range neighs {
		if nb.IP.Equal(n2.IP.AsSlice()) || nb.IP.Equal(n2.IP6.AsSlice()) {
			found++
			if nb.HardwareAddr.String() != leg.Attrs().HardwareAddr.String() {
				t.Errorf("n1 resolves %s to %s, not the router's %s", nb.IP, nb.HardwareAddr, leg.Attrs().HardwareAddr)
			}
		}
	}
	if found != 2 {
		t.Errorf("n1 has %d neighbour entries for n2, want 2: %v", found, neighs)
	}

	// Both nodes claim the same "egress IP"; only the one the router points at gets traffic.
	eip, eip6 := topo.Zones[0].Addr(200), topo.Zones[0].Addr6(200)
	for _, n := range []*Node{n1, n2} {
		if err := n.AddAddr(n.Link, netip.PrefixFrom(eip, 24)); err != nil {
			t.Fatal(err)
		}
		if err := n.AddAddr(n.Link, netip.PrefixFrom(eip6, 64)); err != nil {
			t.Fatal(err)
		}
	}
	if err := n2.StartServers(); err != nil { // n1 has no server: a request reaching it fails
		t.Fatal(err)
	}
	ext := topo.External.Namespace
	for _, a := range []netip.Addr{eip, eip6} {
		p := netip.PrefixFrom(a, a.BitLen())
		if err := topo.RouteToNode(p, n2); err != nil {
			t.Fatal(err)
		}
		if _, err := ext.HTTPGet(ctxT(t), a); err != nil {
			t.Errorf("%s routed to n2: %v", a, err)
		}
		if err := topo.RouteToNode(p, n1); err != nil {
			t.Fatal(err)
		}
		if _, err := ext.HTTPGet(ctxT(t), a); err == nil {
			t.Errorf("%s routed to n1 reached n2's server", a)
		}
		if err := topo.Unroute(p); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		if _, err := ext.HTTPGet(ctx, a); err == nil {
			t.Errorf("%s unrouted still answers", a)
		}
		cancel()
	}
}

func TestStartRunsInNamespaceAndCloseKills(t *testing.T) {
	privileged.Require(t, "network namespaces")
	topo, err := Build(context.Background(), Spec{Nodes: []NodeSpec{{Name: "n"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer topo.Close()
	n := topo.Node("n")
	out, err := n.Run("ip", "-o", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Skipf("ip not usable: %v", err)
	}
	if !strings.Contains(string(out), n.IP.String()) {
		t.Errorf("Run did not run in the node: %s", out)
	}
	cmd := exec.Command("sleep", "60")
	if err := n.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(cmd.Process.Pid, 0); err == nil {
		t.Errorf("process %d survived Close", cmd.Process.Pid)
	}
}

func TestMain(m *testing.M) {
	if privileged.Available() {
		// Leftovers of crashed runs of this package; live runs are left alone.
		_ = Sweep(DefaultPrefix)
		_ = Sweep("edtbsweep-")
	}
	os.Exit(m.Run())
}
