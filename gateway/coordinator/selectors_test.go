package coordinator

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
)

func TestSelectorEqual(t *testing.T) {
	in := func(key string, values ...string) metav1.LabelSelectorRequirement {
		return metav1.LabelSelectorRequirement{Key: key, Operator: metav1.LabelSelectorOpIn, Values: values}
	}
	app := func(v string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": v}}
	}
	for _, tc := range []struct {
		name string
		a, b *metav1.LabelSelector
		want bool
	}{
		{"both nil", nil, nil, true},
		{"nil selects nothing, empty everything", nil, &metav1.LabelSelector{}, false},
		{"empty and empty", &metav1.LabelSelector{}, &metav1.LabelSelector{MatchLabels: map[string]string{}}, true},
		{"same labels", app("web"), app("web"), true},
		{"label value", app("web"), app("db"), false},
		{"extra label", app("web"), &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web", "tier": "1"}}, false},
		{"same expressions", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{in("a", "x", "y")}},
			&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{in("a", "x", "y")}}, true},
		{"expression values", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{in("a", "x")}},
			&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{in("a", "x", "y")}}, false},
		{"expression operator", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{in("a", "x")}},
			&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"x"}}}}, false},
		{"expression key", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{in("a", "x")}},
			&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{in("b", "x")}}, false},
		{"labels against expression", app("web"), &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{in("app", "web")}}, false},
	} {
		if got := selectorEqual(tc.a, tc.b); got != tc.want {
			t.Errorf("%s: selectorEqual = %v, want %v", tc.name, got, tc.want)
		}
		if got := selectorEqual(tc.b, tc.a); got != tc.want {
			t.Errorf("%s (swapped): selectorEqual = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestSelectorCache: a selector is parsed once while it stays the same, again when the
// object's selector changes (in place, as an update of the cached object brings it), an
// invalid one keeps its error and matches, and forget drops every field of the object only.
func TestSelectorCache(t *testing.T) {
	var c selectorCache
	pol := types.NamespacedName{Namespace: "ns", Name: "p"}
	podKey := selectorKey{kind: kindEgressPolicy, name: pol, field: fieldPodSelector}
	nsKey := selectorKey{kind: kindEgressPolicy, name: pol, field: fieldNamespaceSelector}
	other := selectorKey{kind: kindClusterEgressPolicy, name: types.NamespacedName{Name: "p"}, field: fieldPodSelector}
	web := map[string]string{"app": "web"}
	db := map[string]string{"app": "db"}

	spec := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	first, err := c.get(podKey, spec)
	if err != nil || !first.Matches(labels.Set(web)) || first.Matches(labels.Set(db)) {
		t.Fatalf("first get: %v, %v", first, err)
	}
	if again, _ := c.get(podKey, &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}); again.String() != first.String() {
		t.Errorf("an equal selector was parsed again into %v (had %v)", again, first)
	}
	spec.MatchLabels["app"] = "db" // the cache kept its own copy
	changed, err := c.get(podKey, spec)
	if err != nil || !changed.Matches(labels.Set(db)) || changed.Matches(labels.Set(web)) {
		t.Errorf("after the selector changed: %v, %v; want app=db", changed, err)
	}

	bad := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Sometimes"}}}
	sel, err := c.get(nsKey, bad)
	if err == nil || !matches(sel, err, web) {
		t.Errorf("invalid selector: %v, %v; want an error, and matches", sel, err)
	}
	if _, err := c.get(nsKey, bad); err == nil {
		t.Errorf("invalid selector from the cache: no error")
	}
	if _, err := c.get(other, spec); err != nil {
		t.Fatal(err)
	}
	if n := c.len(); n != 3 {
		t.Errorf("%d entries, want 3", n)
	}
	c.forget(kindEgressPolicy, pol)
	if n := c.len(); n != 1 {
		t.Errorf("after forget: %d entries, want 1 (the ClusterEgressPolicy's)", n)
	}
}

func TestGatewaysOfNode(t *testing.T) {
	gw := func(name string, sel metav1.LabelSelector, listed ...string) egressv1.EgressGateway {
		g := egressv1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: egressv1.EgressGatewaySpec{NodeSelector: sel}}
		z := egressv1.ZoneStatus{Name: "z1"}
		for _, n := range listed {
			z.Gateways = append(z.Gateways, egressv1.GatewayNodeStatus{Node: n})
		}
		g.Status.Zones = []egressv1.ZoneStatus{z}
		return g
	}
	role := func(v string) metav1.LabelSelector {
		return metav1.LabelSelector{MatchLabels: map[string]string{"role": v}}
	}
	gws := []egressv1.EgressGateway{
		gw("a", role("a"), "n-old"),
		gw("b", role("b")),
		gw("all", metav1.LabelSelector{}),
		gw("bad", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "x", Operator: "Sometimes"}}}),
	}
	node := func(name string, lbls map[string]string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
	}
	for _, tc := range []struct {
		name string
		node *corev1.Node
		want []string
	}{
		{"worker: only the catch-all and the unparsable", node("w1", map[string]string{"role": "worker"}), []string{"all", "bad"}},
		{"selected by a", node("n1", map[string]string{"role": "a"}), []string{"a", "all", "bad"}},
		{"listed by a, no longer selected", node("n-old", map[string]string{"role": "worker"}), []string{"a", "all", "bad"}},
		{"selected by b", node("n2", map[string]string{"role": "b"}), []string{"b", "all", "bad"}},
	} {
		c := &Coordinator{}
		var got []string
		for _, r := range gatewaysOfNode(gws, tc.node, c.gatewaySelector) {
			got = append(got, r.Name)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: gatewaysOfNode = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := gatewaysOfNode(gws[:2], node("w1", map[string]string{"role": "worker"}), (&Coordinator{}).gatewaySelector); len(got) != 0 {
		t.Errorf("a worker node no gateway selects or lists: %v, want none", got)
	}
}
