package coordinator

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
)

// TestListInputsReadsTheGroupOnly: a gateway reconcile reads the nodes its selector matches and
// those its status still lists (an unlabelled node, draining), not the other nodes of the
// cluster; a listed node that no longer exists is left out, not an error.
func TestListInputsReadsTheGroupOnly(t *testing.T) {
	e := newEnv(t, 2, 2, nil)
	other := e.gateway + "-other"
	e.nodes[other] = "" // cleanup deletes it
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: other, Labels: map[string]string{ZoneLabel: "z0", egressv1.LabelGateway: "another-group"}}}
	if err := server.Client.Create(e.ctx, n); err != nil {
		t.Fatal(err)
	}
	e.createGateway()
	e.settle()
	names := func() []string {
		nodes, _, err := e.c.listInputs(e.ctx, e.gatewayObj())
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, n := range nodes {
			out = append(out, n.Name)
		}
		slices.Sort(out)
		return out
	}
	var group []string
	for _, ns := range e.zones {
		group = append(group, ns...)
	}
	slices.Sort(group)
	if got := names(); !slices.Equal(got, group) {
		t.Fatalf("nodes read: %v, want the group's %v", got, group)
	}

	victim := e.egressIPs()[0].Status.Node
	e.patchNode(victim, func(x *corev1.Node) { delete(x.Labels, egressv1.LabelGateway) })
	e.settle()
	if e.stateOf(victim) != egressv1.GatewayDraining {
		t.Fatalf("unlabelled holder %s in state %q, want Draining", victim, e.stateOf(victim))
	}
	if got := names(); !slices.Equal(got, group) {
		t.Fatalf("nodes read with %s unlabelled and listed: %v, want %v", victim, got, group)
	}

	if err := server.Client.Delete(e.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: victim}}); err != nil {
		t.Fatal(err)
	}
	want := slices.DeleteFunc(slices.Clone(group), func(s string) bool { return s == victim })
	if got := names(); !slices.Equal(got, want) {
		t.Fatalf("nodes read with %s deleted: %v, want %v", victim, got, want)
	}
}
