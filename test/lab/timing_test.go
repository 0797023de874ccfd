package lab

import (
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/test/cloudsim/simkit"
)

// TestRouterSourceCheck checks the VPC router's source/destination check against the
// simulator's fabric view: an address the API assigned to a node but the fabric has not
// delivered yet is dropped (and counted) when the node sends from it, then passes once
// delivered; after it moves to another node the old holder's packets are dropped again.
func TestRouterSourceCheck(t *testing.T) {
	skipUnlessRoot(t)
	l := upLab(t, Config{Zones: 1, GatewaysPerZone: 2, NoControlPlane: true})
	// Nothing propagates on its own within the test: DeliverPending ends each propagation.
	l.Sim.SetTiming(simkit.Profile{Name: "held", Propagation: simkit.Const(time.Hour)}, 1)
	a, b := l.Node("gw-a1"), l.Node("gw-a2")
	egress := a.Zone.Addr(200)
	for _, n := range []*Node{a, b} {
		if err := n.AddAddr(n.Link, netip.PrefixFrom(egress, 24)); err != nil {
			t.Fatal(err)
		}
	}
	counted := func(node string) uint64 {
		t.Helper()
		us, err := l.UndeliveredSources()
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range us {
			if u.Node == node && u.IP == egress {
				return u.Packets
			}
		}
		return 0
	}
	sync := func() {
		t.Helper()
		if err := l.SyncRouter(); err != nil {
			t.Fatal(err)
		}
	}

	ec2(t, l, "Action", "AssignPrivateIpAddresses", "NetworkInterfaceId", a.Instance.PrimaryENI, "PrivateIpAddress.1", egress.String())
	sync()
	if h, ok := l.Sim.Holder("", egress); !ok || h.Instance != a.Instance.ID {
		t.Fatalf("the API did not accept the assignment: %+v", h)
	}
	if seen, err := getFrom(a.Namespace, egress, l.Echo); err == nil {
		t.Fatalf("%s reached the echo server before the fabric delivered it (seen %s)", egress, seen)
	}
	if n := counted(a.Name); n == 0 {
		t.Fatalf("no undelivered-source drop counted for %s from %s", egress, a.Name)
	}
	moves := l.Moves()
	last := moves[len(moves)-1]
	if last.IP != egress || last.To.Instance != a.Instance.ID || last.From.ENI != "" || !last.DeliveredAt.After(last.AcceptedAt) {
		t.Fatalf("last move %+v: want %s accepted for %s, delivered later", last, egress, a.Instance.ID)
	}

	l.Sim.DeliverPending()
	sync()
	before := counted(a.Name)
	if seen, err := getFrom(a.Namespace, egress, l.Echo); err != nil || seen != egress.String() {
		t.Fatalf("after delivery: seen %q, %v; want %s", seen, err, egress)
	}
	if after := counted(a.Name); after != before {
		t.Fatalf("delivered traffic counted as undelivered: %d then %d", before, after)
	}

	// A move: accepted for b at once; until delivered, b's packets are dropped and a's pass.
	ec2(t, l, "Action", "AssignPrivateIpAddresses", "NetworkInterfaceId", b.Instance.PrimaryENI, "PrivateIpAddress.1", egress.String(),
		"AllowReassignment", "true")
	sync()
	if seen, err := getFrom(b.Namespace, egress, l.Echo); err == nil {
		t.Fatalf("the new holder %s sent from %s before delivery (seen %s)", b.Name, egress, seen)
	}
	if counted(b.Name) == 0 {
		t.Fatalf("no undelivered-source drop counted for %s from %s", egress, b.Name)
	}
	if seen, err := getFrom(a.Namespace, egress, l.Echo); err != nil || seen != egress.String() {
		t.Fatalf("the old holder lost %s before the move was delivered: %q, %v", egress, seen, err)
	}
	l.Sim.DeliverPending()
	sync()
	if seen, err := getFrom(b.Namespace, egress, l.Echo); err != nil || seen != egress.String() {
		t.Fatalf("after the move's delivery: seen %q, %v; want %s", seen, err, egress)
	}
	aBefore := counted(a.Name)
	if _, err := getFrom(a.Namespace, egress, l.Echo); err == nil {
		t.Fatalf("the old holder %s still sends from %s after the move", a.Name, egress)
	}
	if counted(a.Name) <= aBefore {
		t.Fatalf("the old holder's packets were not counted")
	}
}
