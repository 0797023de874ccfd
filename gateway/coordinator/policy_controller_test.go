package coordinator

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/agent"
	"github.com/egressd/egressd/gateway/contract"
)

// TestMatchedPodsCountsWhatTheAgentSteers: a policy's status.matchedPods counts exactly the
// selected pods the agent on their node steers. A host-network pod, a finished one and one
// without an IP are selected by labels but never steered, so they do not count. (The count
// included host-network pods while the agent left them out.)
func TestMatchedPodsCountsWhatTheAgentSteers(t *testing.T) {
	e := newEnv(t, 1, 1, nil)
	gw := e.createGateway()
	gw.Status.GroupID = 7 // the agent needs a group id; the planner is not under test here
	ns := "default"
	pol := &egressv1.EgressPolicy{ObjectMeta: metav1.ObjectMeta{Name: e.gateway, Namespace: ns}, Spec: egressv1.EgressPolicyRule{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": e.gateway}}, DestinationCIDRs: []string{"203.0.113.0/24"}, Gateway: e.gateway}}
	if err := server.Client.Create(e.ctx, pol); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Client.Delete(context.Background(), pol) })

	node := ""
	for n := range e.nodes {
		node = n
	}
	var pods []corev1.Pod
	for i, c := range []struct {
		hostNetwork bool
		phase       corev1.PodPhase
		ip          string
	}{
		{phase: corev1.PodRunning, ip: "10.244.0.5"},
		{phase: corev1.PodRunning, ip: "10.244.0.6"},
		{phase: corev1.PodRunning, ip: e.ips[node].String(), hostNetwork: true},
		{phase: corev1.PodSucceeded, ip: "10.244.0.7"},
		{phase: corev1.PodPending},
	} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", e.gateway, i), Namespace: ns, Labels: map[string]string{"app": e.gateway}},
			Spec: corev1.PodSpec{NodeName: node, HostNetwork: c.hostNetwork, Containers: []corev1.Container{{Name: "c", Image: "monitor"}}}}
		if err := server.Client.Create(e.ctx, pod); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = server.Client.Delete(context.Background(), pod) })
		pod.Status = corev1.PodStatus{Phase: c.phase, PodIP: c.ip}
		if c.ip != "" {
			pod.Status.PodIPs = []corev1.PodIP{{IP: c.ip}}
		}
		if err := server.Client.Status().Update(e.ctx, pod); err != nil {
			t.Fatal(err)
		}
		pods = append(pods, *pod)
	}

	if _, err := (PolicyReconciler{Coordinator: e.c}).Reconcile(e.ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(pol)}); err != nil {
		t.Fatal(err)
	}
	if err := server.Client.Get(e.ctx, client.ObjectKeyFromObject(pol), pol); err != nil {
		t.Fatal(err)
	}

	// What the agent on the node steers, from the same objects.
	var nsObj corev1.Namespace
	if err := server.Client.Get(e.ctx, client.ObjectKey{Name: ns}, &nsObj); err != nil {
		t.Fatal(err)
	}
	var n corev1.Node
	if err := server.Client.Get(e.ctx, client.ObjectKey{Name: node}, &n); err != nil {
		t.Fatal(err)
	}
	res, err := agent.ComputeState(agent.Inputs{Node: &n, Pods: pods, Namespaces: []corev1.Namespace{nsObj},
		Policies: []egressv1.EgressPolicy{*pol}, Gateways: []egressv1.EgressGateway{*gw}})
	if err != nil {
		t.Fatal(err)
	}
	steered := 0
	for _, p := range res.State.Pods {
		if p.PolicySet != 0 {
			steered++
		}
	}
	if steered != 2 {
		t.Fatalf("the agent steers %d of the pods, want the 2 running pods with their own IP (%+v)", steered, res.State.Pods)
	}
	if pol.Status.MatchedPods != int32(steered) {
		t.Errorf("status.matchedPods %d, but the agent steers %d of the selected pods", pol.Status.MatchedPods, steered)
	}
}

// TestPrefixBudgetCondition: the policy that does not fit its namespace's prefix budget (or, for
// a ClusterEgressPolicy, the cluster's) is Accepted=False with PrefixBudgetExceeded, a message
// giving the use, the budget and its need, and an Event; the others, and another namespace
// at its full budget, are Accepted=True. The agent skips exactly the policies the coordinator
// refuses. Deleting an older policy makes room.
func TestPrefixBudgetCondition(t *testing.T) {
	e := newEnv(t, 1, 1, nil)
	e.cfg.PolicyPrefixBudget.Cluster = 3 // the namespaces keep the default, 128
	e.restart()
	gw := e.createGateway()
	cidrs := func(block, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("10.%d.%d.0/24", block, i)
		}
		return out
	}
	tenant, other := e.gateway+"-a", e.gateway+"-b"
	ensureNamespace(t, tenant)
	ensureNamespace(t, other)
	create := func(o client.Object) {
		t.Helper()
		if err := server.Client.Create(e.ctx, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = server.Client.Delete(context.Background(), o) })
	}
	epol := func(ns, name string, dests, excl []string) *egressv1.EgressPolicy {
		p := &egressv1.EgressPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: egressv1.EgressPolicyRule{
			PodSelector: metav1.LabelSelector{}, DestinationCIDRs: dests, ExcludedCIDRs: excl, Gateway: e.gateway}}
		create(p)
		return p
	}
	cpol := func(name string, dests []string) *egressv1.ClusterEgressPolicy {
		p := &egressv1.ClusterEgressPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: egressv1.ClusterEgressPolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: tenant}},
			EgressPolicyRule:  egressv1.EgressPolicyRule{PodSelector: metav1.LabelSelector{}, DestinationCIDRs: dests, Gateway: e.gateway}}}
		create(p)
		return p
	}
	// Created oldest first; names in the same order, for ties within a second. p1 holds 104
	// (64 destinations, 40 exclusions), p2 needs 30 more than the 24 left, p3 fits them.
	p1 := epol(tenant, "p1", cidrs(1, 64), cidrs(1, 40))
	p2 := epol(tenant, "p2", cidrs(2, 30), nil)
	p3 := epol(tenant, "p3", cidrs(3, 24), nil)
	full := epol(other, "p1", cidrs(4, 64), cidrs(4, 64))
	c1 := cpol(e.gateway+"-c1", cidrs(5, 2))
	c2 := cpol(e.gateway+"-c2", cidrs(6, 2))

	reconcile := func(o client.Object, cluster bool) (accepted, ready metav1.Condition) {
		t.Helper()
		if _, err := (PolicyReconciler{Coordinator: e.c, Cluster: cluster}).Reconcile(e.ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(o)}); err != nil {
			t.Fatal(err)
		}
		if err := server.Client.Get(e.ctx, client.ObjectKeyFromObject(o), o); err != nil {
			t.Fatal(err)
		}
		var st egressv1.EgressPolicyStatus
		switch p := o.(type) {
		case *egressv1.EgressPolicy:
			st = p.Status
		case *egressv1.ClusterEgressPolicy:
			st = p.Status
		}
		return cond(st.Conditions, egressv1.ConditionAccepted), cond(st.Conditions, egressv1.ConditionReady)
	}
	for _, c := range []struct {
		obj     client.Object
		cluster bool
		refused string // the message, when refused
	}{
		{obj: p1}, {obj: p3}, {obj: full}, {obj: c1, cluster: true},
		{obj: p2, refused: "needs 30 prefixes (destinationCIDRs plus excludedCIDRs) but namespace " + tenant +
			" may hold 128, and the policies created before it use 104 (128 with those admitted after it); not steered"},
		{obj: c2, cluster: true, refused: "needs 2 prefixes (destinationCIDRs plus excludedCIDRs) but the ClusterEgressPolicies may hold 3, and the policies created before it use 2 (2 with those admitted after it); not steered"},
	} {
		acc, ready := reconcile(c.obj, c.cluster)
		if c.refused == "" {
			if acc.Status != metav1.ConditionTrue || acc.Reason != egressv1.ReasonAccepted {
				t.Errorf("%s/%s: Accepted %+v, want True", c.obj.GetNamespace(), c.obj.GetName(), acc)
			}
			continue
		}
		if acc.Status != metav1.ConditionFalse || acc.Reason != egressv1.ReasonPrefixBudgetExceeded || acc.Message != c.refused {
			t.Errorf("%s/%s: Accepted %+v, want False/%s %q", c.obj.GetNamespace(), c.obj.GetName(), acc, egressv1.ReasonPrefixBudgetExceeded, c.refused)
		}
		if ready.Status != metav1.ConditionFalse || ready.Reason != egressv1.ReasonPrefixBudgetExceeded {
			t.Errorf("%s/%s: Ready %+v, want False/%s", c.obj.GetNamespace(), c.obj.GetName(), ready, egressv1.ReasonPrefixBudgetExceeded)
		}
		expectEvent(t, e, egressv1.ReasonPrefixBudgetExceeded)
	}

	// The agent, from the same objects, skips exactly the refused ones.
	var pols egressv1.EgressPolicyList
	var cpols egressv1.ClusterEgressPolicyList
	var nss corev1.NamespaceList
	for _, l := range []client.ObjectList{&pols, &cpols, &nss} {
		if err := server.Client.List(e.ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	var n corev1.Node
	for name := range e.nodes {
		if err := server.Client.Get(e.ctx, client.ObjectKey{Name: name}, &n); err != nil {
			t.Fatal(err)
		}
	}
	gw.Status.GroupID = 7
	res, err := agent.ComputeState(agent.Inputs{Node: &n, Namespaces: nss.Items, Policies: pols.Items, ClusterPolicies: cpols.Items,
		Gateways: []egressv1.EgressGateway{*gw}, PrefixBudget: e.cfg.PolicyPrefixBudget})
	if err != nil {
		t.Fatal(err)
	}
	var skipped []string
	for _, p := range res.Problems {
		if p.Kind == agent.ProblemPrefixBudgetExceeded && (p.Object.Namespace == tenant || p.Object.Namespace == other || strings.HasPrefix(p.Object.Name, e.gateway)) {
			skipped = append(skipped, p.Object.String())
		}
	}
	if want := []string{"EgressPolicy " + tenant + "/p2", "ClusterEgressPolicy " + c2.Name}; !slices.Equal(skipped, want) {
		t.Errorf("the agent skips %v, want %v", skipped, want)
	}

	// Deleting the oldest policy frees its prefixes: p2 fits now.
	if err := server.Client.Delete(e.ctx, p1); err != nil {
		t.Fatal(err)
	}
	if acc, _ := reconcile(p2, false); acc.Status != metav1.ConditionTrue {
		t.Errorf("p2 after p1 was deleted: Accepted %+v, want True", acc)
	}
}

func TestPolicyPrefixBudgetConfig(t *testing.T) {
	c, err := ParseConfig([]byte("clusterName: c1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.PolicyPrefixBudget != (contract.PrefixBudget{Namespace: contract.DefaultNamespacePrefixBudget, Cluster: contract.DefaultClusterPrefixBudget}) {
		t.Errorf("default budget %+v", c.PolicyPrefixBudget)
	}
	if c, err = ParseConfig([]byte("clusterName: c1\npolicyPrefixBudget: {namespace: 500}\n")); err != nil || c.PolicyPrefixBudget.Namespace != 500 || c.PolicyPrefixBudget.Cluster != contract.DefaultClusterPrefixBudget {
		t.Errorf("budget %+v, %v; want namespace 500, cluster the default", c.PolicyPrefixBudget, err)
	}
	for _, bad := range []string{"policyPrefixBudget: {namespace: -1}", "policyPrefixBudget: {nammespace: 5}"} {
		if _, err := ParseConfig([]byte("clusterName: c1\n" + bad + "\n")); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
