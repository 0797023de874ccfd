package announce_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/egressd/egressd/gateway/agent/announce"
	"github.com/egressd/egressd/test/netns"
)

// TestAnnounceNetns moves an address to node a on a flat L2 underlay: node b's neighbour
// entry for it points at another MAC (the old holder), and after one announcement from a it
// points at a's MAC. Linux takes an unsolicited NA only for an entry it already has (and a
// gratuitous ARP likewise, unless arp_accept is set), which is the entry a moved address
// leaves behind on its neighbours.
func TestAnnounceNetns(t *testing.T) {
	topo := netns.New(t, netns.Spec{Nodes: []netns.NodeSpec{{Name: "a"}, {Name: "b"}}, NoHostileRules: true})
	a, b := topo.Node("a"), topo.Node("b")
	aLink, err := a.Netlink().LinkByName(a.Link)
	if err != nil {
		t.Fatal(err)
	}
	bLink, err := b.Netlink().LinkByName(b.Link)
	if err != nil {
		t.Fatal(err)
	}
	aMAC := aLink.Attrs().HardwareAddr
	oldMAC := net.HardwareAddr{0x02, 0xee, 0, 0, 0, 0x01}

	for _, tc := range []struct {
		name string
		ip   netip.Addr
		fam  int
	}{
		{"IPv4 gratuitous ARP", a.Zone.Addr(200), netlink.FAMILY_V4},
		{"IPv6 unsolicited NA", a.Zone.Addr6(200), netlink.FAMILY_V6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The address is mounted on a as the datapath mounts an egress IP.
			if err := a.AddAddr(a.Link, netip.PrefixFrom(tc.ip, tc.ip.BitLen())); err != nil {
				t.Fatal(err)
			}
			stale := &netlink.Neigh{LinkIndex: bLink.Attrs().Index, Family: tc.fam, State: netlink.NUD_STALE,
				IP: tc.ip.AsSlice(), HardwareAddr: oldMAC}
			if err := b.Netlink().NeighSet(stale); err != nil {
				t.Fatalf("planting the old holder's neighbour entry: %v", err)
			}
			if got := lladdr(t, b, bLink.Attrs().Index, tc.fam, tc.ip); got.String() != oldMAC.String() {
				t.Fatalf("b's entry for %s is %v before the announcement, want %v", tc.ip, got, oldMAC)
			}

			if err := a.Do(func() error { return announce.Send(a.Link, tc.ip) }); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(2 * time.Second)
			for {
				got := lladdr(t, b, bLink.Attrs().Index, tc.fam, tc.ip)
				if got.String() == aMAC.String() {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("b's entry for %s is %v after the announcement, want a's %v", tc.ip, got, aMAC)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func lladdr(t *testing.T, n *netns.Node, ifindex, fam int, ip netip.Addr) net.HardwareAddr {
	t.Helper()
	neighs, err := n.Netlink().NeighList(ifindex, fam)
	if err != nil {
		t.Fatal(err)
	}
	for _, ne := range neighs {
		if a, ok := netip.AddrFromSlice(ne.IP); ok && a.Unmap() == ip {
			return ne.HardwareAddr
		}
	}
	return nil
}
