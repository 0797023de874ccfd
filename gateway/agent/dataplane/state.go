// Package dataplane drives egressd's node-local datapath: the eBPF maps and
// programs of package bpf, the egressd VXLAN tunnel device, pod interface
// discovery, and on gateway nodes the egress addresses, the nftables table
// (SNAT, MSS clamping, reply marking) and the policy routes. The agent's
// control plane computes a State and calls Apply; Remove tears everything
// down.
package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/bpf/marks"
)

// State is the desired node-local datapath state. It is complete: Apply
// makes the node match it and removes whatever an earlier State had that
// this one lacks.
type State struct {
	// NodeIP is this node's underlay IPv4 address: the tunnel source, and
	// how a group's gateway list recognises this node (no tunnel hop).
	NodeIP netip.Addr

	// Pods are the pods running on this node that have an IP.
	Pods []Pod

	// PolicySets are the distinct combinations of policies that select
	// local pods. Pods selected by the same policies share one set, so the
	// rule map grows with sets × CIDRs, not pods × CIDRs.
	PolicySets []PolicySet

	// Groups are the gateway groups the policy sets point at, each with
	// the gateways the control plane chose for this node.
	Groups []Group

	// Gateway is this node's gateway role; nil on non-gateway nodes.
	Gateway *GatewayRole

	// ProbePort is the UDP port of the probe protocol (gateway/probe).
	// Non-zero: the datapath answers probes to NodeIP itself, at tc
	// ingress of the interface holding NodeIP, so this node stays up for
	// its probers while its agent restarts. Zero: probes go to the stack
	// (a userspace responder, if any).
	ProbePort uint16
	// Draining sets the draining bit in the datapath's probe replies: this
	// node is cordoned, send it no new flows.
	Draining bool
}

// Pod is a local pod.
type Pod struct {
	// Name is namespace/name, for errors only.
	Name string
	// IPs are the pod's addresses (IPv4 and/or IPv6).
	IPs []netip.Addr
	// Interface is the host side of the pod's interface. Empty: found by
	// looking up the route to the pod's first IP.
	Interface string
	// PolicySet is the id of the pod's policy set; 0 when no policy
	// selects the pod (its traffic leaves the usual way).
	PolicySet uint32
	// Prober pods may send to ProbePort; every other pod's datagrams to it
	// are dropped (reserved_port). The controller's pods probe gateways.
	Prober bool
}

// PolicySet maps destination prefixes to gateway groups.
type PolicySet struct {
	// ID is non-zero and stable while the set's membership is unchanged.
	ID uint32
	// Destinations send matching traffic through a group. Where prefixes
	// overlap the longest one wins; the control plane has already resolved
	// equal prefixes by policy priority and name.
	Destinations []Destination
	// Excluded prefixes leave the usual way (with the node IP) even inside
	// a destination. An excluded prefix equal to a destination wins.
	Excluded []netip.Prefix
}

// Destination is one destination prefix of a policy set.
type Destination struct {
	Prefix netip.Prefix
	Group  uint32
}

// Group is a gateway group as this node uses it.
type Group struct {
	// ID is 1-65535; it travels in the VXLAN VNI and the packet mark.
	ID uint32
	// Gateways are at most 8 gateways, in the order the control plane
	// prefers (zone-local first). New flows hash over the healthy ones
	// that are not draining; established flows stay on their gateway while
	// it is listed and healthy, draining or not. When every healthy one
	// drains, new flows use those; with no healthy gateway they are
	// dropped, never sent with the node IP.
	Gateways []GatewayNode
}

// GatewayNode is one gateway of a group.
type GatewayNode struct {
	// ID identifies the gateway node; non-zero, unique in the cluster.
	ID uint32
	// NodeIP is the gateway's underlay IPv4 address (tunnel endpoint).
	NodeIP netip.Addr
	// EgressIPv4 and EgressIPv6 are the addresses the gateway SNATs this
	// group's traffic to (the gateway's own State carries them in
	// GatewayRole). A flow remembers its gateway's IPv4 one and follows it
	// to the gateway holding it next (Config.HoldEstablished).
	EgressIPv4, EgressIPv6 netip.Addr
	// Healthy is the agent's latest probe result.
	Healthy bool
	// Draining gateways get no new flows while a healthy gateway that does
	// not drain is listed; flows pinned to them stay while they are
	// healthy.
	Draining bool
}

// GatewayRole is what a gateway node does for the groups it serves.
type GatewayRole struct {
	// Groups are the groups this node forwards for.
	Groups []ServedGroup
	// Addresses are the egress IPs this node holds, with the interface
	// that holds each. Apply adds them (as /32 or /128) and removes the
	// ones it added earlier that are no longer listed; addresses it did
	// not add are never removed.
	Addresses []EgressAddress
	// Sources are the pods of other nodes that may send a served group's
	// traffic through this gateway. A tunnelled frame is forwarded only
	// when its outer source is the pod's node and its inner source the pod;
	// any other is dropped (foreign_source, or foreign_node when the outer
	// source is none of Nodes).
	Sources []Source
	// Nodes are the underlay IPv4 addresses of the cluster's nodes. They
	// admit nothing: they tell a foreign host from a node with a spoofed
	// inner source in the drop counters.
	Nodes []netip.Addr
	// KeepSources says that Sources and Nodes are not known yet (the agent
	// has not read the cluster's pods and nodes): Apply keeps the entries the
	// sources map holds and adds those listed. A restarted agent finds the
	// ones its predecessor admitted, so its gateway keeps admitting the
	// traffic it forwarded a moment ago; a node booted afresh has none.
	KeepSources bool
}

// Source is a pod that may use a served group through this gateway.
type Source struct {
	// Node is the underlay IPv4 address of the pod's node: the outer source
	// of the frames its node tunnels.
	Node  netip.Addr
	Group uint32
	// Pod is one address of the pod.
	Pod netip.Addr
}

// ServedGroup says which egress IPs a group's traffic leaves with. Each must
// be one of GatewayRole.Addresses. A family without an egress IP is dropped
// on this gateway, never sent with the node IP.
//
// New flows of a family are spread over its egress IPs on the interface of
// the lowest one (its policy route picks one interface per group): the SNAT
// address is chosen by a hash of the pod's source address and port, so a
// flow's choice depends on its tuple only, and each IP adds a port range
// toward every destination (docs/datapath.md#snat).
type ServedGroup struct {
	Group uint32
	// EgressIPv4s and EgressIPv6s are sorted, without duplicates.
	EgressIPv4s, EgressIPv6s []netip.Addr
	// PublicSource, when valid, is the IPv4 address the group's public-bound flows are SNATed
	// to instead of its egress IPs: an address of this node that the cloud's 1:1 NAT translates
	// to the egress IP's public IP where it does not translate the egress IP itself (GCP: the
	// primary address of the interface holding the alias). Flows to Private keep the egress
	// IPs. The policy route is the group's as ever (the interface of its lowest IPv4 egress IP).
	PublicSource netip.Addr
	// Private are the IPv4 destinations that keep the egress IPs when PublicSource is set.
	Private []netip.Prefix
}

// EgressIPv4 is the group's lowest IPv4 egress IP (invalid without one): the
// one whose interface the group's IPv4 traffic is routed through.
func (g *ServedGroup) EgressIPv4() netip.Addr { return lowest(g.EgressIPv4s) }

// EgressIPv6 is the group's lowest IPv6 egress IP (invalid without one).
func (g *ServedGroup) EgressIPv6() netip.Addr { return lowest(g.EgressIPv6s) }

func lowest(ips []netip.Addr) netip.Addr {
	if len(ips) == 0 {
		return netip.Addr{}
	}
	return slices.MinFunc(ips, netip.Addr.Compare)
}

// EgressAddress is an egress IP on an interface of this node.
type EgressAddress struct {
	IP        netip.Addr
	Interface string
	// NextHop is the router egress traffic from this IP goes to. Invalid
	// (zero): the interface's routes in the main table are copied instead.
	NextHop netip.Addr
}

func (s *State) validate(marks marks.Layout) error {
	var errs []error
	if !s.NodeIP.Is4() {
		errs = append(errs, fmt.Errorf("node IP %s is not IPv4", s.NodeIP))
	}
	sets := map[uint32]bool{}
	groups := map[uint32]bool{}
	for _, g := range s.Groups {
		if err := marks.CheckGroup(g.ID); err != nil {
			errs = append(errs, err)
		}
		if len(g.Gateways) > bpf.MaxGateways {
			errs = append(errs, fmt.Errorf("group %d has %d gateways, at most %d", g.ID, len(g.Gateways), bpf.MaxGateways))
		}
		for _, gw := range g.Gateways {
			if gw.ID == 0 || !gw.NodeIP.Is4() {
				errs = append(errs, fmt.Errorf("group %d: gateway %d needs a non-zero id and an IPv4 node IP (got %s)", g.ID, gw.ID, gw.NodeIP))
			}
		}
		groups[g.ID] = true
	}
	for _, ps := range s.PolicySets {
		if ps.ID == 0 {
			errs = append(errs, errors.New("policy set id 0 is reserved for unselected pods"))
		}
		sets[ps.ID] = true
		for _, d := range ps.Destinations {
			if !d.Prefix.IsValid() {
				errs = append(errs, fmt.Errorf("policy set %d: invalid destination prefix", ps.ID))
			}
			if !groups[d.Group] {
				errs = append(errs, fmt.Errorf("policy set %d: destination %s points at unknown group %d", ps.ID, d.Prefix, d.Group))
			}
		}
	}
	for _, p := range s.Pods {
		if p.PolicySet != 0 && !sets[p.PolicySet] {
			errs = append(errs, fmt.Errorf("pod %s: unknown policy set %d", p.Name, p.PolicySet))
		}
	}
	if r := s.Gateway; r != nil {
		held := map[netip.Addr]bool{}
		for _, a := range r.Addresses {
			if !a.IP.IsValid() || a.Interface == "" {
				errs = append(errs, fmt.Errorf("egress address %s needs an IP and an interface", a.IP))
			}
			held[a.IP] = true
		}
		served := map[uint32]bool{}
		for _, g := range r.Groups {
			served[g.Group] = true
			if err := marks.CheckGroup(g.Group); err != nil {
				errs = append(errs, fmt.Errorf("served group: %w", err))
			}
			for _, ip := range slices.Concat(g.EgressIPv4s, g.EgressIPv6s) {
				if !held[ip] {
					errs = append(errs, fmt.Errorf("served group %d: egress IP %s is not among the gateway's addresses", g.Group, ip))
				}
			}
			if g.PublicSource.IsValid() && (!g.PublicSource.Is4() || len(g.EgressIPv4s) == 0) {
				errs = append(errs, fmt.Errorf("served group %d: public source %s needs to be IPv4, with an IPv4 egress IP", g.Group, g.PublicSource))
			}
			for _, p := range g.Private {
				if !p.IsValid() || !p.Addr().Is4() {
					errs = append(errs, fmt.Errorf("served group %d: private destination %s is not an IPv4 prefix", g.Group, p))
				}
			}
			for fam, ips := range [][]netip.Addr{g.EgressIPv4s, g.EgressIPv6s} {
				for i, ip := range ips {
					if ip.Is4() != (fam == 0) {
						errs = append(errs, fmt.Errorf("served group %d: egress IP %s listed as IPv%d", g.Group, ip, 4+2*fam))
					}
					if i > 0 && ips[i-1].Compare(ip) >= 0 {
						errs = append(errs, fmt.Errorf("served group %d: egress IPs %v not sorted or not distinct", g.Group, ips))
						break
					}
				}
			}
		}
		for _, src := range r.Sources {
			if !src.Node.Is4() || !src.Pod.IsValid() || !served[src.Group] {
				errs = append(errs, fmt.Errorf("source %s of node %s: needs a pod address, an IPv4 node address and a served group (got group %d)",
					src.Pod, src.Node, src.Group))
			}
		}
		for _, n := range r.Nodes {
			if !n.Is4() {
				errs = append(errs, fmt.Errorf("node address %s is not IPv4", n))
			}
		}
	}
	return errors.Join(errs...)
}
