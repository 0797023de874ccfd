package agent

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/agent/dataplane"
)

// TestLeaseExpiredKeepsPins: a gateway failed for AgentLeaseExpired whose datapath this node's
// probes still reach stays listed, draining (its pinned flows stay, new ones go elsewhere), with
// the address it was listed with, until that address lands on an Active new holder. Zone a is
// local and PreferLocal: zone b is listed only while zone a has no gateway taking new flows.
func TestLeaseExpiredKeepsPins(t *testing.T) {
	expired := func(n gwNode) gwNode {
		n.state = egressv1.GatewayUnhealthy
		return n
	}
	withReason := func(g egressv1.EgressGateway, node, reason string) egressv1.EgressGateway {
		for zi := range g.Status.Zones {
			for i := range g.Status.Zones[zi].Gateways {
				if gs := &g.Status.Zones[zi].Gateways[i]; gs.Node == node {
					gs.Reason = reason
				}
			}
		}
		return g
	}
	standby := gwNode{"a", "gw2", "10.0.0.22", egressv1.GatewayStandby}
	addr := ip("10.0.0.200")
	// The listing before the Lease expired: gw1 holds the zone's address, gw3 another zone's.
	listed := []dataplane.Group{{ID: 7, Gateways: []dataplane.GatewayNode{gnode(gw1IP, true, addr), gnode(gw3IP, true, ip("10.0.1.200"))}}}
	kept := draining(gnode(gw1IP, true, addr))
	tests := []struct {
		name    string
		gateway egressv1.EgressGateway
		holder  string // of 10.0.0.200
		health  map[netip.Addr]bool
		listed  []dataplane.Group
		want    []dataplane.GatewayNode
	}{
		{
			name:    "the cloud has not moved the address yet: kept, draining",
			gateway: withReason(egw("out", 7, expired(gw1), standby, gw3), "gw1", egressv1.ReasonAgentLeaseExpired),
			holder:  "gw1", listed: listed,
			want: []dataplane.GatewayNode{kept, gnode(gw3IP, true, ip("10.0.1.200"))},
		},
		{
			name:    "moved (accepted), the new holder awaits its delivery proof: kept with the old address",
			gateway: withReason(egw("out", 7, expired(gw1), standby, gw3), "gw1", egressv1.ReasonAgentLeaseExpired),
			holder:  "gw2", listed: listed,
			want: []dataplane.GatewayNode{kept, gnode(gw3IP, true, ip("10.0.1.200"))},
		},
		{
			name:    "being moved (no holder): kept",
			gateway: withReason(egw("out", 7, expired(gw1), standby, gw3), "gw1", egressv1.ReasonAgentLeaseExpired),
			holder:  "", listed: listed,
			want: []dataplane.GatewayNode{kept, gnode(gw3IP, true, ip("10.0.1.200"))},
		},
		{
			name:    "kept from its own kept listing",
			gateway: withReason(egw("out", 7, expired(gw1), standby, gw3), "gw1", egressv1.ReasonAgentLeaseExpired),
			holder:  "gw2", listed: []dataplane.Group{{ID: 7, Gateways: []dataplane.GatewayNode{gnode(gw3IP, true, ip("10.0.1.200")), kept}}},
			want: []dataplane.GatewayNode{kept, gnode(gw3IP, true, ip("10.0.1.200"))},
		},
		{
			name:    "landed: the new holder is Active with it, the old one is dropped and the pins follow the address",
			gateway: withReason(egw("out", 7, expired(gw1), gw2, gw3), "gw1", egressv1.ReasonAgentLeaseExpired),
			holder:  "gw2", listed: listed,
			want: []dataplane.GatewayNode{gnode(gw2IP, true, addr)},
		},
		{
			name:    "this node's probes of it fail (rebooted, cut off): dropped at once",
			gateway: withReason(egw("out", 7, expired(gw1), standby, gw3), "gw1", egressv1.ReasonAgentLeaseExpired),
			holder:  "gw2", listed: listed, health: map[netip.Addr]bool{gw1IP: false, gw3IP: true},
			want: []dataplane.GatewayNode{gnode(gw3IP, true, ip("10.0.1.200"))},
		},
		{
			name:    "not probed (no verdict): dropped",
			gateway: withReason(egw("out", 7, expired(gw1), standby, gw3), "gw1", egressv1.ReasonAgentLeaseExpired),
			holder:  "gw2", listed: listed, health: map[netip.Addr]bool{gw3IP: true},
			want: []dataplane.GatewayNode{gnode(gw3IP, true, ip("10.0.1.200"))},
		},
		{
			name:    "not listed before (or dropped once): not taken back",
			gateway: withReason(egw("out", 7, expired(gw1), standby, gw3), "gw1", egressv1.ReasonAgentLeaseExpired),
			holder:  "gw2", listed: []dataplane.Group{{ID: 7, Gateways: []dataplane.GatewayNode{gnode(gw3IP, true, ip("10.0.1.200"))}}},
			want: []dataplane.GatewayNode{gnode(gw3IP, true, ip("10.0.1.200"))},
		},
		{
			name:    "listed before without an address: not kept",
			gateway: withReason(egw("out", 7, expired(gw1), standby, gw3), "gw1", egressv1.ReasonAgentLeaseExpired),
			holder:  "gw2", listed: []dataplane.Group{{ID: 7, Gateways: []dataplane.GatewayNode{gnode(gw1IP, true), gnode(gw3IP, true, ip("10.0.1.200"))}}},
			want: []dataplane.GatewayNode{gnode(gw3IP, true, ip("10.0.1.200"))},
		},
		{
			name:    "NodeNotReady: dropped at once, as before",
			gateway: withReason(egw("out", 7, expired(gw1), standby, gw3), "gw1", egressv1.ReasonNodeNotReady),
			holder:  "gw2", listed: listed,
			want: []dataplane.GatewayNode{gnode(gw3IP, true, ip("10.0.1.200"))},
		},
		{
			name:    "ProbeFailed: dropped at once, as before",
			gateway: withReason(egw("out", 7, expired(gw1), standby, gw3), "gw1", egressv1.ReasonProbeFailed),
			holder:  "gw1", listed: listed,
			want: []dataplane.GatewayNode{gnode(gw3IP, true, ip("10.0.1.200"))},
		},
		{
			name:    "the agent is back (Standby, its address moved away): dropped, the pins wait for the new holder",
			gateway: egw("out", 7, gwNode{"a", "gw1", "10.0.0.21", egressv1.GatewayStandby}, standby, gw3),
			holder:  "gw2", listed: []dataplane.Group{{ID: 7, Gateways: []dataplane.GatewayNode{gnode(gw3IP, true, ip("10.0.1.200")), kept}}},
			want: []dataplane.GatewayNode{gnode(gw3IP, true, ip("10.0.1.200"))},
		},
		{
			name:    "the agent is back before the move: Active again with its address",
			gateway: egw("out", 7, gw1, standby, gw3),
			holder:  "gw1", listed: []dataplane.Group{{ID: 7, Gateways: []dataplane.GatewayNode{gnode(gw3IP, true, ip("10.0.1.200")), kept}}},
			want: []dataplane.GatewayNode{gnode(gw1IP, true, addr)},
		},
		{
			name:    "one gateway per zone, nowhere to move: kept while it answers; new flows go to the other zone",
			gateway: withReason(egw("out", 7, expired(gw1), gw3), "gw1", egressv1.ReasonAgentLeaseExpired),
			holder:  "gw1", listed: listed,
			want: []dataplane.GatewayNode{kept, gnode(gw3IP, true, ip("10.0.1.200"))},
		},
		{
			name:    "the address's EgressIP is gone (released): dropped",
			gateway: withReason(egw("out", 7, expired(gw1), standby, gw3), "gw1", egressv1.ReasonAgentLeaseExpired),
			holder:  "-", listed: listed,
			want: []dataplane.GatewayNode{gnode(gw3IP, true, ip("10.0.1.200"))},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := base()
			in.Gateways = []egressv1.EgressGateway{tt.gateway}
			in.EgressIPs = []egressv1.EgressIP{eip("10.0.1.200", "out", "gw3")}
			in.EgressIPs[0].Spec.Zone = "b"
			if tt.holder != "-" {
				in.EgressIPs = append(in.EgressIPs, eip("10.0.0.200", "out", tt.holder))
			}
			in.Health = tt.health
			if in.Health == nil {
				in.Health = map[netip.Addr]bool{gw1IP: true, gw2IP: true, gw3IP: true}
			}
			in.Listed = tt.listed
			res, err := ComputeState(in)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.State.Groups) != 1 {
				t.Fatalf("groups %+v", res.State.Groups)
			}
			if diff := cmp.Diff(tt.want, res.State.Groups[0].Gateways, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("gateways (-want +got):\n%s", diff)
			}
			probed, listed := false, false
			for _, p := range res.Probes {
				probed = probed || p.Addr.Addr() == gw1IP
			}
			for _, n := range tt.want {
				listed = listed || n.NodeIP == gw1IP
			}
			if probed != listed {
				t.Errorf("gw1 probed %v, listed %v", probed, listed)
			}
		})
	}
}
