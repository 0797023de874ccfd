package netns

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/test/privileged"
)

// Topology is a built test bed. All fields are read-only after Build.
type Topology struct {
	// ID starts the name of every namespace of this topology (<prefix><random>-<pid>).
	ID   string
	Spec Spec // with defaults filled in

	// Fabric holds the underlay bridges (br0, or br<i> per zone when Spec.Routed).
	Fabric *Namespace
	// Router joins the zones and is the only way to the external host (a VPC router).
	Router   *Namespace
	External *External
	Zones    []*Zone
	Nodes    []*Node
	Pods     []*Pod

	track     *tracker
	all       []*Namespace
	closeOnce sync.Once
	closeErr  error
}

// Zone is one underlay subnet.
type Zone struct {
	Name            string
	Subnet, Subnet6 netip.Prefix
	// Gateway and Gateway6 are the router's addresses in the zone (.1 and ::1).
	Gateway, Gateway6 netip.Addr
	// Bridge is the name of the zone's bridge in the fabric namespace.
	Bridge string
	// RouterLink is the router's interface on the zone's segment.
	RouterLink string
}

// Addr is the n-th address of the zone's subnet, e.g. Addr(200) for an egress IP nobody
// else uses (the bed hands out .1 to the router and .10 upwards to nodes).
func (z *Zone) Addr(n int) netip.Addr { return nth(z.Subnet, n) }

// Addr6 is the n-th address of the zone's IPv6 subnet.
func (z *Zone) Addr6(n int) netip.Addr { return nth(z.Subnet6, n) }

// Node is a cluster node: a namespace attached to the underlay by its Link.
type Node struct {
	*Namespace
	Name string
	Zone *Zone
	// Link is the node's underlay interface ("eth0"), holding IP/24 and IP6/64.
	Link    string
	IP, IP6 netip.Addr
	// FabricPort is the peer of Link in the fabric namespace (unplug it to cut the node off).
	FabricPort        string
	PodCIDR, PodCIDR6 netip.Prefix
	Pods              []*Pod
}

// Pod is a pod: a namespace whose eth0 is a veth to its node, named HostIface on the node.
type Pod struct {
	*Namespace
	Name      string
	Node      *Node
	Iface     string // "eth0"
	HostIface string // the node side, e.g. lxc1a2b3c4d5e6
	IP, IP6   netip.Addr
}

// External is the host outside the cluster, reachable only through the router, running the
// echo servers (HTTPPort, UDPPort, BulkPort, FlowPort, ConnPort and ICMP observation).
type External struct {
	*Namespace
	// Addrs are the addresses of Spec.External (v4 first in spec order).
	Addrs []netip.Addr
	// IP and IP6 are the transit addresses facing the router.
	IP, IP6 netip.Addr
}

// Addr4 returns the external IPv4 addresses; Addr6 the IPv6 ones.
func (e *External) Addr4() []netip.Addr { return e.family(true) }

// Addr6 returns the external IPv6 addresses.
func (e *External) Addr6() []netip.Addr { return e.family(false) }

func (e *External) family(v4 bool) []netip.Addr {
	var out []netip.Addr
	for _, a := range e.Addrs {
		if a.Is4() == v4 {
			out = append(out, a)
		}
	}
	return out
}

// Node returns the node with the given name, or nil.
func (t *Topology) Node(name string) *Node {
	for _, n := range t.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Pod returns the pod with the given name, or nil.
func (t *Topology) Pod(name string) *Pod {
	for _, p := range t.Pods {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// New builds a topology for a test and closes it in t.Cleanup. It skips the test when not
// running as root.
func New(t testing.TB, spec Spec) *Topology {
	t.Helper()
	privileged.Require(t, "network namespaces, veths and nftables")
	topo, err := Build(context.Background(), spec)
	if err != nil {
		t.Fatalf("building test bed: %v", err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Errorf("closing test bed: %v", err)
		}
	})
	return topo
}

// Build creates the topology. On error everything created so far is removed.
func Build(ctx context.Context, spec Spec) (_ *Topology, err error) {
	spec, err = spec.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("test bed spec: %w", err)
	}
	var rnd [3]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	t := &Topology{
		ID:    fmt.Sprintf("%s%s-%d", spec.Prefix, hex.EncodeToString(rnd[:]), os.Getpid()),
		Spec:  spec,
		track: &tracker{},
	}
	defer func() {
		if r := recover(); r != nil {
			_ = t.Close()
			panic(r)
		}
		if err != nil {
			err = errors.Join(fmt.Errorf("building test bed %s: %w", t.ID, err), t.Close())
		}
	}()
	if err := t.build(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *Topology) newNamespace(role string) (*Namespace, error) {
	name := t.ID + "-" + role
	h, err := createNamespace(name)
	if err != nil {
		return nil, err
	}
	n := &Namespace{Name: name, handle: h, owner: t.track}
	t.all = append(t.all, n)
	if n.nl, err = netlink.NewHandleAt(h); err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", name, err)
	}
	sysctls := [][2]string{
		{"net.ipv6.conf.all.accept_dad", "0"},
		{"net.ipv6.conf.default.accept_dad", "0"},
		{"net.ipv4.conf.all.rp_filter", "0"},
		{"net.ipv4.conf.default.rp_filter", "0"},
	}
	if t.Spec.NoIPv6 {
		sysctls = append(sysctls, [2]string{"net.ipv6.conf.all.disable_ipv6", "1"}, [2]string{"net.ipv6.conf.default.disable_ipv6", "1"})
	}
	err = n.Do(func() error {
		for _, s := range sysctls {
			if err := writeSysctlHere(s[0], s[1]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	lo, err := n.nl.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("finding lo in %s: %w", name, err)
	}
	if err := n.nl.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("setting lo up in %s: %w", name, err)
	}
	return n, nil
}

func (n *Namespace) enableForwarding(v6 bool) error {
	return n.Do(func() error {
		if err := writeSysctlHere("net.ipv4.ip_forward", "1"); err != nil {
			return err
		}
		if v6 {
			return writeSysctlHere("net.ipv6.conf.all.forwarding", "1")
		}
		return nil
	})
}

func (t *Topology) v6() bool { return !t.Spec.NoIPv6 }

func (t *Topology) build(ctx context.Context) error {
	s := t.Spec
	var err error
	if t.Fabric, err = t.newNamespace("fabric"); err != nil {
		return err
	}
	if t.Router, err = t.newNamespace("router"); err != nil {
		return err
	}
	if err := t.Router.enableForwarding(t.v6()); err != nil {
		return err
	}
	extNS, err := t.newNamespace("ext")
	if err != nil {
		return err
	}
	t.External = &External{Namespace: extNS, IP: nth(transit4, 2), IP6: nth(transit6, 2)}

	// Underlay: one bridge (flat) or one per zone (routed), and the router's legs.
	for i, zs := range s.Zones {
		z := &Zone{Name: zs.Name, Subnet: zs.Subnet, Subnet6: zs.Subnet6,
			Gateway: nth(zs.Subnet, 1), Gateway6: nth(zs.Subnet6, 1)}
		if s.Routed || i == 0 {
			z.Bridge = fmt.Sprintf("br%d", i)
			z.RouterLink = fmt.Sprintf("eth%d", i)
			if err := t.addBridge(z.Bridge); err != nil {
				return err
			}
			if err := t.plug(t.Router, z.RouterLink, z.Bridge, fmt.Sprintf("r%d", i)); err != nil {
				return err
			}
		} else {
			z.Bridge, z.RouterLink = t.Zones[0].Bridge, t.Zones[0].RouterLink
		}
		if s.IsolatedNodes && (s.Routed || i == 0) {
			if err := t.proxyZone(z.RouterLink); err != nil {
				return err
			}
		}
		if err := t.Router.addAddr(z.RouterLink, netip.PrefixFrom(z.Gateway, z.Subnet.Bits())); err != nil {
			return err
		}
		if t.v6() {
			if err := t.Router.addAddr(z.RouterLink, netip.PrefixFrom(z.Gateway6, z.Subnet6.Bits())); err != nil {
				return err
			}
		}
		t.Zones = append(t.Zones, z)
	}

	// Router <-> external host.
	if err := t.veth(t.Router, "ext0", extNS, "eth0"); err != nil {
		return err
	}
	if err := t.Router.addAddr("ext0", netip.PrefixFrom(nth(transit4, 1), transit4.Bits())); err != nil {
		return err
	}
	if err := extNS.addAddr("eth0", netip.PrefixFrom(t.External.IP, transit4.Bits())); err != nil {
		return err
	}
	if err := extNS.addRoute(netip.MustParsePrefix("0.0.0.0/0"), nth(transit4, 1), "eth0"); err != nil {
		return err
	}
	if t.v6() {
		if err := t.Router.addAddr("ext0", netip.PrefixFrom(nth(transit6, 1), transit6.Bits())); err != nil {
			return err
		}
		if err := extNS.addAddr("eth0", netip.PrefixFrom(t.External.IP6, transit6.Bits())); err != nil {
			return err
		}
		if err := extNS.addRoute(netip.MustParsePrefix("::/0"), nth(transit6, 1), "eth0"); err != nil {
			return err
		}
	}
	// The external addresses live on a stub link (a veth whose peer stays in the same
	// namespace: kernels without the dummy module have veth): on lo a /24 would make the whole
	// range local, and "excluded destination" tests need addresses nobody answers for.
	if err := t.veth(extNS, "dst0", extNS, "dst0-peer"); err != nil {
		return err
	}
	routed := map[netip.Prefix]bool{}
	for _, p := range s.External {
		if p.Addr().Is6() && !t.v6() {
			continue
		}
		if err := extNS.addAddr("dst0", p); err != nil {
			return err
		}
		t.External.Addrs = append(t.External.Addrs, p.Addr())
		if m := p.Masked(); !routed[m] {
			routed[m] = true
			via := t.External.IP
			if p.Addr().Is6() {
				via = t.External.IP6
			}
			if err := t.Router.addRoute(m, via, "ext0"); err != nil {
				return err
			}
		}
	}

	// Nodes.
	perZone := map[string]int{}
	for i, ns := range s.Nodes {
		if err := ctx.Err(); err != nil {
			return err
		}
		var z *Zone
		for _, zz := range t.Zones {
			if zz.Name == ns.Zone {
				z = zz
			}
		}
		k := perZone[z.Name]
		perZone[z.Name]++
		nns, err := t.newNamespace("n-" + ns.Name)
		if err != nil {
			return err
		}
		n := &Node{Namespace: nns, Name: ns.Name, Zone: z, Link: "eth0",
			IP: z.Addr(10 + k), IP6: z.Addr6(10 + k), FabricPort: fmt.Sprintf("n%d", i),
			PodCIDR: ns.PodCIDR, PodCIDR6: ns.PodCIDR6}
		t.Nodes = append(t.Nodes, n)
		if err := nns.enableForwarding(t.v6()); err != nil {
			return err
		}
		if err := t.plug(nns, n.Link, z.Bridge, n.FabricPort); err != nil {
			return err
		}
		if s.IsolatedNodes {
			if err := t.isolate(n); err != nil {
				return err
			}
		}
		if err := nns.addAddr(n.Link, netip.PrefixFrom(n.IP, z.Subnet.Bits())); err != nil {
			return err
		}
		if err := nns.addRoute(netip.MustParsePrefix("0.0.0.0/0"), z.Gateway, n.Link); err != nil {
			return err
		}
		if t.v6() {
			if err := nns.addAddr(n.Link, netip.PrefixFrom(n.IP6, z.Subnet6.Bits())); err != nil {
				return err
			}
			if err := nns.addRoute(netip.MustParsePrefix("::/0"), z.Gateway6, n.Link); err != nil {
				return err
			}
		}
		for j, ps := range ns.Pods {
			if err := t.addPod(n, ps, j); err != nil {
				return err
			}
		}
	}

	// Pod CIDR routes: direct to nodes of the same subnet, through the router otherwise (the
	// router knows every pod CIDR, as a VPC route table or native routing would).
	for _, a := range t.Nodes {
		for _, b := range t.Nodes {
			if a == b || a.Zone.Subnet != b.Zone.Subnet {
				continue
			}
			if err := a.addRoute(b.PodCIDR, b.IP, a.Link); err != nil {
				return err
			}
			if t.v6() {
				if err := a.addRoute(b.PodCIDR6, b.IP6, a.Link); err != nil {
					return err
				}
			}
		}
		if err := t.Router.addRoute(a.PodCIDR, a.IP, a.Zone.RouterLink); err != nil {
			return err
		}
		if t.v6() {
			if err := t.Router.addRoute(a.PodCIDR6, a.IP6, a.Zone.RouterLink); err != nil {
				return err
			}
		}
	}

	if !s.NoHostileRules {
		for _, n := range t.Nodes {
			if err := t.addHostileRules(n); err != nil {
				return err
			}
		}
	}
	return t.External.StartServers()
}

// proxyZone makes the router answer ARP and NDP for every address of the zone's segment and
// forward the traffic back out of the same leg, without ICMP redirects (which would tell
// nodes to go direct, which port isolation forbids).
func (t *Topology) proxyZone(leg string) error {
	return t.Router.Do(func() error {
		sysctls := [][2]string{
			{"net.ipv4.conf.all.send_redirects", "0"},
			{"net.ipv4.conf." + leg + ".send_redirects", "0"},
			{"net.ipv4.conf." + leg + ".proxy_arp", "1"},
			{"net.ipv4.conf." + leg + ".proxy_arp_pvlan", "1"},
			{"net.ipv4.neigh." + leg + ".proxy_delay", "0"},
		}
		if t.v6() {
			sysctls = append(sysctls,
				[2]string{"net.ipv6.conf." + leg + ".proxy_ndp", "1"},
				[2]string{"net.ipv6.neigh." + leg + ".proxy_delay", "0"})
		}
		for _, kv := range sysctls {
			if err := writeSysctlHere(kv[0], kv[1]); err != nil {
				return err
			}
		}
		return nil
	})
}

// isolate isolates the node's fabric port and lets the router answer NDP for the node's
// IPv6 address (IPv4 proxy ARP needs no per-address entry).
func (t *Topology) isolate(n *Node) error {
	port, err := t.Fabric.nl.LinkByName(n.FabricPort)
	if err != nil {
		return fmt.Errorf("finding fabric port %s: %w", n.FabricPort, err)
	}
	if err := t.Fabric.nl.LinkSetIsolated(port, true); err != nil {
		return fmt.Errorf("isolating fabric port %s: %w", n.FabricPort, err)
	}
	if t.v6() {
		return t.proxyNDP(n.IP6, n.Zone.RouterLink)
	}
	return nil
}

func (t *Topology) proxyNDP(a netip.Addr, leg string) error {
	l, err := t.Router.nl.LinkByName(leg)
	if err != nil {
		return fmt.Errorf("finding %s in %s: %w", leg, t.Router.Name, err)
	}
	err = t.Router.nl.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V6,
		Flags: netlink.NTF_PROXY, IP: a.AsSlice()})
	if err != nil {
		return fmt.Errorf("adding NDP proxy entry for %s on %s: %w", a, leg, err)
	}
	return nil
}

// RouteToNode makes the router deliver p (typically an egress IP /32 or /128) to node n, as a
// cloud does once it assigned the address to the node's interface: with IsolatedNodes this is
// the only way traffic for the address reaches any node. It replaces an earlier route for p.
// The node must hold the address itself (Namespace.AddAddr on n.Link).
func (t *Topology) RouteToNode(p netip.Prefix, n *Node) error {
	via := n.IP
	if p.Addr().Is6() {
		via = n.IP6
		if t.Spec.IsolatedNodes && p.Bits() == 128 {
			if err := t.proxyNDP(p.Addr(), n.Zone.RouterLink); err != nil {
				return err
			}
		}
	}
	return t.Router.addRoute(p.Masked(), via, n.Zone.RouterLink)
}

// Unroute makes the router drop traffic for p (a blackhole route), as a cloud drops traffic to
// an address it assigned to no interface. It replaces an earlier route for p.
func (t *Topology) Unroute(p netip.Prefix) error {
	r := &netlink.Route{Dst: ipNet(p.Masked()), Type: unix.RTN_BLACKHOLE}
	if err := t.Router.nl.RouteReplace(r); err != nil {
		return fmt.Errorf("blackholing %s in %s: %w", p, t.Router.Name, err)
	}
	return nil
}

func (t *Topology) addPod(n *Node, ps PodSpec, j int) error {
	pns, err := t.newNamespace("p-" + ps.Name)
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(t.ID + "/" + ps.Name))
	host := t.Spec.HostIfacePrefix + hex.EncodeToString(sum[:])[:15-len(t.Spec.HostIfacePrefix)]
	p := &Pod{Namespace: pns, Name: ps.Name, Node: n, Iface: "eth0", HostIface: host,
		IP: nth(n.PodCIDR, 10+j), IP6: nth(n.PodCIDR6, 10+j)}
	n.Pods = append(n.Pods, p)
	t.Pods = append(t.Pods, p)
	if err := t.veth(n.Namespace, host, pns, p.Iface); err != nil {
		return err
	}
	// Calico-style gateway: the pod routes everything via 169.254.1.1 / fe80::1, which the
	// node side answers for by proxy ARP (without the default 0.8 s proxy delay) and by
	// holding fe80::1 on every pod veth.
	err = n.Do(func() error {
		if err := writeSysctlHere("net.ipv4.conf."+host+".proxy_arp", "1"); err != nil {
			return err
		}
		return writeSysctlHere("net.ipv4.neigh."+host+".proxy_delay", "0")
	})
	if err != nil {
		return err
	}
	if err := n.addRoute(netip.PrefixFrom(p.IP, 32), netip.Addr{}, host); err != nil {
		return err
	}
	if err := pns.addAddr(p.Iface, netip.PrefixFrom(p.IP, 32)); err != nil {
		return err
	}
	if err := pns.addRoute(netip.PrefixFrom(podGateway4, 32), netip.Addr{}, p.Iface); err != nil {
		return err
	}
	if err := pns.addRoute(netip.MustParsePrefix("0.0.0.0/0"), podGateway4, p.Iface); err != nil {
		return err
	}
	if t.v6() {
		if err := n.addAddr(host, netip.PrefixFrom(podGateway6, 64)); err != nil {
			return err
		}
		if err := n.addRoute(netip.PrefixFrom(p.IP6, 128), netip.Addr{}, host); err != nil {
			return err
		}
		if err := pns.addAddr(p.Iface, netip.PrefixFrom(p.IP6, 128)); err != nil {
			return err
		}
		if err := pns.addRoute(netip.MustParsePrefix("::/0"), podGateway6, p.Iface); err != nil {
			return err
		}
	}
	return nil
}

func (t *Topology) addBridge(name string) error {
	f := false
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: t.Spec.MTU},
		MulticastSnooping: &f} // snooping without a querier can starve IPv6 neighbour discovery
	if err := t.Fabric.nl.LinkAdd(br); err != nil {
		return fmt.Errorf("adding bridge %s: %w", name, err)
	}
	return t.Fabric.setUp(name)
}

// plug connects iface in ns to the fabric bridge through a veth whose fabric side is port.
func (t *Topology) plug(ns *Namespace, iface, bridge, port string) error {
	if err := t.veth(ns, iface, t.Fabric, port); err != nil {
		return err
	}
	br, err := t.Fabric.nl.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("finding bridge %s: %w", bridge, err)
	}
	l, err := t.Fabric.nl.LinkByName(port)
	if err != nil {
		return fmt.Errorf("finding fabric port %s: %w", port, err)
	}
	if err := t.Fabric.nl.LinkSetMaster(l, br); err != nil {
		return fmt.Errorf("attaching %s to %s: %w", port, bridge, err)
	}
	return nil
}

// veth creates a veth pair directly across two namespaces (never in the root namespace) and
// sets both ends up.
func (t *Topology) veth(a *Namespace, aName string, b *Namespace, bName string) error {
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: aName, MTU: t.Spec.MTU},
		PeerName: bName, PeerNamespace: netlink.NsFd(int(b.handle))}
	if err := a.nl.LinkAdd(v); err != nil {
		return fmt.Errorf("adding veth %s/%s - %s/%s: %w", a.Name, aName, b.Name, bName, err)
	}
	pl, err := b.nl.LinkByName(bName)
	if err != nil {
		return fmt.Errorf("finding %s in %s: %w", bName, b.Name, err)
	}
	if pl.Attrs().MTU != t.Spec.MTU {
		if err := b.nl.LinkSetMTU(pl, t.Spec.MTU); err != nil {
			return fmt.Errorf("setting MTU of %s in %s: %w", bName, b.Name, err)
		}
	}
	if err := a.setUp(aName); err != nil {
		return err
	}
	return b.setUp(bName)
}

func (n *Namespace) setUp(name string) error {
	l, err := n.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("finding %s in %s: %w", name, n.Name, err)
	}
	if err := n.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("setting %s up in %s: %w", name, n.Name, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// AddAddr adds an address (with its prefix length) to a link of the namespace, without IPv6
// duplicate address detection so it is usable at once.
func (n *Namespace) AddAddr(link string, p netip.Prefix) error { return n.addAddr(link, p) }

// DelAddr removes an address from a link of the namespace.
func (n *Namespace) DelAddr(link string, p netip.Prefix) error {
	l, err := n.nl.LinkByName(link)
	if err != nil {
		return fmt.Errorf("finding %s in %s: %w", link, n.Name, err)
	}
	if err := n.nl.AddrDel(l, &netlink.Addr{IPNet: ipNet(p)}); err != nil {
		return fmt.Errorf("removing %s from %s in %s: %w", p, link, n.Name, err)
	}
	return nil
}

func (n *Namespace) addAddr(link string, p netip.Prefix) error {
	l, err := n.nl.LinkByName(link)
	if err != nil {
		return fmt.Errorf("finding %s in %s: %w", link, n.Name, err)
	}
	a := &netlink.Addr{IPNet: ipNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := n.nl.AddrAdd(l, a); err != nil {
		return fmt.Errorf("adding %s to %s in %s: %w", p, link, n.Name, err)
	}
	return nil
}

// AddRoute adds (or replaces) a route to dst through link, via gw when gw is valid.
func (n *Namespace) AddRoute(dst netip.Prefix, gw netip.Addr, link string) error {
	return n.addRoute(dst, gw, link)
}

// DelRoute removes the route to dst from the main table.
func (n *Namespace) DelRoute(dst netip.Prefix) error {
	if err := n.nl.RouteDel(&netlink.Route{Dst: ipNet(dst)}); err != nil {
		return fmt.Errorf("removing route %s in %s: %w", dst, n.Name, err)
	}
	return nil
}

func (n *Namespace) addRoute(dst netip.Prefix, gw netip.Addr, link string) error {
	l, err := n.nl.LinkByName(link)
	if err != nil {
		return fmt.Errorf("finding %s in %s: %w", link, n.Name, err)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(dst)}
	if gw.IsValid() {
		r.Gw = gw.AsSlice()
		if gw.Is6() && gw.IsLinkLocalUnicast() {
			r.Flags = int(netlink.FLAG_ONLINK)
		}
	} else {
		r.Scope = netlink.SCOPE_LINK
	}
	if err := n.nl.RouteReplace(r); err != nil {
		return fmt.Errorf("adding route %s via %v dev %s in %s: %w", dst, gw, link, n.Name, err)
	}
	return nil
}

// Close removes everything the topology created: servers, flows, processes, then every
// namespace (which takes their links, routes and nftables tables with it). It is idempotent.
func (t *Topology) Close() error {
	t.closeOnce.Do(func() {
		var errs []error
		if err := t.track.close(); err != nil {
			errs = append(errs, err)
		}
		for i := len(t.all) - 1; i >= 0; i-- {
			n := t.all[i]
			if n.nl != nil {
				n.nl.Close()
			}
			if err := deleteNamespace(n.Name); err != nil {
				errs = append(errs, err)
			}
			n.handle.Close()
		}
		// Belt and braces: anything named after this topology that slipped through.
		if entries, err := os.ReadDir(runDir); err == nil {
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), t.ID+"-") {
					if err := deleteNamespace(e.Name()); err != nil {
						errs = append(errs, err)
					}
				}
			}
		}
		t.closeErr = errors.Join(errs...)
	})
	return t.closeErr
}
