package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/agent/dataplane"
	"github.com/egressd/egressd/test/netns"
)

// TestEvents plays every kind of event on one two-zone lab with two gateways per zone and
// checks after each that the gateway comes back whole (AllActive) and, where the event is
// about it, the invariant it must keep: a cold reboot really loses the node's state and
// boots it back, a partitioned node keeps its agent and goes NotReady, a drain past the
// grace moves the address, a controller killed in a move leaves the cloud and the ledger
// consistent, agents and controller reconnect to a restarted API server.
func TestEvents(t *testing.T) {
	skipUnlessRoot(t)
	skipUnlessBinaries(t)
	l := upLab(t, Config{Zones: 2, GatewaysPerZone: 2, BinDir: binDir(), NotReadyAfter: 2 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	if err := l.ApplyDemoPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	whole := func(t *testing.T, what string) GatewayView {
		t.Helper()
		v, err := l.WaitFor(ctx, 2*time.Minute, what, l.AllActive)
		if err != nil {
			t.Fatalf("%v\ncontroller log:\n%s", err, Tail(l.LogPath(""), 20))
		}
		if err := waitCloudConsistent(ctx, l, time.Minute); err != nil {
			t.Fatal(err)
		}
		return v
	}
	whole(t, "gateway ready")
	t.Logf("short down %s, long down %s", l.ShortDown(), l.LongDown())

	t.Run("cold-reboot", func(t *testing.T) {
		v := whole(t, "gateway whole before")
		name := holderIn(t, v, l, zoneName(0))
		n := l.Node(name)
		held := v.HeldBy(name)
		// The state a cold reboot must lose is there to lose.
		if pins := pinsOf(t, l, name); len(pins) == 0 {
			t.Fatalf("%s has no pins before the crash", name)
		}
		if !slices.Contains(nftTables(t, n), "inet "+dataplane.DefaultNFTTable) {
			t.Fatalf("%s has no %s table before the crash: %v", name, dataplane.DefaultNFTTable, nftTables(t, n))
		}
		inc, err := l.ColdCrash(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if inc.Kind != KindColdReboot || !slices.Equal(inc.Nodes, []string{name}) || !slices.Equal(inc.Zones, []string{zoneName(0)}) || inc.At.IsZero() {
			t.Errorf("incident %+v", inc)
		}
		checkWiped(t, l, n, held)
		// The long variant: down until the coordinator took the node out.
		if _, err := l.WaitFor(ctx, time.Minute, name+" out of service", func(v GatewayView) bool {
			s := v.States[name]
			return s != string(egressv1.GatewayActive) && s != string(egressv1.GatewayStandby)
		}); err != nil {
			t.Fatal(err)
		}
		_ = sleep(ctx, l.LongDown()-time.Since(inc.At))
		if err := l.Restore(ctx, name); err != nil {
			t.Fatal(err)
		}
		checkBooted(t, l, n)
		if _, err := l.WaitFor(ctx, 2*time.Minute, name+" back in service", func(v GatewayView) bool {
			s := v.States[name]
			return l.AllActive(v) && (s == string(egressv1.GatewayActive) || s == string(egressv1.GatewayStandby))
		}); err != nil {
			t.Fatal(err)
		}
		whole(t, "gateway whole after a cold reboot")
		// The agent started fresh: new pins and a new table.
		deadline := time.Now().Add(time.Minute)
		for len(pinsOf(t, l, name)) == 0 || !slices.Contains(nftTables(t, n), "inet "+dataplane.DefaultNFTTable) {
			if time.Now().After(deadline) {
				t.Fatalf("%s's agent did not rebuild its datapath: pins %v, tables %v", name, pinsOf(t, l, name), nftTables(t, n))
			}
			_ = sleep(ctx, 200*time.Millisecond)
		}
	})

	t.Run("agent-crash", func(t *testing.T) {
		v := whole(t, "gateway whole before")
		name := holderIn(t, v, l, zoneName(1))
		pinsBefore := pinsOf(t, l, name)
		inc, err := l.CrashAgent(ctx, l.LongDown(), name)
		if err != nil {
			t.Fatal(err)
		}
		if inc.RestoredAt.Sub(inc.At) < l.LongDown() {
			t.Errorf("agent restarted after %s, want at least %s", inc.RestoredAt.Sub(inc.At), l.LongDown())
		}
		whole(t, "gateway whole after an agent crash")
		// The node stayed up: its pinned state is the one it had.
		if got := pinsOf(t, l, name); !subset(pinsBefore, got) {
			t.Errorf("pins of %s changed across an agent crash: %v → %v", name, pinsBefore, got)
		}
	})

	t.Run("partition", func(t *testing.T) {
		v := whole(t, "gateway whole before")
		name := holderIn(t, v, l, zoneName(0))
		if _, err := l.Partition(ctx, name); err != nil {
			t.Fatal(err)
		}
		if err := waitNodeReady(ctx, l, name, false, time.Minute); err != nil {
			t.Fatal(err)
		}
		// Past the agent Lease, with the agent alive behind the partition.
		time.Sleep(l.LongDown())
		if !l.AgentRunning(name) {
			t.Errorf("%s's agent died in the partition; last lines of its log:\n%s", name, Tail(l.LogPath(name), 15))
		}
		if err := l.Heal(ctx, name); err != nil {
			t.Fatal(err)
		}
		whole(t, "gateway whole after a partition")
	})

	t.Run("zone-loss", func(t *testing.T) {
		whole(t, "gateway whole before")
		// Zone b: the monitor's zone (a) stays up.
		inc, err := l.LoseZones(ctx, l.LongDown(), zoneName(1))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := l.ZoneNodes(zoneName(1))
		if !slices.Equal(inc.Nodes, want) || !slices.Equal(inc.Zones, []string{zoneName(1)}) || inc.RestoredAt.IsZero() {
			t.Errorf("incident %+v, want nodes %v", inc, want)
		}
		whole(t, "gateway whole after a zone loss")
	})

	t.Run("long-drain", func(t *testing.T) {
		v := whole(t, "gateway whole before")
		name := holderIn(t, v, l, zoneName(1))
		ip := v.HeldBy(name)[0]
		d, err := l.LongDrain(ctx)
		if err != nil {
			t.Fatal(err)
		}
		grace, _ := l.DrainGrace(ctx)
		if d <= grace {
			t.Fatalf("LongDrain %s does not outlast the grace %s", d, grace)
		}
		done := make(chan error, 1)
		go func() { _, err := l.DrainFor(ctx, d, name); done <- err }()
		moved, err := l.WaitFor(ctx, d+time.Minute, ip+" moved off the drained "+name, func(v GatewayView) bool {
			return v.Holders[ip] != "" && v.Holders[ip] != name
		})
		if err != nil {
			t.Error(err)
		} else {
			t.Logf("%s moved from %s to %s", ip, name, moved.Holders[ip])
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		whole(t, "gateway whole after a long drain")
	})

	t.Run("controller-crash-in-move", func(t *testing.T) {
		v := whole(t, "gateway whole before")
		name := holderIn(t, v, l, zoneName(0))
		ip := v.HeldBy(name)[0]
		// The kill lands inside the move's call.
		l.Sim.SetLatency("AssignPrivateIpAddresses", 2*time.Second)
		defer l.Sim.SetLatency("AssignPrivateIpAddresses", 0)
		var crash Incident
		inc, err := l.CrashControllerInMove(ctx, time.Minute, l.ShortDown(), func() error {
			var err error
			crash, err = l.ColdCrash(ctx, name)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("controller killed %s after the cold crash of %s; calls %v", inc.At.Sub(crash.At).Round(time.Millisecond), name, l.Sim.Calls())
		moved, err := l.WaitFor(ctx, 2*time.Minute, ip+" moved off "+name, func(v GatewayView) bool {
			return v.Holders[ip] != "" && v.Holders[ip] != name
		})
		if err != nil {
			t.Fatalf("%v\ncontroller log:\n%s", err, Tail(l.LogPath(""), 20))
		}
		if err := waitCloudConsistent(ctx, l, time.Minute); err != nil {
			t.Fatal(err)
		}
		h, ok := l.Sim.Holder(l.VPC, netip.MustParseAddr(ip))
		if n := l.Node(moved.Holders[ip]); !ok || n == nil || h.Instance != n.Instance.ID {
			t.Errorf("the cloud has %s on %+v, the status on %s", ip, h, moved.Holders[ip])
		}
		if err := l.Restore(ctx, name); err != nil {
			t.Fatal(err)
		}
		whole(t, "gateway whole after the controller crash")
	})

	t.Run("apiserver-restart", func(t *testing.T) {
		for _, down := range []time.Duration{l.ShortDown(), l.LongDown()} {
			whole(t, "gateway whole before")
			inc, err := l.RestartAPIServer(ctx, down)
			if err != nil {
				t.Fatal(err)
			}
			// Every agent and the controller renew their Leases through the new server.
			if err := waitLeasesRenewed(ctx, l, inc.RestoredAt, 2*time.Minute); err != nil {
				t.Fatal(err)
			}
			whole(t, fmt.Sprintf("gateway whole after the API server was down %s", down))
		}
	})
}

// holderIn returns a gateway of zone holding an egress IP.
func holderIn(t *testing.T, v GatewayView, l *Lab, zone string) string {
	t.Helper()
	for _, node := range slices.Sorted(func(yield func(string) bool) {
		for _, n := range v.Holders {
			if !yield(n) {
				return
			}
		}
	}) {
		if n := l.Node(node); n != nil && n.Zone.Name == zone {
			return node
		}
	}
	t.Fatalf("no gateway of %s holds an egress IP: %s", zone, v)
	return ""
}

func subset(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// pinsOf lists the files pinned under a node's bpffs directory.
func pinsOf(t *testing.T, l *Lab, node string) []string {
	t.Helper()
	var out []string
	root := filepath.Join(l.bpffs, node)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			out = append(out, strings.TrimPrefix(p, root+"/"))
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}

// nftTables lists "family name" of every nftables table in the node's namespace.
func nftTables(t *testing.T, n *Node) []string {
	t.Helper()
	out, err := n.Run("nft", "list", "tables")
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "table" {
			tables = append(tables, f[1]+" "+f[2])
		}
	}
	return tables
}

// checkWiped checks a cold-crashed node lost its state: no pins, no nftables table, no
// conntrack entry, no BPF program on its links, no address, route, rule or link its boot
// state does not hold, none of the egress IPs it held.
func checkWiped(t *testing.T, l *Lab, n *Node, held []string) {
	t.Helper()
	if pins := pinsOf(t, l, n.Name); len(pins) > 0 {
		t.Errorf("%s still has pins after a cold crash: %v", n.Name, pins)
	}
	if tables := nftTables(t, n); len(tables) > 0 {
		t.Errorf("%s still has nftables tables after a cold crash: %v", n.Name, tables)
	}
	h, err := nodeHandle(n)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if flows, err := h.ConntrackTableList(netlink.ConntrackTable, netlink.FAMILY_V4); err != nil || len(flows) > 0 {
		t.Errorf("%s's conntrack after a cold crash: %d flows, %v", n.Name, len(flows), err)
	}
	if _, err := h.LinkByName(dataplane.DefaultTunnelDevice); err == nil {
		t.Errorf("%s still has %s after a cold crash", n.Name, dataplane.DefaultTunnelDevice)
	}
	boot := n.down.boot
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, lk := range links {
		name := lk.Attrs().Name
		if !slices.Contains(boot.links, name) && !slices.Contains(fallbackDevices, name) {
			t.Errorf("%s still has link %s after a cold crash", n.Name, name)
		}
		as, err := h.AddrList(lk, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			ip, _ := netip.AddrFromSlice(a.IP)
			if slices.Contains(held, ip.Unmap().String()) {
				t.Errorf("%s still has egress IP %s on %s after a cold crash", n.Name, a.IPNet, name)
			} else if !slices.Contains(boot.addrs[name], a.IPNet.String()) && !ip.IsLinkLocalUnicast() {
				t.Errorf("%s still has %s on %s after a cold crash", n.Name, a.IPNet, name)
			}
		}
		err = n.Do(func() error {
			for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
				res, err := link.QueryPrograms(link.QueryOptions{Target: lk.Attrs().Index, Attach: at})
				if err != nil {
					return err
				}
				if len(res.Programs) > 0 {
					return fmt.Errorf("%d %s programs still on %s", len(res.Programs), at, name)
				}
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s after a cold crash: %v", n.Name, err)
		}
	}
	routes, err := allRoutes(h)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if _, ok := boot.routes[routeKey(r)]; !ok {
			t.Errorf("%s still has route %s after a cold crash", n.Name, r)
		}
	}
	rules, err := h.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if !boot.rules[ruleKey(r)] {
			t.Errorf("%s still has %s after a cold crash", n.Name, r)
		}
	}
}

// checkBooted checks a restored node has its boot configuration: the underlay address, the
// default route, the CNI's table.
func checkBooted(t *testing.T, l *Lab, n *Node) {
	t.Helper()
	h, err := nodeHandle(n)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lk, err := h.LinkByName(n.Link)
	if err != nil {
		t.Fatal(err)
	}
	as, err := h.AddrList(lk, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(as, func(a netlink.Addr) bool { return a.IP.Equal(n.IP.AsSlice()) }) {
		t.Errorf("%s booted without its address %s: %v", n.Name, n.IP, as)
	}
	rs, err := h.RouteList(lk, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(rs, func(r netlink.Route) bool { return r.Dst == nil || r.Dst.String() == "0.0.0.0/0" }) {
		t.Errorf("%s booted without its default route: %v", n.Name, rs)
	}
	if !slices.Contains(nftTables(t, n), "inet "+netns.HostileTable) {
		t.Errorf("%s booted without the CNI's %s table: %v", n.Name, netns.HostileTable, nftTables(t, n))
	}
}

// cloudConsistent checks the simulator against the EgressIP ledger: no address held twice, no
// secondary address that no EgressIP claims (a leak), no interface detached (a leaked ENI),
// every placed EgressIP held by its node's instance.
func cloudConsistent(ctx context.Context, l *Lab) error {
	ips, err := l.EgressIPs(ctx)
	if err != nil {
		return err
	}
	ledger := map[string]string{}
	for _, e := range ips {
		ledger[e.Spec.IP] = e.Status.Node
	}
	var errs []error
	count := map[netip.Addr]int{}
	for _, h := range l.Sim.Holdings() {
		count[h.PrivateIP]++
		if h.Primary {
			continue
		}
		node, ok := ledger[h.PrivateIP.String()]
		if !ok {
			errs = append(errs, fmt.Errorf("secondary %s on %s is no EgressIP's (leaked)", h.PrivateIP, h.ENI))
			continue
		}
		if n := l.Node(node); n == nil || n.Instance.ID != h.Instance {
			errs = append(errs, fmt.Errorf("%s is on instance %s in the cloud, on node %q in its EgressIP", h.PrivateIP, h.Instance, node))
		}
	}
	for a, c := range count {
		if c > 1 {
			errs = append(errs, fmt.Errorf("%s held %d times", a, c))
		}
	}
	for ip, node := range ledger {
		if node == "" {
			continue
		}
		if _, ok := l.Sim.Holder(l.VPC, netip.MustParseAddr(ip)); !ok {
			errs = append(errs, fmt.Errorf("EgressIP %s on %s is held by nobody in the cloud", ip, node))
		}
	}
	for _, e := range l.Sim.Snapshot().ENIs {
		if e.Instance == "" {
			errs = append(errs, fmt.Errorf("ENI %s is attached to no instance (leaked)", e.ID))
		}
	}
	return errors.Join(errs...)
}

// waitCloudConsistent waits until cloudConsistent holds (a move may be in flight).
func waitCloudConsistent(ctx context.Context, l *Lab, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cloudConsistent(ctx, l)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cloud and ledger still inconsistent after %s: %w", timeout, err)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

func waitNodeReady(ctx context.Context, l *Lab, name string, ready bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var node corev1.Node
		if err := l.API.Client.Get(ctx, client.ObjectKey{Name: name}, &node); err == nil {
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady && (c.Status == corev1.ConditionTrue) == ready {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s not Ready=%v after %s", name, ready, timeout)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// waitLeasesRenewed waits until every Lease in the egressd namespace (the agents' and the
// controller's leader Lease) was renewed after t.
func waitLeasesRenewed(ctx context.Context, l *Lab, t time.Time, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var list coordinationv1.LeaseList
		var stale []string
		err := l.API.Client.List(ctx, &list, client.InNamespace(SystemNS))
		if err == nil {
			for _, ls := range list.Items {
				if r := ls.Spec.RenewTime; r == nil || r.Time.Before(t) {
					stale = append(stale, ls.Name)
				}
			}
			if len(list.Items) > len(l.Nodes) && len(stale) == 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("leases not renewed %s after the API server came back: stale %v (of %d), %w", timeout, stale, len(list.Items), err)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}
