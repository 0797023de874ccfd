package dataplane

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/test/netns"
	"github.com/egressd/egressd/test/privileged"
)

// cluster is the e2e bed: worker1 (pods a selected, b unselected), worker2
// (pod c selected), gw1 (pod g selected) and gw2, each running a Dataplane.
//
// Group 1 has gw1 only (deterministic egress IP); group 2 has gw1 and gw2.
// Policy set 1 sends 203.0.113.0/24 and 2001:db8:113::/64 to group 1 except
// 203.0.113.200 and 2001:db8:113::200, and 198.51.100.0/24 and
// 2001:db8:100::/64 to group 2.
type cluster struct {
	t      testing.TB
	topo   *netns.Topology
	bpffs  string
	dps    map[string]*Dataplane
	states map[string]State
	eg     map[string][2]netip.Addr // gateway node → egress v4, v6
	gwIDs  map[string]uint32
	cfg    func(*Config)
}

var (
	dstG1   = netip.MustParseAddr("203.0.113.10")
	dstExcl = netip.MustParseAddr("203.0.113.200")
	dstG2   = netip.MustParseAddr("198.51.100.10")
	dstG1v6 = netip.MustParseAddr("2001:db8:113::10")
	dstEx6  = netip.MustParseAddr("2001:db8:113::200")
	dstG2v6 = netip.MustParseAddr("2001:db8:100::10")
)

func mountBPFFS(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, ""); err != nil {
		t.Fatalf("mounting bpffs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func newCluster(t *testing.T) *cluster { return newClusterWith(t, nil) }

func newClusterWith(t testing.TB, cfg func(*Config)) *cluster {
	t.Helper()
	topo := netns.New(t, netns.Spec{Nodes: []netns.NodeSpec{
		{Name: "worker1", Pods: []netns.PodSpec{{Name: "a"}, {Name: "b"}}},
		{Name: "worker2", Pods: []netns.PodSpec{{Name: "c"}}},
		{Name: "gw1", Pods: []netns.PodSpec{{Name: "g"}}},
		{Name: "gw2"},
	}})
	c := &cluster{t: t, topo: topo, bpffs: mountBPFFS(t), dps: map[string]*Dataplane{}, states: map[string]State{},
		eg: map[string][2]netip.Addr{}, gwIDs: map[string]uint32{"gw1": 1, "gw2": 2}, cfg: cfg}
	z := topo.Zones[0]
	c.eg["gw1"] = [2]netip.Addr{z.Addr(200), z.Addr6(200)}
	c.eg["gw2"] = [2]netip.Addr{z.Addr(201), z.Addr6(201)}
	for _, n := range topo.Nodes {
		dp := c.newDataplane(n.Name)
		c.dps[n.Name] = dp
		t.Cleanup(func() { _ = dp.Remove(context.Background()) })
	}
	groups := c.groups([]string{"gw1"}, []string{"gw1", "gw2"})
	for _, n := range topo.Nodes {
		c.states[n.Name] = c.state(n, groups)
	}
	c.applyAll()
	return c
}

func (c *cluster) newDataplane(node string) *Dataplane {
	n := c.topo.Node(node)
	cfg := Config{NetNS: n.Path(), PinRoot: filepath.Join(c.bpffs, node)}
	if c.cfg != nil {
		c.cfg(&cfg)
	}
	return New(cfg)
}

func (c *cluster) gateway(name string, healthy bool) GatewayNode {
	n := c.topo.Node(name)
	return GatewayNode{ID: c.gwIDs[name], NodeIP: n.IP, EgressIPv4: c.eg[name][0], EgressIPv6: c.eg[name][1], Healthy: healthy}
}

func (c *cluster) groups(g1, g2 []string) []Group {
	var out []Group
	for i, names := range [][]string{g1, g2} {
		g := Group{ID: uint32(i + 1)}
		for _, n := range names {
			g.Gateways = append(g.Gateways, c.gateway(n, true))
		}
		out = append(out, g)
	}
	return out
}

func (c *cluster) state(n *netns.Node, groups []Group) State {
	s := State{
		NodeIP: n.IP,
		PolicySets: []PolicySet{{
			ID: 1,
			Destinations: []Destination{
				{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Group: 1},
				{Prefix: netip.MustParsePrefix("2001:db8:113::/64"), Group: 1},
				{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Group: 2},
				{Prefix: netip.MustParsePrefix("2001:db8:100::/64"), Group: 2},
			},
			Excluded: []netip.Prefix{netip.PrefixFrom(dstExcl, 32), netip.PrefixFrom(dstEx6, 128)},
		}},
		Groups:    groups,
		ProbePort: 8743,
	}
	for _, p := range n.Pods {
		set := uint32(1)
		if p.Name == "b" {
			set = 0
		}
		s.Pods = append(s.Pods, Pod{Name: p.Name, IPs: []netip.Addr{p.IP, p.IP6}, Interface: p.HostIface, PolicySet: set})
	}
	if eg, ok := c.eg[n.Name]; ok {
		role := &GatewayRole{Addresses: []EgressAddress{
			{IP: eg[0], Interface: n.Link}, {IP: eg[1], Interface: n.Link},
		}}
		for _, g := range []uint32{1, 2} {
			role.Groups = append(role.Groups, ServedGroup{Group: g, EgressIPv4s: []netip.Addr{eg[0]}, EgressIPv6s: []netip.Addr{eg[1]}})
		}
		role.Sources, role.Nodes = c.sources()
		s.Gateway = role
	}
	return s
}

// sources are what a gateway admits in the bed: every selected pod (all but b) of every node,
// in both groups, and every node.
func (c *cluster) sources() ([]Source, []netip.Addr) {
	var srcs []Source
	var nodes []netip.Addr
	for _, n := range c.topo.Nodes {
		nodes = append(nodes, n.IP)
		for _, p := range n.Pods {
			if p.Name == "b" {
				continue
			}
			for _, g := range []uint32{1, 2} {
				srcs = append(srcs, Source{Node: n.IP, Group: g, Pod: p.IP}, Source{Node: n.IP, Group: g, Pod: p.IP6})
			}
		}
	}
	return srcs, nodes
}

func (c *cluster) applyAll() {
	c.t.Helper()
	for _, n := range c.topo.Nodes {
		if err := c.dps[n.Name].Apply(ctxT(c.t), c.states[n.Name]); err != nil {
			c.t.Fatalf("applying state on %s: %v", n.Name, err)
		}
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type probe struct {
	name string
	do   func(from *netns.Namespace, ctx context.Context, dst netip.Addr) (netip.Addr, error)
}

var probes = []probe{
	{"http", (*netns.Namespace).HTTPGet},
	{"udp", (*netns.Namespace).UDPEcho},
	{"icmp", (*netns.Namespace).Ping},
}

func expectSeen(t *testing.T, from *netns.Pod, dst netip.Addr, want ...netip.Addr) {
	t.Helper()
	for _, p := range probes {
		got, err := p.do(from.Namespace, ctxT(t), dst)
		if err != nil {
			t.Errorf("%s %s → %s: %v", p.name, from.Name, dst, err)
			continue
		}
		if !slices.Contains(want, got) {
			t.Errorf("%s %s → %s: server saw %s, want one of %v", p.name, from.Name, dst, got, want)
		}
	}
}

func skipUnlessRoot(t *testing.T) {
	t.Helper()
	privileged.Require(t, "network namespaces, eBPF and nftables")
}

func TestEgress(t *testing.T) {
	skipUnlessRoot(t)
	c := newCluster(t)
	a, b, pc, g := c.topo.Pod("a"), c.topo.Pod("b"), c.topo.Pod("c"), c.topo.Pod("g")
	w1 := c.topo.Node("worker1")
	eg1, eg2 := c.eg["gw1"], c.eg["gw2"]

	t.Run("selected pod is seen with the egress IP", func(t *testing.T) {
		expectSeen(t, a, dstG1, eg1[0])
		expectSeen(t, pc, dstG1, eg1[0])
		expectSeen(t, a, dstG2, eg1[0], eg2[0])
	})
	t.Run("excluded CIDR and unselected pod are seen with the node IP", func(t *testing.T) {
		expectSeen(t, a, dstExcl, w1.IP)
		expectSeen(t, b, dstG1, w1.IP)
	})
	t.Run("pod on the gateway node is seen with the egress IP", func(t *testing.T) {
		expectSeen(t, g, dstG1, eg1[0])
	})
	t.Run("ipv6", func(t *testing.T) {
		expectSeen(t, a, dstG1v6, eg1[1])
		expectSeen(t, pc, dstG2v6, eg1[1], eg2[1])
		expectSeen(t, g, dstG1v6, eg1[1])
		expectSeen(t, a, dstEx6, w1.IP6)
		expectSeen(t, b, dstG1v6, w1.IP6)
	})
	t.Run("100 MB through the tunnel", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for _, dir := range []netns.Direction{netns.Upload, netns.Download} {
			res, err := a.Transfer(ctx, dstG1, 100<<20, dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("v4 direction %d: %v", dir, res)
		}
		res, err := a.Transfer(ctx, dstG1v6, 100<<20, netns.Upload)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("v6 upload: %v", res)
	})
	t.Run("counters", func(t *testing.T) {
		st, err := c.dps["worker1"].Stats()
		if err != nil {
			t.Fatal(err)
		}
		if s := st[bpf.StatsKey{Group: 1, Gateway: 1}]; s.Packets == 0 || s.Bytes == 0 {
			t.Errorf("worker1 group 1 gateway 1 counters: %+v", s)
		}
		st, err = c.dps["gw1"].Stats()
		if err != nil {
			t.Fatal(err)
		}
		if s := st[bpf.StatsKey{Group: 1, Gateway: bpf.GatewaySelf}]; s.Packets == 0 {
			t.Errorf("gw1 forwarded-traffic counters: %+v", s)
		}
	})
}

// TestGatewayRemoved shows that new flows move to the surviving gateway at
// once while established flows on the survivor carry on undisturbed.
func TestGatewayRemoved(t *testing.T) {
	skipUnlessRoot(t)
	c := newCluster(t)
	a, pc := c.topo.Pod("a"), c.topo.Pod("c")
	eg1, eg2 := c.eg["gw1"][0], c.eg["gw2"][0]

	// Open long-running flows until some use each gateway.
	var onGW2 []*netns.Flow
	seen := map[netip.Addr]int{}
	for i := 0; i < 24 && (seen[eg1] == 0 || len(onGW2) < 2); i++ {
		pod := a
		if i%2 == 1 {
			pod = pc
		}
		f, err := pod.StartFlow(ctxT(t), dstG2, netns.FlowOptions{Interval: 10 * time.Millisecond, Stall: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Second)
		for len(f.Stats().Sources) == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		src := f.Stats().Sources
		if len(src) != 1 {
			t.Fatalf("flow %d: sources %v", i, src)
		}
		seen[src[0]]++
		if src[0] == eg2 {
			onGW2 = append(onGW2, f)
		} else {
			defer f.Stop()
		}
	}
	if seen[eg1] == 0 || len(onGW2) == 0 {
		t.Fatalf("flows did not spread over both gateways: %v", seen)
	}

	// Remove gw1 from group 2 everywhere.
	groups := c.groups([]string{"gw1"}, []string{"gw2"})
	for _, n := range c.topo.Nodes {
		s := c.states[n.Name]
		s.Groups = groups
		c.states[n.Name] = s
	}
	c.applyAll()
	for i := 0; i < 10; i++ {
		expectSeen(t, a, dstG2, eg2)
	}
	time.Sleep(500 * time.Millisecond)
	for i, f := range onGW2 {
		st := f.Stop()
		if len(st.Errors) != 0 || len(st.Sources) != 1 || st.Sources[0] != eg2 {
			t.Errorf("flow %d on the surviving gateway was disturbed: %+v", i, st)
		}
		if st.MaxGap > 400*time.Millisecond {
			t.Errorf("flow %d on the surviving gateway stalled for %v", i, st.MaxGap)
		}
	}
}

// TestAgentRestart closes every Dataplane and applies again from new ones,
// as a restarted agent would, several times during a transfer.
func TestAgentRestart(t *testing.T) {
	skipUnlessRoot(t)
	c := newCluster(t)
	a := c.topo.Pod("a")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type result struct {
		res netns.TransferResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := a.Transfer(ctx, dstG1, 400<<20, netns.Upload)
		done <- result{res, err}
	}()
	restarts := 0
	for restarts < 20 {
		select {
		case r := <-done:
			if r.err != nil {
				t.Fatalf("transfer across %d agent restarts: %v", restarts, r.err)
			}
			t.Logf("transfer across %d agent restarts: %v", restarts, r.res)
			if restarts == 0 {
				t.Fatal("transfer finished before any restart")
			}
			return
		case <-time.After(50 * time.Millisecond):
		}
		for _, name := range []string{"worker1", "gw1"} {
			if err := c.dps[name].Close(); err != nil {
				t.Fatal(err)
			}
			dp := c.newDataplane(name)
			if err := dp.Apply(ctx, c.states[name]); err != nil {
				t.Fatalf("re-applying on %s: %v", name, err)
			}
			c.dps[name] = dp
		}
		restarts++
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("transfer across %d agent restarts: %v", restarts, r.err)
	}
	t.Logf("transfer across %d agent restarts: %v", restarts, r.res)
}

// TestKeepSources: a restarted agent's first states come before it has read the cluster, so
// they list no sources. With KeepSources (what such a state carries) a new Dataplane on the
// pinned maps keeps what the previous one admitted, and pod a's traffic goes on through gw1;
// a state that really admits nobody still removes them all, and gw1 then drops pod a's frames
// as foreign_node.
func TestKeepSources(t *testing.T) {
	skipUnlessRoot(t)
	c := newCluster(t)
	a := c.topo.Pod("a")
	eg1 := c.eg["gw1"]
	expectSeen(t, a, dstG1, eg1[0])
	foreign := func() uint64 {
		t.Helper()
		st, err := c.dps["gw1"].Stats()
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, s := range st {
			n += s.Drops[bpf.DropForeignNode] + s.Drops[bpf.DropForeignSource]
		}
		return n
	}
	unread := func(keep bool) State {
		s := c.states["gw1"]
		role := *s.Gateway
		role.Sources, role.Nodes, role.KeepSources = nil, nil, keep
		s.Gateway = &role
		return s
	}

	// The agent restarts: a new Dataplane, the same pins (the counters are pinned too).
	f0 := foreign()
	if err := c.dps["gw1"].Close(); err != nil {
		t.Fatal(err)
	}
	c.dps["gw1"] = c.newDataplane("gw1")
	if err := c.dps["gw1"].Apply(ctxT(t), unread(true)); err != nil {
		t.Fatal(err)
	}
	expectSeen(t, a, dstG1, eg1[0])
	if n := foreign() - f0; n != 0 {
		t.Errorf("gw1 dropped %d frames as foreign with the sources kept", n)
	}

	// The same state without KeepSources admits nobody.
	if err := c.dps["gw1"].Apply(ctxT(t), unread(false)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if got, err := a.UDPEcho(ctx, dstG1); err == nil {
		t.Errorf("with no sources admitted pod a still reached %s (seen as %s)", dstG1, got)
	}
	if foreign() == f0 {
		t.Error("gw1 counted no foreign drop for pod a's frames with no sources admitted")
	}

	// The agent has read the cluster: the whole state again.
	if err := c.dps["gw1"].Apply(ctxT(t), c.states["gw1"]); err != nil {
		t.Fatal(err)
	}
	expectSeen(t, a, dstG1, eg1[0])
}

// TestRemoveLeavesNothing tears down every node and checks for leftovers.
func TestRemoveLeavesNothing(t *testing.T) {
	skipUnlessRoot(t)
	c := newCluster(t)
	if _, err := c.topo.Pod("a").HTTPGet(ctxT(t), dstG1); err != nil {
		t.Fatal(err)
	}
	// Program ids attached before teardown must not exist afterwards.
	var progIDs []ebpf.ProgramID
	for _, n := range c.topo.Nodes {
		_ = n.Do(func() error {
			links, _ := netlink.LinkList()
			for _, l := range links {
				for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
					res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: at})
					if err != nil {
						continue
					}
					for _, p := range res.Programs {
						progIDs = append(progIDs, p.ID)
					}
				}
			}
			return nil
		})
	}
	if len(progIDs) == 0 {
		t.Fatal("no programs attached before teardown")
	}
	for _, n := range c.topo.Nodes {
		if err := c.dps[n.Name].Remove(ctxT(t)); err != nil {
			t.Fatalf("removing on %s: %v", n.Name, err)
		}
	}
	for _, id := range progIDs {
		if p, err := ebpf.NewProgramFromID(id); err == nil {
			p.Close()
			t.Errorf("program %d still loaded", id)
		}
	}
	for _, n := range c.topo.Nodes {
		if _, err := os.Stat(filepath.Join(c.bpffs, n.Name, bpf.Version)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: pin directory left: %v", n.Name, err)
		}
		err := n.Do(func() error {
			links, err := netlink.LinkList()
			if err != nil {
				return err
			}
			for _, l := range links {
				if l.Attrs().Name == DefaultTunnelDevice {
					t.Errorf("%s: tunnel device left", n.Name)
				}
				for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
					res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: at})
					if err == nil && len(res.Programs) > 0 {
						t.Errorf("%s: %d programs still attached to %s", n.Name, len(res.Programs), l.Attrs().Name)
					}
				}
			}
			for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
				rules, err := netlink.RuleList(fam)
				if err != nil {
					return err
				}
				for _, r := range rules {
					if r.Table >= DefaultTableBase && r.Table < DefaultTableBase+1<<20 || r.Priority == DefaultRulePriority || r.Priority == DefaultRulePriority+1 {
						t.Errorf("%s: rule left: %v", n.Name, r)
					}
				}
				routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
				if err != nil {
					return err
				}
				for _, r := range routes {
					if r.Table >= DefaultTableBase && r.Table < DefaultTableBase+1<<20 {
						t.Errorf("%s: route left: %v", n.Name, r)
					}
				}
				addrs, err := netlink.AddrList(nil, fam)
				if err != nil {
					return err
				}
				for _, ad := range addrs {
					ip, _ := netip.AddrFromSlice(ad.IP)
					for _, eg := range c.eg {
						if ip.Unmap() == eg[0] || ip == eg[1] {
							t.Errorf("%s: egress address %s left", n.Name, ip)
						}
					}
				}
			}
			conn, err := nftables.New()
			if err != nil {
				return err
			}
			tables, err := conn.ListTables()
			if err != nil {
				return err
			}
			for _, tb := range tables {
				if tb.Name == DefaultNFTTable {
					t.Errorf("%s: nftables table left", n.Name)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// And the node falls back to its normal path.
	if got, err := c.topo.Pod("a").HTTPGet(ctxT(t), dstG1); err != nil || got != c.topo.Node("worker1").IP {
		t.Errorf("after teardown pod a is seen as %s (%v), want the node IP", got, err)
	}
}

// TestClsactFallback runs the basic paths with tc clsact filters instead of
// tcx links, as on kernels before 6.6, and checks their removal.
func TestClsactFallback(t *testing.T) {
	skipUnlessRoot(t)
	c := newClusterWith(t, func(cfg *Config) { cfg.Clsact = true })
	a, b, g := c.topo.Pod("a"), c.topo.Pod("b"), c.topo.Pod("g")
	expectSeen(t, a, dstG1, c.eg["gw1"][0])
	expectSeen(t, a, dstG1v6, c.eg["gw1"][1])
	expectSeen(t, g, dstG1, c.eg["gw1"][0])
	expectSeen(t, b, dstG1, c.topo.Node("worker1").IP)
	w1 := c.topo.Node("worker1")
	if err := c.dps["worker1"].Remove(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	err := w1.Do(func() error {
		l, err := netlink.LinkByName(a.HostIface)
		if err != nil {
			return err
		}
		if found, err := bpf.DetachClsact(l.Attrs().Index); err != nil || found {
			t.Errorf("clsact filters left on %s after Remove (found=%v, err=%v)", a.HostIface, found, err)
		}
		// The probe reflector's filter on the underlay interface too.
		if l, err = netlink.LinkByName(w1.Link); err != nil {
			return err
		}
		if found, err := bpf.DetachClsact(l.Attrs().Index); err != nil || found {
			t.Errorf("clsact filters left on %s after Remove (found=%v, err=%v)", w1.Link, found, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPodDiscovery shows Run attaching the classifier to a new pod
// interface from netlink events, and dropping its link when it goes.
func TestPodDiscovery(t *testing.T) {
	skipUnlessRoot(t)
	c := newCluster(t)
	w1 := c.topo.Node("worker1")
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- c.dps["worker1"].Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	time.Sleep(100 * time.Millisecond) // let the subscription start
	const name = "lxcdisc0"
	start := time.Now()
	if err := w1.Netlink().LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "lxcdisc1"}); err != nil {
		t.Fatal(err)
	}
	attached := func(ifname string) bool {
		ok := false
		_ = w1.Do(func() error {
			l, err := netlink.LinkByName(ifname)
			if err != nil {
				return nil
			}
			res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: ebpf.AttachTCXIngress})
			ok = err == nil && len(res.Programs) > 0
			return nil
		})
		return ok
	}
	for !attached(name) {
		if time.Since(start) > 2*time.Second {
			t.Fatalf("classifier not attached to %s after 2 s", name)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("classifier attached to a new interface %v after it appeared", time.Since(start).Round(time.Millisecond))
	l, err := w1.Netlink().LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := w1.Netlink().LinkDel(l); err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join(c.bpffs, "worker1", bpf.Version, "links", string(bpf.HookPod)+"_"+name)
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(pin); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("link pin %s left after the interface was deleted", pin)
		}
	}
}

// TestAtomicUpdates renumbers pod a's policy set and rewrites rules and
// groups again and again while a long-running flow and new requests run:
// no packet may leave with the node IP and the flow must never stall.
func TestAtomicUpdates(t *testing.T) {
	skipUnlessRoot(t)
	c := newCluster(t)
	a := c.topo.Pod("a")
	eg1 := c.eg["gw1"][0]
	f, err := a.StartFlow(ctxT(t), dstG1, netns.FlowOptions{Interval: 2 * time.Millisecond, Stall: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	base := c.states["worker1"]
	for i := 0; i < 40; i++ {
		s := base
		s.Pods = slices.Clone(base.Pods)
		s.PolicySets = slices.Clone(base.PolicySets)
		if i%2 == 0 {
			// Same destinations under a new set id, plus a new rule.
			ps := s.PolicySets[0]
			ps.ID = 3
			ps.Destinations = append(slices.Clone(ps.Destinations), Destination{Prefix: netip.MustParsePrefix("192.0.2.128/25"), Group: 2})
			s.PolicySets = append(s.PolicySets, ps)
			for j := range s.Pods {
				if s.Pods[j].PolicySet == 1 {
					s.Pods[j].PolicySet = 3
				}
			}
		}
		if err := c.dps["worker1"].Apply(ctxT(t), s); err != nil {
			t.Fatal(err)
		}
		if got, err := a.UDPEcho(ctxT(t), dstG1); err != nil || got != eg1 {
			t.Fatalf("update %d: UDP seen as %s (%v), want %s", i, got, err, eg1)
		}
	}
	st := f.Stop()
	if len(st.Errors) != 0 || len(st.Sources) != 1 || st.Sources[0] != eg1 || st.Answered < 10 {
		t.Errorf("flow during updates: errors %v, sources %v, answered %d, max gap %v", st.Errors, st.Sources, st.Answered, st.MaxGap)
	}
	t.Logf("flow during 40 updates: %d answered, max gap %v", st.Answered, st.MaxGap)
}

// applyPairBed runs a Dataplane on each node of a bed of worker1 (pod a, steered to
// 203.0.113.0/24) and gw1 (serving group 1 with the zone's address 200, admitting pod a), and
// returns the egress IP.
func applyPairBed(t *testing.T, topo *netns.Topology) netip.Addr {
	t.Helper()
	egress, _ := applyPairBedDP(t, topo, Config{})
	return egress
}

// applyPairBedDP is applyPairBed with each node's Config based on cfg, returning the
// dataplanes by node name too.
func applyPairBedDP(t *testing.T, topo *netns.Topology, cfg Config) (netip.Addr, map[string]*Dataplane) {
	t.Helper()
	bpffs := mountBPFFS(t)
	w, gw, a := topo.Node("worker1"), topo.Node("gw1"), topo.Pod("a")
	egress := topo.Zones[0].Addr(200)
	group := []Group{{ID: 1, Gateways: []GatewayNode{{ID: 1, NodeIP: gw.IP, EgressIPv4: egress, Healthy: true}}}}
	sets := []PolicySet{{ID: 1, Destinations: []Destination{{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Group: 1}}}}
	states := map[*netns.Node]State{
		w: {NodeIP: w.IP, PolicySets: sets, Groups: group, Pods: []Pod{{Name: "a", IPs: []netip.Addr{a.IP}, Interface: a.HostIface, PolicySet: 1}}},
		gw: {NodeIP: gw.IP, Groups: group, Gateway: &GatewayRole{Addresses: []EgressAddress{{IP: egress, Interface: gw.Link}},
			Groups: []ServedGroup{{Group: 1, EgressIPv4s: []netip.Addr{egress}}}, Sources: []Source{{Node: w.IP, Group: 1, Pod: a.IP}}}},
	}
	dps := map[string]*Dataplane{}
	for n, s := range states {
		c := cfg
		c.NetNS, c.PinRoot = n.Path(), filepath.Join(bpffs, n.Name)
		dp := New(c)
		t.Cleanup(func() { _ = dp.Remove(context.Background()) })
		if err := dp.Apply(ctxT(t), s); err != nil {
			t.Fatalf("applying on %s: %v", n.Name, err)
		}
		dps[n.Name] = dp
	}
	return egress, dps
}

// TestIPv4OnlyNodes: on nodes with IPv6 disabled, a gateway serving only IPv4 egress IPs applies
// (no IPv6 rule or route is attempted) and the pod leaves with the egress IP.
func TestIPv4OnlyNodes(t *testing.T) {
	skipUnlessRoot(t)
	topo := netns.New(t, netns.Spec{NoIPv6: true, Nodes: []netns.NodeSpec{
		{Name: "worker1", Pods: []netns.PodSpec{{Name: "a"}}},
		{Name: "gw1"},
	}})
	egress := applyPairBed(t, topo)
	a := topo.Pod("a")
	expectSeen(t, a, dstG1, egress)
}
