package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/cmd/egressctl/internal/explain"
	"github.com/egressd/egressd/cmd/egressctl/internal/status"
	"github.com/egressd/egressd/test/envtest"
)

// hasLine reports whether some line of out holds want, with runs of blanks compared as one.
func hasLine(out, want string) bool {
	want = strings.Join(strings.Fields(want), " ")
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(strings.Join(strings.Fields(l), " "), want) {
			return true
		}
	}
	return false
}

func expectLines(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !hasLine(out, w) {
			t.Errorf("%s: no line with %q in:\n%s", what, w, out)
		}
	}
}

// cluster writes the objects of the status and explain tests: worker-a1 in zone-a with pods of
// team-a, gateway "egress" (gw-a1 Active and gw-a2 Standby in zone-a, gw-b1 Active in zone-b),
// "restricted" (admits team-b only), "fresh" (no groupID yet), and policies that apply or do
// not for each reason.
func cluster(t *testing.T, c client.Client) {
	t.Helper()
	ctx := context.Background()
	create := func(o client.Object) {
		t.Helper()
		if err := c.Create(ctx, o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
	// withStatus creates o, then writes the status it was given through the status subresource.
	withStatus := func(o client.Object) {
		t.Helper()
		st := o.DeepCopyObject().(client.Object)
		create(o)
		st.SetResourceVersion(o.GetResourceVersion())
		if err := c.Status().Update(ctx, st); err != nil {
			t.Fatalf("writing status of %T %s: %v", o, o.GetName(), err)
		}
	}
	since := metav1.NewTime(time.Now().Add(-5 * time.Minute).Truncate(time.Second))
	cond := func(typ string, st metav1.ConditionStatus, reason string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: st, Reason: reason, Message: reason, LastTransitionTime: since}
	}

	for _, n := range []struct{ name, zone, ip string }{
		{"worker-a1", "zone-a", "10.0.1.5"}, {"gw-a1", "zone-a", "10.0.1.10"},
		{"gw-a2", "zone-a", "10.0.1.11"}, {"gw-b1", "zone-b", "10.0.2.10"},
	} {
		withStatus(&corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: map[string]string{corev1.LabelTopologyZone: n.zone}},
			Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.ip}}},
		})
	}
	create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Labels: map[string]string{"team": "a"}}})
	create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-b", Labels: map[string]string{"team": "b"}}})
	for _, p := range []struct {
		name, app, ip string
		host          bool
	}{{"web-1", "web", "10.244.1.5", false}, {"db-1", "db", "10.244.1.6", false}, {"web-pending", "web", "", false}, {"host", "web", "10.0.1.5", true}} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: p.name, Labels: map[string]string{"app": p.app}},
			Spec:       corev1.PodSpec{NodeName: "worker-a1", HostNetwork: p.host, Containers: []corev1.Container{{Name: "c", Image: "x"}}},
			Status:     corev1.PodStatus{Phase: corev1.PodPending},
		}
		if p.ip != "" {
			pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.ip, PodIPs: []corev1.PodIP{{IP: p.ip}}}
		}
		withStatus(pod)
	}

	ready, accepted := cond(egressv1.ConditionReady, metav1.ConditionTrue, egressv1.ReasonAllGatewaysHealthy), cond(egressv1.ConditionAccepted, metav1.ConditionTrue, egressv1.ReasonAccepted)
	withStatus(&egressv1.EgressGateway{
		ObjectMeta: metav1.ObjectMeta{Name: "egress"},
		Spec: egressv1.EgressGatewaySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"egress": "true"}},
			Addresses:    egressv1.EgressAddresses{Cloud: &egressv1.CloudAddresses{Provider: "aws", IPsPerZone: 1, Public: true}},
		},
		Status: egressv1.EgressGatewayStatus{
			ObservedGeneration: 1, GroupID: 1, ReadyGateways: 3,
			Conditions: []metav1.Condition{ready,
				cond(egressv1.ConditionDegraded, metav1.ConditionFalse, egressv1.ReasonAllGatewaysHealthy),
				cond(egressv1.ConditionCloudSynced, metav1.ConditionTrue, egressv1.ReasonSynced)},
			EgressIPs: []string{"10.0.1.20", "10.0.2.20", "198.51.100.20", "198.51.100.21"},
			Zones: []egressv1.ZoneStatus{
				{Name: "zone-a", Gateways: []egressv1.GatewayNodeStatus{
					{Node: "gw-a1", State: egressv1.GatewayActive, UnderlayIP: "10.0.1.10", Since: &since},
					{Node: "gw-a2", State: egressv1.GatewayStandby, UnderlayIP: "10.0.1.11", Since: &since, Reason: "Spare"},
				}, EgressIPs: []egressv1.EgressIPHolder{{IP: "10.0.1.20", PublicIP: "198.51.100.20", Node: "gw-a1"}}},
				{Name: "zone-b", Gateways: []egressv1.GatewayNodeStatus{
					{Node: "gw-b1", State: egressv1.GatewayActive, UnderlayIP: "10.0.2.10", Since: &since},
				}, EgressIPs: []egressv1.EgressIPHolder{{IP: "10.0.2.20", PublicIP: "198.51.100.21", Node: "gw-b1"}}},
			},
		},
	})
	for _, e := range []struct{ ip, zone, node, public string }{{"10.0.1.20", "zone-a", "gw-a1", "198.51.100.20"}, {"10.0.2.20", "zone-b", "gw-b1", "198.51.100.21"}} {
		withStatus(&egressv1.EgressIP{
			ObjectMeta: metav1.ObjectMeta{Name: e.ip},
			Spec:       egressv1.EgressIPSpec{IP: e.ip, Gateway: "egress", Zone: e.zone, Provider: "aws", Public: true, Node: e.node},
			Status: egressv1.EgressIPStatus{Node: e.node, PublicIP: e.public,
				Conditions: []metav1.Condition{cond(egressv1.ConditionAssigned, metav1.ConditionTrue, egressv1.ReasonAssigned)}},
		})
	}
	static := egressv1.EgressAddresses{Static: &egressv1.StaticAddresses{Pools: []egressv1.StaticPool{{Zone: "zone-a", Subnet: "10.0.1.0/24", IPs: []string{"10.0.1.30"}}}}}
	withStatus(&egressv1.EgressGateway{
		ObjectMeta: metav1.ObjectMeta{Name: "restricted"},
		Spec: egressv1.EgressGatewaySpec{NodeSelector: metav1.LabelSelector{}, Addresses: static,
			AllowedNamespaces: &egressv1.NamespaceSelection{Names: []string{"team-b"}}},
		Status: egressv1.EgressGatewayStatus{GroupID: 2},
	})
	create(&egressv1.EgressGateway{
		ObjectMeta: metav1.ObjectMeta{Name: "fresh"},
		Spec:       egressv1.EgressGatewaySpec{NodeSelector: metav1.LabelSelector{}, Addresses: static},
	})

	rule := func(sel map[string]string, gw string, dests []string, excl ...string) egressv1.EgressPolicyRule {
		return egressv1.EgressPolicyRule{PodSelector: metav1.LabelSelector{MatchLabels: sel}, Gateway: gw, DestinationCIDRs: dests, ExcludedCIDRs: excl}
	}
	withStatus(&egressv1.EgressPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "partners"},
		Spec:       rule(map[string]string{"app": "web"}, "egress", []string{"203.0.113.0/24"}, "203.0.113.128/25"),
		Status:     egressv1.EgressPolicyStatus{MatchedPods: 1, Conditions: []metav1.Condition{accepted, ready}},
	})
	withStatus(&egressv1.EgressPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "via-restricted"},
		Spec:       rule(nil, "restricted", []string{"198.51.100.0/24"}),
		Status: egressv1.EgressPolicyStatus{Conditions: []metav1.Condition{
			cond(egressv1.ConditionAccepted, metav1.ConditionFalse, egressv1.ReasonNamespaceNotAllowed),
			cond(egressv1.ConditionReady, metav1.ConditionFalse, egressv1.ReasonNamespaceNotAllowed)}},
	})
	create(&egressv1.EgressPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "db-out"},
		Spec:       rule(map[string]string{"app": "db"}, "fresh", []string{"0.0.0.0/0"}),
	})
	create(&egressv1.EgressPolicy{ // another namespace: never considered for team-a pods
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-b", Name: "elsewhere"},
		Spec:       rule(nil, "egress", []string{"0.0.0.0/0"}),
	})
	create(&egressv1.ClusterEgressPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "missing-gw"},
		Spec:       egressv1.ClusterEgressPolicySpec{EgressPolicyRule: rule(nil, "nope", []string{"192.0.2.0/24"})},
	})
	create(&egressv1.ClusterEgressPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "team-b-only"},
		Spec: egressv1.ClusterEgressPolicySpec{NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": "b"}},
			EgressPolicyRule: rule(nil, "egress", []string{"10.99.0.0/16"})},
	})
}

func TestStatusAndExplain(t *testing.T) {
	s := envtest.Start(t)
	cluster(t, s.Client)
	kc := "--kubeconfig=" + s.Kubeconfig

	t.Run("status", func(t *testing.T) {
		code, out, errOut := run(t, "", "status", kc)
		if code != ExitOK {
			t.Fatalf("code %d: %s", code, errOut)
		}
		t.Logf("egressctl status:\n%s", out)
		expectLines(t, "status", out,
			"EgressGateway egress (ActiveActive, PreferLocal, group 1, 3 ready)",
			"Ready True AllGatewaysHealthy 5m",
			"Degraded False AllGatewaysHealthy",
			"CloudSynced True Synced",
			"Egress IPs: 10.0.1.20, 10.0.2.20, 198.51.100.20, 198.51.100.21",
			"zone-a gw-a1 Active 5m 10.0.1.10",
			"zone-a gw-a2 Standby 5m 10.0.1.11 Spare",
			"zone-b gw-b1 Active 5m 10.0.2.10",
			"zone-a 10.0.1.20 198.51.100.20 gw-a1 True",
			"zone-b 10.0.2.20 198.51.100.21 gw-b1 True",
			"EgressPolicy team-a/partners True True 1",
			"EgressPolicy team-b/elsewhere Unknown Unknown 0",
			"ClusterEgressPolicy team-b-only",
			"EgressGateway fresh (ActiveActive, PreferLocal, no group id yet, 0 ready)",
			"Ready Unknown NotReported",
			"EgressPolicy team-a/via-restricted False False 0 NamespaceNotAllowed",
			"Policies whose EgressGateway does not exist:",
			"ClusterEgressPolicy missing-gw nope Unknown",
		)

		code, out, _ = run(t, "", "status", "egress", kc)
		if code != ExitOK || strings.Contains(out, "restricted") || !hasLine(out, "EgressGateway egress") || strings.Contains(out, "missing-gw") {
			t.Errorf("status egress: code %d\n%s", code, out)
		}
		if code, _, errOut := run(t, "", "status", "nope", kc); code != ExitFailure || !strings.Contains(errOut, `EgressGateway "nope" not found`) {
			t.Errorf("status nope: code %d %s", code, errOut)
		}

		code, out, _ = run(t, "", "status", "egress", "-o", "json", kc)
		var rep status.Report
		if err := json.Unmarshal([]byte(out), &rep); code != ExitOK || err != nil || len(rep.Gateways) != 1 {
			t.Fatalf("status -o json: code %d, %v\n%s", code, err, out)
		}
		g := rep.Gateways[0]
		if g.GroupID != 1 || len(g.Zones) != 2 || g.Zones[0].EgressIPs[0].Holder != "gw-a1" || g.Zones[0].EgressIPs[0].PublicIP != "198.51.100.20" ||
			len(g.Policies) != 3 || g.Conditions[0].Reason != egressv1.ReasonAllGatewaysHealthy {
			t.Errorf("status -o json: %+v", g)
		}
		code, out, _ = run(t, "", "status", "-o", "yaml", kc)
		if code != ExitOK || !strings.Contains(out, "underlayIP: 10.0.1.10") || !strings.Contains(out, "orphanPolicies:") {
			t.Errorf("status -o yaml: code %d\n%s", code, out)
		}
	})

	t.Run("explain", func(t *testing.T) {
		code, out, errOut := run(t, "", "explain", "web-1", "-n", "team-a", kc)
		if code != ExitOK {
			t.Fatalf("code %d: %s", code, errOut)
		}
		t.Logf("egressctl explain web-1 -n team-a:\n%s", out)
		expectLines(t, "explain web-1", out,
			"Pod team-a/web-1 (10.244.1.5) on node worker-a1, zone zone-a",
			"Policy: EgressPolicy team-a/partners -> EgressGateway egress",
			"203.0.113.0/24 egress 1 EgressPolicy team-a/partners",
			"203.0.113.128/25 excluded (leaves with the node IP) -",
			"Gateway group egress (group 1, ActiveActive, PreferLocal), as node worker-a1 uses it:",
			"gw-a1 zone-a Active 10.0.1.10 assumed 10.0.1.20 198.51.100.20",
			"gw-a2 zone-a Standby 10.0.1.11 - - - not used: Standby",
			"gw-b1 zone-b Active 10.0.2.10 - - - not used: zone zone-b: PreferLocal uses zone zone-a while one of its gateways takes new flows",
			"Egress IPs: traffic leaves with 10.0.1.20, 198.51.100.20",
			"assumed healthy",
			"yes EgressPolicy team-a/partners egress 0 selects the pod",
			"no EgressPolicy team-a/db-out fresh 0 podSelector does not match the pod's labels",
			"no EgressPolicy team-a/via-restricted restricted 0 EgressGateway restricted does not admit namespace team-a (allowedNamespaces)",
			"no ClusterEgressPolicy missing-gw nope 0 EgressGateway nope does not exist",
			"no ClusterEgressPolicy team-b-only egress 0 namespaceSelector does not match namespace team-a",
		)
		if strings.Contains(out, "elsewhere") {
			t.Errorf("explain web-1 lists team-b's policy:\n%s", out)
		}

		// db-1: no policy applies; one because its gateway has no groupID yet.
		code, out, _ = run(t, "", "explain", "team-a/db-1", kc)
		t.Logf("egressctl explain team-a/db-1:\n%s", out)
		expectLines(t, "explain db-1", out,
			"Not steered: no policy applies to the pod",
			"no EgressPolicy team-a/db-out fresh 0 EgressGateway fresh has no groupID yet (the coordinator assigns it)",
			"no EgressPolicy team-a/partners egress 0 podSelector does not match",
		)
		if code != ExitOK {
			t.Errorf("explain db-1: code %d", code)
		}

		_, out, _ = run(t, "", "explain", "pod/web-pending", "--namespace", "team-a", kc)
		expectLines(t, "explain web-pending", out, "Not steered: the pod has no IP yet")
		_, out, _ = run(t, "", "explain", "host", "-n", "team-a", kc)
		expectLines(t, "explain host", out, "Not steered: the pod uses the host network")
		if code, _, errOut := run(t, "", "explain", "ghost", "-n", "team-a", kc); code != ExitFailure || !strings.Contains(errOut, "pod team-a/ghost not found") {
			t.Errorf("explain ghost: code %d %s", code, errOut)
		}

		code, out, _ = run(t, "", "explain", "web-1", "-n", "team-a", "-o", "json", kc)
		var ex explain.Explanation
		if err := json.Unmarshal([]byte(out), &ex); code != ExitOK || err != nil {
			t.Fatalf("explain -o json: code %d, %v\n%s", code, err, out)
		}
		if !ex.Selected || len(ex.Groups) != 1 || len(ex.Groups[0].Used) != 1 || ex.Groups[0].Used[0].EgressIPv4 != "10.0.1.20" || !ex.HealthAssumed {
			t.Errorf("explain -o json: %+v", ex)
		}

		// The local gateway turns Unhealthy: PreferLocal falls back to zone-b.
		var gw egressv1.EgressGateway
		if err := s.Client.Get(context.Background(), client.ObjectKey{Name: "egress"}, &gw); err != nil {
			t.Fatal(err)
		}
		gw.Status.Zones[0].Gateways[0].State = egressv1.GatewayUnhealthy
		gw.Status.Zones[0].Gateways[0].Reason = "ProbeFailed"
		meta.SetStatusCondition(&gw.Status.Conditions, metav1.Condition{Type: egressv1.ConditionDegraded, Status: metav1.ConditionTrue, Reason: egressv1.ReasonSomeGatewaysDown, Message: "gw-a1 unhealthy"})
		if err := s.Client.Status().Update(context.Background(), &gw); err != nil {
			t.Fatal(err)
		}
		_, out, _ = run(t, "", "explain", "web-1", "-n", "team-a", kc)
		expectLines(t, "explain web-1 after gw-a1 failed", out,
			"gw-b1 zone-b Active 10.0.2.10 assumed 10.0.2.20 198.51.100.21",
			"gw-a1 zone-a Unhealthy 10.0.1.10 - - - not used: Unhealthy per the coordinator (ProbeFailed)",
			"Egress IPs: traffic leaves with 10.0.2.20, 198.51.100.21",
		)
		_, out, _ = run(t, "", "status", "egress", kc)
		expectLines(t, "status after gw-a1 failed", out, "Degraded True SomeGatewaysUnhealthy", "zone-a gw-a1 Unhealthy")
	})

	t.Run("kubeconfig", func(t *testing.T) {
		t.Setenv("KUBECONFIG", s.Kubeconfig)
		if code, out, errOut := run(t, "", "status", "fresh"); code != ExitOK || !hasLine(out, "EgressGateway fresh") {
			t.Errorf("status with $KUBECONFIG: code %d %s %s", code, out, errOut)
		}
		if code, _, errOut := run(t, "", "status", "--context", "no-such-context"); code != ExitFailure || !strings.Contains(errOut, "no-such-context") {
			t.Errorf("status --context no-such-context: code %d %s", code, errOut)
		}
	})
}
