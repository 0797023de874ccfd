package coordinator

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/agent"
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
