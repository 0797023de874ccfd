package coordinator

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/ipalloc"
)

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func node(name, zone string, mods ...func(*NodeView)) NodeView {
	n := NodeView{Name: name, Zone: zone, Selected: true, Ready: true, AgentAlive: true, ProbeUp: true, Free: 10,
		UnderlayIP: netip.MustParseAddr("10.0.0." + fmt.Sprint(len(name)+int(name[len(name)-1])))}
	for _, m := range mods {
		m(&n)
	}
	return n
}

func probeDown(n *NodeView)  { n.ProbeUp = false }
func notReady(n *NodeView)   { n.Ready = false }
func cordoned(n *NodeView)   { n.Cordoned = true }
func unlabelled(n *NodeView) { n.Selected = false }
func leaseGone(n *NodeView)  { n.AgentAlive = false }

func ip(s, zone, node string) IPView {
	// The cloud holds it where the ledger wants it: the steady state.
	return IPView{IP: netip.MustParseAddr(s), Zone: zone, Node: node, Held: node}
}

func spec(mods ...func(*egressv1.EgressGatewaySpec)) egressv1.EgressGatewaySpec {
	s := egressv1.EgressGatewaySpec{
		Mode:      egressv1.ModeActiveActive,
		Failback:  egressv1.FailbackNever,
		Addresses: egressv1.EgressAddresses{Cloud: &egressv1.CloudAddresses{Provider: "aws", IPsPerZone: 1}},
	}
	for _, m := range mods {
		m(&s)
	}
	return s
}

func ipsPerZone(n int32) func(*egressv1.EgressGatewaySpec) {
	return func(s *egressv1.EgressGatewaySpec) { s.Addresses.Cloud.IPsPerZone = n }
}
func standby(s *egressv1.EgressGatewaySpec)   { s.Mode = egressv1.ModeActiveStandby }
func immediate(s *egressv1.EgressGatewaySpec) { s.Failback = egressv1.FailbackImmediate }
func maxPerZone(n int32) func(*egressv1.EgressGatewaySpec) {
	return func(s *egressv1.EgressGatewaySpec) { s.Zones = &egressv1.ZoneSpec{MaxGatewaysPerZone: &n} }
}

func draining(node string, since time.Time) egressv1.EgressGatewayStatus {
	return egressv1.EgressGatewayStatus{Zones: []egressv1.ZoneStatus{{Name: "a", Gateways: []egressv1.GatewayNodeStatus{
		{Node: node, State: egressv1.GatewayDraining, Since: &metav1.Time{Time: since}},
	}}}}
}

// listed is a previous status listing the nodes as usable gateways (Standby, zone "a").
func listed(nodes ...string) egressv1.EgressGatewayStatus {
	z := egressv1.ZoneStatus{Name: "a"}
	for _, n := range nodes {
		z.Gateways = append(z.Gateways, egressv1.GatewayNodeStatus{Node: n, State: egressv1.GatewayStandby})
	}
	return egressv1.EgressGatewayStatus{Zones: []egressv1.ZoneStatus{z}}
}

func TestPlanGateway(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     PlanInput
		states map[string]egressv1.GatewayState // node -> state
		place  map[string]string                // ip -> node
		want   map[string]int                   // zone -> new addresses
		excess []string
		gone   []string // nodes no longer listed
		// ignored: the gateways whose failed coordinator probes the plan ignores.
		ignored []string
	}{
		{
			name:   "four zones, one gateway each, nothing allocated yet",
			in:     PlanInput{Spec: spec(), Nodes: []NodeView{node("gw-a", "a"), node("gw-b", "b"), node("gw-c", "c"), node("gw-d", "d")}},
			states: map[string]egressv1.GatewayState{"gw-a": "Standby", "gw-b": "Standby", "gw-c": "Standby", "gw-d": "Standby"},
			want:   map[string]int{"a": 1, "b": 1, "c": 1, "d": 1},
		},
		{
			name:   "healthy holder keeps its address, second node is standby",
			in:     PlanInput{Spec: spec(), Nodes: []NodeView{node("n1", "a"), node("n2", "a")}, IPs: []IPView{ip("10.0.1.10", "a", "n2")}},
			states: map[string]egressv1.GatewayState{"n1": "Standby", "n2": "Active"},
			place:  map[string]string{"10.0.1.10": "n2"},
		},
		{
			name:   "probe failure moves the address to the survivor in the zone",
			in:     PlanInput{Spec: spec(), Nodes: []NodeView{node("n1", "a", probeDown), node("n2", "a")}, IPs: []IPView{ip("10.0.1.10", "a", "n1")}},
			states: map[string]egressv1.GatewayState{"n1": "Unhealthy", "n2": "Standby"},
			place:  map[string]string{"10.0.1.10": "n2"},
		},
		{
			name:   "node NotReady and expired agent lease are unhealthy too",
			in:     PlanInput{Spec: spec(ipsPerZone(2)), Nodes: []NodeView{node("n1", "a", notReady), node("n2", "a", leaseGone), node("n3", "a")}, IPs: []IPView{ip("10.0.1.10", "a", "n1"), ip("10.0.1.11", "a", "n2")}},
			states: map[string]egressv1.GatewayState{"n1": "Unhealthy", "n2": "Unhealthy", "n3": "Standby"},
			place:  map[string]string{"10.0.1.10": "n3", "10.0.1.11": "n3"},
		},
		{
			name:   "last gateway of a zone dies: the address stays in the group, unplaced",
			in:     PlanInput{Spec: spec(), Nodes: []NodeView{node("n1", "a", probeDown), node("n2", "b")}, IPs: []IPView{ip("10.0.1.10", "a", "n1"), ip("10.0.2.10", "b", "n2")}},
			states: map[string]egressv1.GatewayState{"n1": "Unhealthy", "n2": "Active"},
			place:  map[string]string{"10.0.1.10": "", "10.0.2.10": "n2"},
			want:   map[string]int{"a": 0, "b": 0},
		},
		{
			name:   "cordoned holder drains: keeps its address within the grace period",
			in:     PlanInput{Spec: spec(), Nodes: []NodeView{node("n1", "a", cordoned), node("n2", "a")}, IPs: []IPView{ip("10.0.1.10", "a", "n1")}, Previous: draining("n1", t0.Add(-10*time.Second))},
			states: map[string]egressv1.GatewayState{"n1": "Draining", "n2": "Standby"},
			place:  map[string]string{"10.0.1.10": "n1"},
		},
		{
			name:   "cordoned holder after the grace period: the address moves",
			in:     PlanInput{Spec: spec(), Nodes: []NodeView{node("n1", "a", cordoned), node("n2", "a")}, IPs: []IPView{ip("10.0.1.10", "a", "n1")}, Previous: draining("n1", t0.Add(-31*time.Second))},
			states: map[string]egressv1.GatewayState{"n1": "Draining", "n2": "Standby"},
			place:  map[string]string{"10.0.1.10": "n2"},
		},
		{
			name:   "label removed after the grace period: the node leaves the group",
			in:     PlanInput{Spec: spec(), Nodes: []NodeView{node("n1", "a", unlabelled), node("n2", "a")}, IPs: []IPView{ip("10.0.1.10", "a", "n1")}, Previous: draining("n1", t0.Add(-time.Minute))},
			states: map[string]egressv1.GatewayState{"n2": "Standby"},
			place:  map[string]string{"10.0.1.10": "n2"},
			gone:   []string{"n1"},
		},
		{
			name:   "unlabelled node that never was a gateway is ignored",
			in:     PlanInput{Spec: spec(), Nodes: []NodeView{node("n1", "a", unlabelled), node("n2", "a")}},
			states: map[string]egressv1.GatewayState{"n2": "Standby"},
			gone:   []string{"n1"},
			want:   map[string]int{"a": 1},
		},
		{
			name:   "ActiveStandby, failback Never: the recovered first node stays standby",
			in:     PlanInput{Spec: spec(standby, ipsPerZone(2)), Nodes: []NodeView{node("n1", "a"), node("n2", "a")}, IPs: []IPView{ip("10.0.1.10", "a", "n2"), ip("10.0.1.11", "a", "n2")}},
			states: map[string]egressv1.GatewayState{"n1": "Standby", "n2": "Active"},
			place:  map[string]string{"10.0.1.10": "n2", "10.0.1.11": "n2"},
		},
		{
			name:   "ActiveStandby, failback Immediate: addresses return to the elected node",
			in:     PlanInput{Group: "db", Spec: spec(standby, immediate, ipsPerZone(2)), Nodes: []NodeView{node("n1", "a"), node("n2", "a")}, IPs: []IPView{ip("10.0.1.10", "a", "n2"), ip("10.0.1.11", "a", "n2")}},
			states: map[string]egressv1.GatewayState{"n1": "Standby", "n2": "Standby"},
			place:  map[string]string{"10.0.1.10": "n1", "10.0.1.11": "n1"},
		},
		{
			name:   "ActiveActive, failback Immediate: a recovered node takes a share back",
			in:     PlanInput{Spec: spec(immediate, ipsPerZone(2)), Nodes: []NodeView{node("n1", "a"), node("n2", "a")}, IPs: []IPView{ip("10.0.1.10", "a", "n1"), ip("10.0.1.11", "a", "n1")}},
			states: map[string]egressv1.GatewayState{"n1": "Active", "n2": "Standby"},
			place:  map[string]string{"10.0.1.10": "n1", "10.0.1.11": "n2"},
		},
		{
			name:   "ActiveActive, failback Never: nothing moves back",
			in:     PlanInput{Spec: spec(ipsPerZone(2)), Nodes: []NodeView{node("n1", "a"), node("n2", "a")}, IPs: []IPView{ip("10.0.1.10", "a", "n1"), ip("10.0.1.11", "a", "n1")}},
			states: map[string]egressv1.GatewayState{"n1": "Active", "n2": "Standby"},
			place:  map[string]string{"10.0.1.10": "n1", "10.0.1.11": "n1"},
		},
		{
			name:   "maxGatewaysPerZone keeps the holder and parks the rest",
			in:     PlanInput{Spec: spec(maxPerZone(1)), Nodes: []NodeView{node("n1", "a"), node("n2", "a")}, IPs: []IPView{ip("10.0.1.10", "a", "n2")}},
			states: map[string]egressv1.GatewayState{"n1": "Standby", "n2": "Active"},
			place:  map[string]string{"10.0.1.10": "n2"},
		},
		{
			name:   "ipsPerZone lowered: the highest address is released",
			in:     PlanInput{Spec: spec(), Nodes: []NodeView{node("n1", "a")}, IPs: []IPView{ip("10.0.1.10", "a", "n1"), ip("10.0.1.11", "a", "n1")}},
			states: map[string]egressv1.GatewayState{"n1": "Active"},
			place:  map[string]string{"10.0.1.10": "n1"},
			excess: []string{"10.0.1.11"},
		},
		{
			name:   "nodeInterface: every usable gateway is Active, no address to allocate",
			in:     PlanInput{Spec: egressv1.EgressGatewaySpec{Addresses: egressv1.EgressAddresses{NodeInterface: &egressv1.NodeInterfaceAddresses{Interface: "eth1"}}}, Nodes: []NodeView{node("n1", "a"), node("n2", "a", probeDown)}},
			states: map[string]egressv1.GatewayState{"n1": "Active", "n2": "Unhealthy"},
			want:   map[string]int{"a": 0},
		},
		{
			name:   "spread new addresses over the zone's gateways",
			in:     PlanInput{Spec: spec(ipsPerZone(2)), Nodes: []NodeView{node("n1", "a"), node("n2", "a")}, IPs: []IPView{ip("10.0.1.10", "a", ""), ip("10.0.1.11", "a", "")}},
			states: map[string]egressv1.GatewayState{"n1": "Standby", "n2": "Standby"},
			place:  map[string]string{"10.0.1.10": "n1", "10.0.1.11": "n2"},
		},
		// Fail-safe health: the coordinator's probes fail for the whole group.
		{
			name:    "every probe fails, leases fresh: nothing moves, nothing turns unhealthy",
			in:      PlanInput{Spec: spec(ipsPerZone(2)), Nodes: []NodeView{node("n1", "a", probeDown), node("n2", "a", probeDown), node("n3", "b", probeDown)}, IPs: []IPView{ip("10.0.1.10", "a", "n1"), ip("10.0.1.11", "a", "n2"), ip("10.0.2.10", "b", "n3"), ip("10.0.2.11", "b", "n3")}},
			states:  map[string]egressv1.GatewayState{"n1": "Active", "n2": "Active", "n3": "Active"},
			place:   map[string]string{"10.0.1.10": "n1", "10.0.1.11": "n2", "10.0.2.10": "n3", "10.0.2.11": "n3"},
			ignored: []string{"n1", "n2", "n3"},
		},
		{
			name: "controller path back, n2 answers first, within the grace: the others keep their state",
			in: PlanInput{Spec: spec(), Nodes: []NodeView{node("n1", "a", probeDown), node("n2", "a"), node("n3", "b", probeDown)},
				IPs: []IPView{ip("10.0.1.10", "a", "n1"), ip("10.0.2.10", "b", "n3")}, Previous: listed("n1", "n2", "n3"), ProbeGraceUntil: t0.Add(time.Second)},
			states:  map[string]egressv1.GatewayState{"n1": "Active", "n2": "Standby", "n3": "Active"},
			place:   map[string]string{"10.0.1.10": "n1", "10.0.2.10": "n3"},
			ignored: []string{"n1", "n3"},
		},
		{
			name: "controller path back, grace over: a gateway still not answering is Unhealthy",
			in: PlanInput{Spec: spec(), Nodes: []NodeView{node("n1", "a", probeDown), node("n2", "a"), node("n3", "b")},
				IPs: []IPView{ip("10.0.1.10", "a", "n1"), ip("10.0.2.10", "b", "n3")}, Previous: listed("n1", "n2", "n3"), ProbeGraceUntil: t0},
			states: map[string]egressv1.GatewayState{"n1": "Unhealthy", "n2": "Standby", "n3": "Active"}, // n2 Active once the move lands
			place:  map[string]string{"10.0.1.10": "n2", "10.0.2.10": "n3"},
		},
		{
			name:    "single-gateway group, probe fails, lease fresh: kept",
			in:      PlanInput{Spec: spec(), Nodes: []NodeView{node("n1", "a", probeDown)}, IPs: []IPView{ip("10.0.1.10", "a", "n1")}},
			states:  map[string]egressv1.GatewayState{"n1": "Active"},
			place:   map[string]string{"10.0.1.10": "n1"},
			ignored: []string{"n1"},
		},
		{
			name:    "ActiveStandby, every probe fails, leases fresh: the active keeps its address",
			in:      PlanInput{Spec: spec(standby), Nodes: []NodeView{node("n1", "a", probeDown), node("n2", "a", probeDown)}, IPs: []IPView{ip("10.0.1.10", "a", "n2")}},
			states:  map[string]egressv1.GatewayState{"n1": "Standby", "n2": "Active"},
			place:   map[string]string{"10.0.1.10": "n2"},
			ignored: []string{"n1", "n2"},
		},
		{
			name:   "every probe fails, every lease expired: all unhealthy, addresses unplaced",
			in:     PlanInput{Spec: spec(), Nodes: []NodeView{node("n1", "a", probeDown, leaseGone), node("n2", "a", probeDown, leaseGone)}, IPs: []IPView{ip("10.0.1.10", "a", "n1")}},
			states: map[string]egressv1.GatewayState{"n1": "Unhealthy", "n2": "Unhealthy"},
			place:  map[string]string{"10.0.1.10": ""},
		},
		{
			name:    "every probe fails, the holder's lease expired: it fails, the fresh one takes over",
			in:      PlanInput{Spec: spec(), Nodes: []NodeView{node("n1", "a", probeDown, leaseGone), node("n2", "a", probeDown)}, IPs: []IPView{ip("10.0.1.10", "a", "n1")}},
			states:  map[string]egressv1.GatewayState{"n1": "Unhealthy", "n2": "Standby"},
			place:   map[string]string{"10.0.1.10": "n2"},
			ignored: []string{"n2"},
		},
		{
			name:    "every probe fails, the holder's node NotReady: it fails, the fresh one takes over",
			in:      PlanInput{Spec: spec(), Nodes: []NodeView{node("n1", "a", probeDown, notReady), node("n2", "a", probeDown)}, IPs: []IPView{ip("10.0.1.10", "a", "n1")}},
			states:  map[string]egressv1.GatewayState{"n1": "Unhealthy", "n2": "Standby"},
			place:   map[string]string{"10.0.1.10": "n2"},
			ignored: []string{"n2"},
		},
		{
			name:    "every probe fails, the holder cordoned: it drains as usual, the other is kept",
			in:      PlanInput{Spec: spec(), Nodes: []NodeView{node("n1", "a", probeDown, cordoned), node("n2", "a", probeDown)}, IPs: []IPView{ip("10.0.1.10", "a", "n1")}, Previous: draining("n1", t0.Add(-10*time.Second))},
			states:  map[string]egressv1.GatewayState{"n1": "Draining", "n2": "Standby"},
			place:   map[string]string{"10.0.1.10": "n1"},
			ignored: []string{"n2"},
		},
		{
			name:   "probes fail in one zone, pass in another: the failures stand",
			in:     PlanInput{Spec: spec(), Nodes: []NodeView{node("n1", "a", probeDown), node("n2", "a", probeDown), node("n3", "b")}, IPs: []IPView{ip("10.0.1.10", "a", "n1"), ip("10.0.2.10", "b", "n3")}},
			states: map[string]egressv1.GatewayState{"n1": "Unhealthy", "n2": "Unhealthy", "n3": "Active"},
			place:  map[string]string{"10.0.1.10": "", "10.0.2.10": "n3"},
		},
		{
			name:   "one cordoned node still answers: the path works, the failures stand",
			in:     PlanInput{Spec: spec(), Nodes: []NodeView{node("n1", "a", probeDown), node("n2", "a", cordoned)}, IPs: []IPView{ip("10.0.1.10", "a", "n1")}, Previous: draining("n2", t0.Add(-time.Minute))},
			states: map[string]egressv1.GatewayState{"n1": "Unhealthy", "n2": "Draining"},
			place:  map[string]string{"10.0.1.10": ""},
		},
		{
			name:    "a node without an underlay address is not probed and is no evidence",
			in:      PlanInput{Spec: spec(), Nodes: []NodeView{node("n1", "a", probeDown), node("n2", "a", func(n *NodeView) { n.UnderlayIP = netip.Addr{} })}, IPs: []IPView{ip("10.0.1.10", "a", "n1")}},
			states:  map[string]egressv1.GatewayState{"n1": "Active", "n2": "Standby"},
			place:   map[string]string{"10.0.1.10": "n1"},
			ignored: []string{"n1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Now = t0
			alloc := ipalloc.New()
			for _, z := range []string{"a", "b", "c", "d"} {
				p := netip.MustParsePrefix(map[string]string{"a": "10.0.1.0/24", "b": "10.0.2.0/24", "c": "10.0.3.0/24", "d": "10.0.4.0/24"}[z])
				if err := alloc.AddSubnet(z, "subnet-"+z, p, ipalloc.ReserveAWS); err != nil {
					t.Fatal(err)
				}
			}
			for _, v := range tc.in.IPs {
				if err := alloc.Claim(ipalloc.Record{IP: v.IP, Zone: v.Zone, Subnet: "subnet-" + v.Zone, Owner: "gw", Node: v.Node}); err != nil {
					t.Fatal(err)
				}
			}
			plan, err := PlanGateway(tc.in, alloc)
			if err != nil {
				t.Fatal(err)
			}
			states := map[string]egressv1.GatewayState{}
			place := map[string]string{}
			want := map[string]int{}
			var excess []string
			for _, z := range plan.Zones {
				for _, g := range z.Gateways {
					states[g.Node] = g.State
				}
				for a, n := range z.Place {
					place[a.String()] = n
				}
				want[z.Name] = z.Want
				for _, a := range z.Excess {
					excess = append(excess, a.String())
				}
			}
			for n, s := range tc.states {
				if states[n] != s {
					t.Errorf("node %s: state %q, want %q (all: %v)", n, states[n], s, states)
				}
			}
			for _, n := range tc.gone {
				if _, ok := states[n]; ok {
					t.Errorf("node %s still listed as %s", n, states[n])
				}
			}
			if len(states) != len(tc.states) {
				t.Errorf("states %v, want %v", states, tc.states)
			}
			for a, n := range tc.place {
				if got, ok := place[a]; !ok || got != n {
					t.Errorf("address %s placed on %q, want %q", a, got, n)
				}
			}
			for z, w := range tc.want {
				if want[z] != w {
					t.Errorf("zone %s: want %d new addresses, plan says %d", z, w, want[z])
				}
			}
			if fmt.Sprint(excess) != fmt.Sprint(tc.excess) {
				t.Errorf("excess %v, want %v", excess, tc.excess)
			}
			if fmt.Sprint(plan.ProbesIgnored) != fmt.Sprint(tc.ignored) {
				t.Errorf("probe failures ignored for %v, want %v", plan.ProbesIgnored, tc.ignored)
			}
		})
	}
}

func TestPlanDrainRequeuesAtGraceEnd(t *testing.T) {
	in := PlanInput{Spec: spec(), Now: t0, Nodes: []NodeView{node("n1", "a", cordoned), node("n2", "a")},
		IPs: []IPView{ip("10.0.1.10", "a", "n1")}, Previous: draining("n1", t0.Add(-10*time.Second))}
	alloc := ipalloc.New()
	if err := alloc.AddSubnet("a", "subnet-a", netip.MustParsePrefix("10.0.1.0/24"), ipalloc.ReserveAWS); err != nil {
		t.Fatal(err)
	}
	if err := alloc.Claim(ipalloc.Record{IP: netip.MustParseAddr("10.0.1.10"), Zone: "a", Subnet: "subnet-a", Owner: "gw", Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	plan, err := PlanGateway(in, alloc)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Requeue != 20*time.Second {
		t.Fatalf("requeue after %v, want 20s (30s grace, draining for 10s)", plan.Requeue)
	}
}

// ElectActive ranks nodes by sha256(node + "#" + group), as MetalLB's speaker does. The expected
// winners are the hash's (pinned here: a change of the hash moves every active role).
func TestElectActive(t *testing.T) {
	for _, tc := range []struct {
		name       string
		group      string
		candidates []string
		want       string
	}{
		{name: "no candidate", group: "web", want: ""},
		{name: "one candidate", group: "web", candidates: []string{"n3"}, want: "n3"},
		{name: "web", group: "web", candidates: []string{"n1", "n2", "n3"}, want: "n2"},
		{name: "db, same nodes, another winner", group: "db", candidates: []string{"n1", "n2", "n3"}, want: "n1"},
		{name: "candidate order does not matter", group: "db", candidates: []string{"n3", "n2", "n1"}, want: "n1"},
		{name: "a loser leaving changes nothing", group: "web", candidates: []string{"n2", "n3"}, want: "n2"},
		{name: "the winner leaving: the next in rank", group: "db", candidates: []string{"n2", "n3"}, want: "n3"},
		{name: "not alphabetical", group: "", candidates: []string{"n1", "n2", "n3"}, want: "n3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ElectActive(tc.group, tc.candidates); got != tc.want {
				t.Errorf("ElectActive(%q, %v) = %q, want %q", tc.group, tc.candidates, got, tc.want)
			}
		})
	}
}

// With many ActiveStandby groups on the same gateway nodes, the planner spreads the active role
// across them; electing by name put every group on the same node.
func TestActiveStandbySpreadsAcrossNodes(t *testing.T) {
	const groups, nodes = 400, 4
	views := make([]NodeView, nodes)
	for i := range views {
		views[i] = node(fmt.Sprintf("gw-%d", i), "a")
	}
	active := map[string]int{}
	for g := range groups {
		name := fmt.Sprintf("egress-%d", g)
		in := PlanInput{Group: name, Spec: spec(standby, immediate), Nodes: views, IPs: []IPView{ip("10.0.1.10", "a", "")}, Now: t0}
		plan, err := PlanGateway(in, ipalloc.New())
		if err != nil {
			t.Fatal(err)
		}
		winner := plan.Zones[0].Place[netip.MustParseAddr("10.0.1.10")]
		if want := ElectActive(name, []string{"gw-0", "gw-1", "gw-2", "gw-3"}); winner != want {
			t.Fatalf("%s: placed on %q, the election says %q", name, winner, want)
		}
		active[winner]++
	}
	lo, hi := groups, 0
	for i := range nodes {
		n := active[fmt.Sprintf("gw-%d", i)]
		lo, hi = min(lo, n), max(hi, n)
	}
	t.Logf("%d ActiveStandby groups over %d nodes: active per node %v (min %d, max %d, even share %d)", groups, nodes, active, lo, hi, groups/nodes)
	// A fair spread: every node within 30% of its even share (binomial sd is 8.7 here).
	if lo < groups/nodes*7/10 || hi > groups/nodes*13/10 {
		t.Errorf("active role spread %v: outside 70-130%% of the even share %d", active, groups/nodes)
	}
}

// A node turns Active for a cloud address only once the cloud holds it there and the node's
// agent proved delivery for the EgressIP's generation; until then it is Standby, reason
// AwaitingDelivery, and workers send it nothing. An agent that publishes no proofs (nil) is
// taken at the cloud's word; static addresses need no proof.
func TestPlanWaitsForDelivery(t *testing.T) {
	addr := netip.MustParseAddr("10.0.1.10")
	for _, tc := range []struct {
		name      string
		spec      egressv1.EgressGatewaySpec
		held      string
		gen       int64
		delivered contract.Delivered
		state     egressv1.GatewayState
		reason    string
	}{
		{"the cloud call has not returned", spec(), "n1", 2, nil, egressv1.GatewayStandby, egressv1.ReasonAwaitingDelivery},
		{"held, agent proves nothing (older agent)", spec(), "n2", 2, nil, egressv1.GatewayActive, ""},
		{"held, no proof yet", spec(), "n2", 2, contract.Delivered{}, egressv1.GatewayStandby, egressv1.ReasonAwaitingDelivery},
		{"held, proof of an earlier placement", spec(), "n2", 2, contract.Delivered{addr: 1}, egressv1.GatewayStandby, egressv1.ReasonAwaitingDelivery},
		{"held and proven", spec(), "n2", 2, contract.Delivered{addr: 2}, egressv1.GatewayActive, ""},
		{"static addresses are announced, not proven", egressv1.EgressGatewaySpec{Mode: egressv1.ModeActiveActive,
			Addresses: egressv1.EgressAddresses{Static: &egressv1.StaticAddresses{}}}, "n1", 2, contract.Delivered{}, egressv1.GatewayActive, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n2 := node("n2", "a")
			n2.Delivered = tc.delivered
			in := PlanInput{Spec: tc.spec, Now: t0, Nodes: []NodeView{node("n1", "a", probeDown), n2},
				IPs: []IPView{{IP: addr, Zone: "a", Node: "n2", Held: tc.held, Generation: tc.gen}}}
			alloc := ipalloc.New()
			if err := alloc.AddSubnet("a", "subnet-a", netip.MustParsePrefix("10.0.1.0/24"), ipalloc.ReserveAWS); err != nil {
				t.Fatal(err)
			}
			if err := alloc.Claim(ipalloc.Record{IP: addr, Zone: "a", Subnet: "subnet-a", Owner: "gw", Node: "n2"}); err != nil {
				t.Fatal(err)
			}
			plan, err := PlanGateway(in, alloc)
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range plan.Zones[0].Gateways {
				if g.Node == "n2" && (g.State != tc.state || g.Reason != tc.reason) {
					t.Errorf("n2 is %s (%s), want %s (%s)", g.State, g.Reason, tc.state, tc.reason)
				}
			}
			if got := plan.Zones[0].Place[addr]; got != "n2" {
				t.Errorf("address placed on %q, want n2", got)
			}
		})
	}
}
