package agent_test

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/agent/dataplane"
	"github.com/egressd/egressd/test/netns"
)

// TestAgentNetnsAddressModes runs the agents of worker1 (pod a), gw1 and gw2 against a real API
// server and the real datapath, with the two address sources that involve no cloud:
//
//   - "ni" (nodeInterface eth0, gateway gw1, no EgressIP at all): pod a leaves with gw1's own
//     first address of eth0, its node IP;
//   - "st" (static 10.0.0.200): the holder mounts it and announces it, so the router's
//     neighbour entry follows the address to gw2 and then, when the ledger moves it, to gw1.
func TestAgentNetnsAddressModes(t *testing.T) {
	topo, s, bpffs := newAgentBed(t)
	c := s.Client
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	z := topo.Zones[0]
	static := z.Addr(200)
	pa := topo.Pod("a")
	gw1, gw2 := topo.Node("gw1"), topo.Node("gw2")

	// The router last saw the static address at some other MAC (a previous holder).
	routerSees := routerNeighbour(t, topo, z, static, net.HardwareAddr{0x02, 0xee, 0, 0, 0, 1})
	macOf := func(n *netns.Node) string { return linkMAC(t, n) }

	// Objects, as the coordinator writes them for these modes.
	must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "egressd-system"}}))
	for _, n := range topo.Nodes {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{corev1.LabelTopologyZone: z.Name}}}
		must(t, c.Create(ctx, node))
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.IP.String()}}
		must(t, c.Status().Update(ctx, node))
	}
	gwStatus := func(n *netns.Node, state egressv1.GatewayState) egressv1.GatewayNodeStatus {
		return egressv1.GatewayNodeStatus{Node: n.Name, State: state, UnderlayIP: n.IP.String()}
	}
	ni := &egressv1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: "ni"}, Spec: egressv1.EgressGatewaySpec{
		Addresses: egressv1.EgressAddresses{NodeInterface: &egressv1.NodeInterfaceAddresses{Interface: gw1.Link}}}}
	must(t, c.Create(ctx, ni))
	ni.Status = egressv1.EgressGatewayStatus{GroupID: 7, Zones: []egressv1.ZoneStatus{{Name: z.Name,
		Gateways: []egressv1.GatewayNodeStatus{gwStatus(gw1, egressv1.GatewayActive)}}}}
	must(t, c.Status().Update(ctx, ni))
	st := &egressv1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: "st"}, Spec: egressv1.EgressGatewaySpec{
		Addresses: egressv1.EgressAddresses{Static: &egressv1.StaticAddresses{Pools: []egressv1.StaticPool{
			{Zone: z.Name, Subnet: z.Subnet.String(), IPs: []string{static.String()}}}}}}}
	must(t, c.Create(ctx, st))
	setHolder := func(holder, spare *netns.Node) {
		t.Helper()
		must(t, c.Get(ctx, ctrlKey("st"), st))
		st.Status = egressv1.EgressGatewayStatus{GroupID: 8, Zones: []egressv1.ZoneStatus{{Name: z.Name,
			Gateways: []egressv1.GatewayNodeStatus{gwStatus(holder, egressv1.GatewayActive), gwStatus(spare, egressv1.GatewayStandby)}}}}
		must(t, c.Status().Update(ctx, st))
	}
	setHolder(gw2, gw1)
	e := &egressv1.EgressIP{ObjectMeta: metav1.ObjectMeta{Name: static.String()},
		Spec: egressv1.EgressIPSpec{IP: static.String(), Gateway: "st", Zone: z.Name, Provider: "static", Node: gw2.Name}}
	must(t, c.Create(ctx, e))
	e.Status.Node = gw2.Name
	must(t, c.Status().Update(ctx, e))
	for name, dsts := range map[string][]string{"ni": {"203.0.113.0/24"}, "st": {"198.51.100.0/24"}} {
		must(t, c.Create(ctx, &egressv1.EgressPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: egressv1.EgressPolicyRule{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				DestinationCIDRs: dsts, Gateway: name}}))
	}

	// Agents, each in its node's namespace for the datapath, probes, interfaces and announcements.
	dps := map[string]*timedDataplane{}
	for _, n := range topo.Nodes {
		dps[n.Name], _ = startNetnsAgent(ctx, t, s.Config, n, bpffs)
	}

	w := dps["worker1"]
	w.waitFor(t, 30*time.Second, "the worker's first state", func(s dataplane.State) bool { return s.NodeIP == topo.Node("worker1").IP })
	createRunningPod(ctx, t, c, "a", "worker1", pa.IP)
	w.waitFor(t, 30*time.Second, "pod a steered to both groups", func(s dataplane.State) bool { return podSet(s, pa.IP) != 0 && len(s.Groups) == 2 })
	dps["gw1"].waitFor(t, 30*time.Second, "gw1 serving ni with its node IP", func(s dataplane.State) bool {
		return s.Gateway != nil && len(s.Gateway.Groups) == 1 && s.Gateway.Groups[0].Group == 7 && slices.Equal(s.Gateway.Groups[0].EgressIPv4s, []netip.Addr{gw1.IP}) && s.Gateway.Groups[0].EgressIPv6s == nil
	})
	dps["gw2"].waitFor(t, 30*time.Second, "gw2 serving st", func(s dataplane.State) bool {
		return s.Gateway != nil && len(s.Gateway.Groups) == 1 && s.Gateway.Groups[0].EgressIPv4() == static
	})

	from := func(t *testing.T, dst string) netip.Addr {
		t.Helper()
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		src, err := pa.HTTPGet(rctx, netip.MustParseAddr(dst))
		if err != nil {
			t.Fatalf("pod a → %s: %v", dst, err)
		}
		return src
	}
	waitRouter := func(t *testing.T, want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for routerSees() != want {
			if time.Now().After(deadline) {
				t.Fatalf("router's neighbour entry for %s is %q, want %q", static, routerSees(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	t.Run("nodeInterface: the pod leaves with the gateway's own interface address", func(t *testing.T) {
		for range 5 {
			if src := from(t, "203.0.113.10"); src != gw1.IP {
				t.Fatalf("server saw %s, want gw1's eth0 address %s", src, gw1.IP)
			}
		}
		if !holds(t, gw1, gw1.IP) {
			t.Fatalf("gw1's node IP vanished from %s", gw1.Link)
		}
	})

	t.Run("static: the holder announces the address, the router follows it", func(t *testing.T) {
		waitRouter(t, macOf(gw2))
		if src := from(t, "198.51.100.10"); src != static {
			t.Fatalf("server saw %s, want %s", src, static)
		}

		// The coordinator moves the address to gw1 (ledger only, no cloud call).
		must(t, c.Get(ctx, ctrlKey(static.String()), e))
		e.Spec.Node = gw1.Name
		must(t, c.Update(ctx, e))
		e.Status.Node = gw1.Name
		must(t, c.Status().Update(ctx, e))
		setHolder(gw1, gw2)
		waitRouter(t, macOf(gw1))
		// gw2 lets go on its own watch event, which may come after gw1 announced: the two
		// agents act independently. It must let go, stop announcing what it no longer holds (its
		// own series began just before the move), and the router must end up on gw1 and stay.
		deadline := time.Now().Add(5 * time.Second)
		for holds(t, gw2, static) {
			if time.Now().After(deadline) {
				t.Fatalf("gw2 still holds %s 5s after the move", static)
			}
			time.Sleep(10 * time.Millisecond)
		}
		waitRouter(t, macOf(gw1))
		for end := time.Now().Add(3 * announceSeries); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if got := routerSees(); got != macOf(gw1) {
				t.Fatalf("after gw2 let go the router went back to %s for %s, want gw1's %s", got, static, macOf(gw1))
			}
		}
		if src := from(t, "198.51.100.10"); src != static {
			t.Fatalf("after the move the server saw %s, want %s", src, static)
		}
	})
}

// announceSeries is how long an agent's series of announcements of one address lasts (three,
// 100ms apart).
const announceSeries = 300 * time.Millisecond

// holds reports whether the node's underlay link holds ip.
func holds(t *testing.T, n *netns.Node, ip netip.Addr) bool {
	t.Helper()
	l, err := n.Netlink().LinkByName(n.Link)
	must(t, err)
	addrs, err := n.Netlink().AddrList(l, netlink.FAMILY_ALL)
	must(t, err)
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			return true
		}
	}
	return false
}

// routerNeighbour seeds the router's neighbour entry for ip on zone z's segment at a previous
// holder's MAC (Linux updates an existing entry on a gratuitous ARP but creates none, with
// arp_accept=0) and returns a reader of the MAC the router has for ip ("" when none usable).
func routerNeighbour(t *testing.T, topo *netns.Topology, z *netns.Zone, ip netip.Addr, previous net.HardwareAddr) func() string {
	t.Helper()
	rlink, err := topo.Router.Netlink().LinkByName(z.RouterLink)
	must(t, err)
	must(t, topo.Router.Netlink().NeighSet(&netlink.Neigh{LinkIndex: rlink.Attrs().Index, Family: netlink.FAMILY_V4,
		State: netlink.NUD_STALE, IP: ip.AsSlice(), HardwareAddr: previous}))
	return func() string {
		neighs, err := topo.Router.Netlink().NeighList(rlink.Attrs().Index, netlink.FAMILY_V4)
		must(t, err)
		for _, n := range neighs {
			if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip && n.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE) == 0 {
				return n.HardwareAddr.String()
			}
		}
		return ""
	}
}

// linkMAC is the MAC address of a node's underlay link.
func linkMAC(t *testing.T, n *netns.Node) string {
	t.Helper()
	l, err := n.Netlink().LinkByName(n.Link)
	must(t, err)
	return l.Attrs().HardwareAddr.String()
}

// createRunningPod creates a pod on node and gives it ip, as the kubelet would report it.
func createRunningPod(ctx context.Context, t *testing.T, c client.Client, name, node string, ip netip.Addr) {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
	must(t, c.Create(ctx, p))
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIP = ip.String()
	p.Status.PodIPs = []corev1.PodIP{{IP: ip.String()}}
	must(t, c.Status().Update(ctx, p))
}

func ctrlKey(name string) types.NamespacedName { return types.NamespacedName{Name: name} }
