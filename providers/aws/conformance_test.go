package aws_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/aws/awssimtest"
	"github.com/egressd/egressd/providers/conformance"
	"github.com/egressd/egressd/test/cloudsim/simkit"
)

func TestConformance(t *testing.T) {
	conformance.Run(t, awssimtest.Harness{})
}

// TestConformanceAWSTiming runs the suite with the simulator's whole AWS timing profile at
// 1/100th of its delays (calls ~1.5 ms, propagation ~55 ms, describe lag up to 100 ms,
// attaching/detaching up to 150 ms), at fixed seeds. Before the provider read its own writes
// (journal.go), describe lag failed IdempotentEnsure, MoveKeepsAddress (repeated assigns and
// associations), GCListsOnlyOwn (ListOwned missed an address the describes did not show yet),
// FailAfterApplyNoSecondIP (a second Elastic IP after an AllocateAddress whose answer was lost)
// and DedicatedInterfaceOnce (an interface still detaching left for garbage collection).
func TestConformanceAWSTiming(t *testing.T) {
	for _, seed := range []int64{14, 15, 16} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			p := simkit.MustProfile("aws:0.01")
			conformance.Run(t, awssimtest.Harness{Timing: &p, Seed: seed})
		})
	}
}

// TestReleaseUnderDescribeLag releases an address (with its Elastic IP) right after assigning
// it, and one right after moving it, while describes still show the state before: nothing may
// stay behind.
func TestReleaseUnderDescribeLag(t *testing.T) {
	topo := conformance.Topology{Zones: []string{"a"}, NodesPerZone: 2, IPsPerNode: 3}
	w := awssimtest.Harness{}.Setup(t, topo).(*awssimtest.World)
	ctx := context.Background()
	owner := providers.Owner{Cluster: w.Cluster(), Gateway: "gw1"}
	n, m := w.Nodes("a")[0], w.Nodes("a")[1]
	w.SetDescribeLag(time.Hour)
	for i, move := range []bool{false, true} {
		ip := w.FreeAddress("a")
		cur, err := w.Provider().EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: n, IP: ip, Public: true})
		if err != nil {
			t.Fatal(err)
		}
		if move {
			if cur, err = w.Provider().MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: *cur, To: m}); err != nil {
				t.Fatal(err)
			}
			if h, _, _ := w.Holder(ip); h != m.Name {
				t.Fatalf("after the move %s is on %q, want %s", ip, h, m.Name)
			}
		}
		if err := w.Provider().ReleaseIP(ctx, providers.ReleaseRequest{Owner: owner, Current: *cur}); err != nil {
			t.Fatal(err)
		}
		if h, _, ok := w.Holder(ip); ok {
			t.Errorf("case %d: %s still held by %s after release", i, ip, h)
		}
		if n := w.PublicIPs(); n != 0 {
			t.Errorf("case %d: %d Elastic IPs left after release", i, n)
		}
	}
}

// TestMoveAWSTimingRealProfile assigns, moves and releases an address with the AWS profile at
// its real delays (fixed seed): every call converges, and the simulator's fabric delivers the
// moved address to the new holder only after the drawn propagation.
func TestMoveAWSTimingRealProfile(t *testing.T) {
	if testing.Short() {
		t.Skip("the real AWS profile takes seconds")
	}
	p := simkit.MustProfile("aws")
	p.DescribeLag, p.Attachment = simkit.Dist{}, simkit.Dist{}
	topo := conformance.Topology{Zones: []string{"a"}, NodesPerZone: 2, IPsPerNode: 3}
	w := awssimtest.Harness{Timing: &p, Seed: 21}.Setup(t, topo).(*awssimtest.World)
	ctx := context.Background()
	owner := providers.Owner{Cluster: w.Cluster(), Gateway: "gw1"}
	n, m := w.Nodes("a")[0], w.Nodes("a")[1]
	ip := w.FreeAddress("a")
	cur, err := w.Provider().EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: n, IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	moved, err := w.Provider().MoveIP(ctx, providers.MoveRequest{Owner: owner, Current: *cur, To: m})
	if err != nil {
		t.Fatal(err)
	}
	if h, _, _ := w.Holder(ip); h != m.Name {
		t.Fatalf("the API holds %s on %q after the move, want %s", ip, h, m.Name)
	}
	moves := w.Sim.MovesSince(0)
	last := moves[len(moves)-1]
	if last.IP != ip || last.DeliveredAt.Sub(last.AcceptedAt) < p.Propagation.Min {
		t.Fatalf("last move %+v: want %s delivered at least %v after it was accepted", last, ip, p.Propagation.Min)
	}
	t.Logf("move of %s: accepted %s, delivered %v later", ip, last.AcceptedAt.Format(time.StampMilli), last.DeliveredAt.Sub(last.AcceptedAt))
	if err := w.Provider().ReleaseIP(ctx, providers.ReleaseRequest{Owner: owner, Current: *moved}); err != nil {
		t.Fatal(err)
	}
	if h, _, ok := w.Holder(ip); ok {
		t.Fatalf("%s still held by %s", ip, h)
	}
}

// TestConformanceIPv6 runs the suite with cloud.family IPv6 on dual-stack subnets
// (AssignIpv6Addresses and UnassignIpv6Addresses; a move is an unassign and an assign, since
// EC2 has no reassignment for IPv6), instantly and with the AWS profile at 1/100th.
func TestConformanceIPv6(t *testing.T) {
	t.Run("instant", func(t *testing.T) { conformance.Run(t, awssimtest.Harness{IPv6: true}) })
	t.Run("aws", func(t *testing.T) {
		p := simkit.MustProfile("aws:0.01")
		conformance.Run(t, awssimtest.Harness{IPv6: true, Timing: &p, Seed: 14})
	})
}

// TestDiscoverDualStack: a dual-stack subnet's IPv6 block is reported as its own pool (the
// subnet ID with "#ipv6"), with EC2's five reserved addresses, so that the coordinator
// allocates cloud.family IPv6 addresses from it; a dedicated interface for an IPv6 address is
// created in the subnet itself.
func TestDiscoverDualStack(t *testing.T) {
	topo := conformance.Topology{Zones: []string{"a"}, NodesPerZone: 1, IPsPerNode: 3}
	w := awssimtest.Harness{IPv6: true}.Setup(t, topo).(*awssimtest.World)
	ctx := context.Background()
	n := w.Nodes("a")[0]
	info, err := w.Provider().DiscoverNode(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	var v4, v6 *providers.Subnet
	for i, s := range info.Subnets {
		if s.CIDR.Addr().Is6() {
			v6 = &info.Subnets[i]
		} else {
			v4 = &info.Subnets[i]
		}
	}
	if v4 == nil || v6 == nil {
		t.Fatalf("subnets %+v: want the IPv4 subnet and its IPv6 block", info.Subnets)
	}
	if v6.ID != v4.ID+"#ipv6" || v6.CIDR.Bits() != 64 || len(v6.Reserved) != 5 {
		t.Errorf("IPv6 block %+v: want ID %s#ipv6, a /64 and 5 reserved addresses", *v6, v4.ID)
	}
	if last := v6.Reserved[4]; !v6.CIDR.Contains(last) || v6.CIDR.Contains(last.Next()) {
		t.Errorf("last reserved %s is not the block's last address", last)
	}
	ip := w.FreeAddress("a")
	a, err := w.Provider().EnsureIP(ctx, providers.EnsureRequest{Owner: providers.Owner{Cluster: w.Cluster(), Gateway: "gw1"},
		Node: n, IP: ip, Subnet: v6.ID, Interface: providers.InterfaceDedicated})
	if err != nil {
		t.Fatal(err)
	}
	if a.Subnet != v4.ID {
		t.Errorf("dedicated interface in %q, want the subnet %s", a.Subnet, v4.ID)
	}
	if _, err := w.Provider().EnsureIP(ctx, providers.EnsureRequest{Owner: providers.Owner{Cluster: w.Cluster(), Gateway: "gw1"},
		Node: n, IP: w.FreeAddress("a"), Public: true}); err == nil {
		t.Error("a public IPv6 egress IP was accepted; Elastic IPs are IPv4")
	}
}
