package explain

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/agent"
)

func inputs(affinity egressv1.ZoneAffinity, health map[netip.Addr]bool) (*corev1.Pod, agent.Inputs) {
	pod := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", Labels: map[string]string{"app": "a"}},
		Spec:       corev1.PodSpec{NodeName: "w"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.5"},
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "w", Labels: map[string]string{corev1.LabelTopologyZone: "a"}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.5"}}},
	}
	gw := egressv1.EgressGateway{
		ObjectMeta: metav1.ObjectMeta{Name: "g"},
		Spec:       egressv1.EgressGatewaySpec{Zones: &egressv1.ZoneSpec{Affinity: affinity}},
		Status: egressv1.EgressGatewayStatus{GroupID: 4, Zones: []egressv1.ZoneStatus{
			{Name: "a", Gateways: []egressv1.GatewayNodeStatus{{Node: "ga", State: egressv1.GatewayDraining, UnderlayIP: "10.0.0.10"}}},
			{Name: "b", Gateways: []egressv1.GatewayNodeStatus{{Node: "gb", State: egressv1.GatewayActive, UnderlayIP: "10.0.1.10"}}},
		}},
	}
	eips := []egressv1.EgressIP{
		{Spec: egressv1.EgressIPSpec{IP: "10.0.0.20", Gateway: "g"}, Status: egressv1.EgressIPStatus{Node: "ga"}},
		{Spec: egressv1.EgressIPSpec{IP: "10.0.1.20", Gateway: "g"}, Status: egressv1.EgressIPStatus{Node: "gb", PublicIP: "192.0.2.1"}},
	}
	pol := egressv1.EgressPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pol"},
		Spec:       egressv1.EgressPolicyRule{Gateway: "g", DestinationCIDRs: []string{"0.0.0.0/0"}},
	}
	return &pod, agent.Inputs{Node: node, Pods: []corev1.Pod{pod}, Policies: []egressv1.EgressPolicy{pol},
		Gateways: []egressv1.EgressGateway{gw}, EgressIPs: eips, Health: health}
}

func TestExplainGroups(t *testing.T) {
	down := map[netip.Addr]bool{netip.MustParseAddr("10.0.0.10"): false}
	for _, tc := range []struct {
		name     string
		affinity egressv1.ZoneAffinity
		health   map[netip.Addr]bool
		used     []string
		egress   string
		note     string // in some gateway's note
	}{
		{"prefer local: a draining local zone takes no new flows, the other zone does", egressv1.AffinityPreferLocal, nil, []string{"ga", "gb"}, "10.0.1.20,192.0.2.1", "draining: keeps its established flows"},
		{"prefer local falls back when the local one is down", egressv1.AffinityPreferLocal, down, []string{"ga", "gb"}, "10.0.1.20,192.0.2.1", "unhealthy per the agent's probes"},
		{"local only keeps the dead local one", egressv1.AffinityLocalOnly, down, []string{"ga"}, "", "LocalOnly keeps the node's zone a"},
		{"any lists every zone, local first", egressv1.AffinityAny, nil, []string{"ga", "gb"}, "10.0.1.20,192.0.2.1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ex := Explain(inputs(tc.affinity, tc.health))
			if !ex.Selected || len(ex.Groups) != 1 {
				t.Fatalf("not selected: %+v", ex)
			}
			g := ex.Groups[0]
			var used, notes []string
			for _, u := range g.Used {
				used = append(used, u.Node)
				notes = append(notes, u.Note)
			}
			for _, u := range g.Unused {
				notes = append(notes, u.Note)
			}
			if strings.Join(used, ",") != strings.Join(tc.used, ",") || strings.Join(g.EgressIPs, ",") != tc.egress {
				t.Errorf("used %v egress %v, want %v %v", used, g.EgressIPs, tc.used, tc.egress)
			}
			if !strings.Contains(strings.Join(notes, "|"), tc.note) {
				t.Errorf("notes %q lack %q", notes, tc.note)
			}
			if ex.HealthAssumed != (tc.health == nil) {
				t.Errorf("HealthAssumed %v", ex.HealthAssumed)
			}
		})
	}
}

// TestExplainProblemsByObject: explain keeps the agent's problems whose object is a policy it
// considered or a gateway the pod uses, and leaves out those of other objects, even when
// their names look alike (a policy "pol" in another namespace, a gateway "g2").
func TestExplainProblemsByObject(t *testing.T) {
	pod, in := inputs(egressv1.AffinityAny, nil)
	bad := func(ns, name, gw string) egressv1.EgressPolicy {
		return egressv1.EgressPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: egressv1.EgressPolicyRule{Gateway: gw, DestinationCIDRs: []string{"198.51.100.0/24"}}}
	}
	in.Policies = append(in.Policies, bad("ns", "lost", "nope"), bad("other", "pol", "nope"))
	// A gateway with a problem of its own (a gateway node without an underlay IP) that the pod
	// uses, and one that it does not.
	in.Gateways[0].Status.Zones[1].Gateways = append(in.Gateways[0].Status.Zones[1].Gateways,
		egressv1.GatewayNodeStatus{Node: "gc", State: egressv1.GatewayActive})
	// g2 has no group id yet: the agent reports it whatever the pods, but this pod does not
	// use it.
	in.Gateways = append(in.Gateways, egressv1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: "g2"}})
	ex := Explain(pod, in)
	if !ex.Selected {
		t.Fatalf("not selected: %+v", ex)
	}
	var got []string
	for _, p := range ex.Problems {
		got = append(got, string(p.Kind)+" "+p.Object.String())
	}
	want := []string{"GatewayNotFound EgressPolicy ns/lost", "NoUnderlayIP EgressGateway g"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("problems %q, want %q", got, want)
	}
	for _, p := range ex.Problems {
		if p.Kind == agent.ProblemGatewayNotFound && (len(p.Related) != 1 || p.Related[0] != (agent.ObjectRef{Kind: "EgressGateway", Name: "nope"})) {
			t.Errorf("GatewayNotFound does not name the missing gateway: %+v", p)
		}
	}
}
