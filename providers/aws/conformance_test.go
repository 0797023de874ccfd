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
