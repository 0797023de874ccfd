package dataplane

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/egressd/egressd/bpf"
)

// tunnelPeers are the underlay addresses this node tunnels to: the gateways of its groups and,
// on a gateway, the nodes it admits pods of (replies go back to them).
func tunnelPeers(s *State, p *plan) map[netip.Addr]bool {
	peers := map[netip.Addr]bool{}
	for _, g := range s.Groups {
		for _, gw := range g.Gateways {
			peers[gw.NodeIP] = true
		}
	}
	for src := range p.wantSources {
		peers[src.Node] = true
	}
	delete(peers, s.NodeIP)
	return peers
}

// resolveNexthop is the device of the route toward peer as the kernel's tunnel device would
// find it for its outer packets (no mark). ok is false for what the programs cannot send to
// themselves (no route, a route through the tunnel device, several paths or a device without
// Ethernet headers): such peers keep the tunnel device's path. The next hop and its MAC are
// the programs' route lookup's, per packet, bound to this device.
func resolveNexthop(peer netip.Addr, tunnelIndex int) (bpf.Nexthop, bool) {
	routes, err := netlink.RouteGet(peer.AsSlice())
	if err != nil || len(routes) != 1 {
		return bpf.Nexthop{}, false
	}
	r := routes[0]
	if r.LinkIndex <= 0 || r.LinkIndex == tunnelIndex || len(r.MultiPath) > 0 {
		return bpf.Nexthop{}, false
	}
	l, err := netlink.LinkByIndex(r.LinkIndex)
	if err != nil || l.Attrs().EncapType != "ether" {
		return bpf.Nexthop{}, false
	}
	return bpf.Nexthop{Ifindex: r.LinkIndex}, true
}

// applyNexthops resolves the next hop of every tunnel peer (one route lookup each, on every
// Apply, so a changed underlay route is picked up at the latest on the next resync) and
// rewrites the nexthops map to match.
func (d *Dataplane) applyNexthops(s *State, p *plan, tunnelIndex int) error {
	want := map[netip.Addr]bpf.Nexthop{}
	for peer := range tunnelPeers(s, p) {
		if nh, ok := resolveNexthop(peer, tunnelIndex); ok {
			want[peer] = nh
		}
	}
	have, err := d.dp.Nexthops()
	if err != nil {
		return err
	}
	for peer, nh := range want {
		if old, ok := have[peer]; ok && old == nh {
			continue
		}
		if err := d.dp.SetNexthop(peer, nh); err != nil {
			return fmt.Errorf("applying next hops: %w", err)
		}
	}
	for peer := range have {
		if _, ok := want[peer]; !ok {
			if err := d.dp.DeleteNexthop(peer); err != nil {
				return fmt.Errorf("applying next hops: %w", err)
			}
		}
	}
	return nil
}
