package netns

import (
	"fmt"
	"net/netip"
)

// DefaultPrefix starts the name of every namespace the bed creates unless Spec.Prefix says
// otherwise; Sweep(DefaultPrefix) cleans up after crashed runs.
const DefaultPrefix = "edtb-"

// Ports of the servers started by StartServers (and on the external host by Build).
const (
	HTTPPort = 8080 // GET / answers the caller's IP as seen by the server, as text
	UDPPort  = 7007 // every datagram is answered with the caller's IP, as text
	BulkPort = 5001 // bounded bulk transfers, see Namespace.Transfer
	FlowPort = 5002 // line echo for long-running flows, see Namespace.StartFlow
	ConnPort = 5003 // line echo prefixed with the caller's address:port as the server saw it
)

// Spec describes a topology. The zero value of every field has a usable default; only Nodes is
// needed.
type Spec struct {
	// Prefix starts every namespace name (default DefaultPrefix). A random id and the pid of
	// the process follow it.
	Prefix string

	// Zones are the underlay subnets (default: one zone "a", 10.0.0.0/24 and fd00:a::/64).
	// Zone i defaults to 10.0.i.0/24 and fd00:a:0:i::/64. The router holds .1 / ::1 in each.
	Zones []ZoneSpec
	// Routed puts every zone on its own L2 bridge behind the router (a VPC with one subnet per
	// zone). Without it all zones share one bridge (flat L2) and only cross-subnet traffic goes
	// through the router.
	Routed bool

	// IsolatedNodes makes the underlay behave like a cloud VPC: node ports cannot reach each
	// other at L2 (bridge port isolation), and the router answers ARP and NDP for the whole
	// subnet and forwards every packet, so its routes alone decide which node an address
	// reaches (see Topology.RouteToNode). Without it the router only sees off-subnet traffic.
	IsolatedNodes bool

	// Nodes of the cluster; node i gets pod CIDRs ClusterCIDR[i] (/24) and ClusterCIDR6[i]
	// (/64) unless its NodeSpec says otherwise.
	Nodes []NodeSpec

	// ClusterCIDR and ClusterCIDR6 hold every pod CIDR (defaults 10.244.0.0/16, fd00:244::/48).
	ClusterCIDR, ClusterCIDR6 netip.Prefix

	// External are the addresses of the external host, each with the prefix the router routes
	// to it. Default: 198.51.100.10/24, 203.0.113.10/24, 203.0.113.200/24,
	// 2001:db8:100::10/64, 2001:db8:113::10/64, 2001:db8:113::200/64. The host is also
	// reachable on its transit addresses 192.0.2.2 and 2001:db8:ffff::2.
	External []netip.Prefix

	// NoIPv6 builds an IPv4-only topology (default: dual-stack underlay and pods).
	NoIPv6 bool

	// NoHostileRules leaves out the rules real clusters carry on every node: a CNI-style
	// masquerade of pod traffic leaving the cluster CIDRs, and `ct state invalid drop` in
	// forward.
	NoHostileRules bool
	// NonMasqueradeCIDRs are the destinations the CNI-style masquerade leaves alone (default:
	// ClusterCIDR and ClusterCIDR6).
	NonMasqueradeCIDRs []netip.Prefix

	// HostIfacePrefix names the node side of pod veths, followed by a hash of the pod (default
	// "lxc", like Cilium; "cali", "veth", "eni", "azv", "gke" mimic other CNIs).
	HostIfacePrefix string

	// MTU of underlay and pod links (default 1500).
	MTU int
}

// ZoneSpec is one underlay subnet (a cloud zone in the lab).
type ZoneSpec struct {
	Name            string
	Subnet, Subnet6 netip.Prefix
}

// NodeSpec is one node: a namespace on the underlay with pods.
type NodeSpec struct {
	// Name is unique in the topology (e.g. "worker1", "gw1").
	Name string
	// Zone names a ZoneSpec (default: the first zone).
	Zone string
	// Pods on this node; pod names are unique in the topology.
	Pods []PodSpec
	// PodCIDR and PodCIDR6 override the node's slice of the cluster CIDRs.
	PodCIDR, PodCIDR6 netip.Prefix
}

// PodSpec is one pod: a namespace with a veth to its node.
type PodSpec struct {
	Name string
}

// Addresses of the router/external transit link (documentation ranges, only in the bed).
var (
	transit4       = netip.MustParsePrefix("192.0.2.0/24")
	transit6       = netip.MustParsePrefix("2001:db8:ffff::/64")
	podGateway4    = netip.MustParseAddr("169.254.1.1")
	podGateway6    = netip.MustParseAddr("fe80::1")
	defaultExtAddr = []netip.Prefix{
		netip.MustParsePrefix("198.51.100.10/24"),
		netip.MustParsePrefix("203.0.113.10/24"),
		netip.MustParsePrefix("203.0.113.200/24"),
		netip.MustParsePrefix("2001:db8:100::10/64"),
		netip.MustParsePrefix("2001:db8:113::10/64"),
		netip.MustParsePrefix("2001:db8:113::200/64"),
	}
)

func (s Spec) withDefaults() (Spec, error) {
	if s.Prefix == "" {
		s.Prefix = DefaultPrefix
	}
	if len(s.Zones) == 0 {
		s.Zones = []ZoneSpec{{Name: "a"}}
	}
	s.Zones = append([]ZoneSpec(nil), s.Zones...)
	for i := range s.Zones {
		z := &s.Zones[i]
		if z.Name == "" {
			z.Name = fmt.Sprintf("z%d", i)
		}
		if !z.Subnet.IsValid() {
			z.Subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 0}), 24)
		}
		if !z.Subnet6.IsValid() {
			z.Subnet6 = netip.MustParsePrefix(fmt.Sprintf("fd00:a:0:%x::/64", i))
		}
		z.Subnet, z.Subnet6 = z.Subnet.Masked(), z.Subnet6.Masked()
	}
	if !s.ClusterCIDR.IsValid() {
		s.ClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
	}
	if !s.ClusterCIDR6.IsValid() {
		s.ClusterCIDR6 = netip.MustParsePrefix("fd00:244::/48")
	}
	if len(s.External) == 0 {
		s.External = defaultExtAddr
	}
	if len(s.NonMasqueradeCIDRs) == 0 {
		s.NonMasqueradeCIDRs = []netip.Prefix{s.ClusterCIDR, s.ClusterCIDR6}
	}
	if s.HostIfacePrefix == "" {
		s.HostIfacePrefix = "lxc"
	}
	if len(s.HostIfacePrefix) > 11 {
		return s, fmt.Errorf("host interface prefix %q longer than 11 characters", s.HostIfacePrefix)
	}
	if s.MTU == 0 {
		s.MTU = 1500
	}
	if len(s.Nodes) == 0 {
		return s, fmt.Errorf("spec has no nodes")
	}
	zones := map[string]bool{}
	for _, z := range s.Zones {
		if zones[z.Name] {
			return s, fmt.Errorf("zone %q defined twice", z.Name)
		}
		zones[z.Name] = true
	}
	names := map[string]bool{}
	s.Nodes = append([]NodeSpec(nil), s.Nodes...)
	for i := range s.Nodes {
		n := &s.Nodes[i]
		if n.Name == "" {
			n.Name = fmt.Sprintf("node%d", i)
		}
		if n.Zone == "" {
			n.Zone = s.Zones[0].Name
		}
		if !zones[n.Zone] {
			return s, fmt.Errorf("node %q: unknown zone %q", n.Name, n.Zone)
		}
		if !n.PodCIDR.IsValid() {
			b := s.ClusterCIDR.Addr().As4()
			b[2] += byte(i)
			n.PodCIDR = netip.PrefixFrom(netip.AddrFrom4(b), 24)
		}
		if !n.PodCIDR6.IsValid() {
			b := s.ClusterCIDR6.Addr().As16()
			b[6], b[7] = byte(i>>8), byte(i)
			n.PodCIDR6 = netip.PrefixFrom(netip.AddrFrom16(b), 64)
		}
		if names[n.Name] {
			return s, fmt.Errorf("name %q used twice", n.Name)
		}
		names[n.Name] = true
		n.Pods = append([]PodSpec(nil), n.Pods...)
		for j := range n.Pods {
			p := &n.Pods[j]
			if p.Name == "" {
				p.Name = fmt.Sprintf("%s-pod%d", n.Name, j)
			}
			if names[p.Name] {
				return s, fmt.Errorf("name %q used twice", p.Name)
			}
			names[p.Name] = true
		}
	}
	return s, nil
}

// nth returns the address n after the prefix's base address.
func nth(p netip.Prefix, n int) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	carry := n
	for i := len(b) - 1; i >= 0 && carry > 0; i-- {
		v := int(b[i]) + carry
		b[i] = byte(v)
		carry = v >> 8
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
