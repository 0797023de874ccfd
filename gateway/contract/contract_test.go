package contract

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
)

func TestUnderlayIP(t *testing.T) {
	addr := func(typ corev1.NodeAddressType, a string) corev1.NodeAddress {
		return corev1.NodeAddress{Type: typ, Address: a}
	}
	for _, c := range []struct {
		name  string
		addrs []corev1.NodeAddress
		want  string // empty: none
	}{
		{"ipv4 internal", []corev1.NodeAddress{addr(corev1.NodeInternalIP, "10.0.0.5")}, "10.0.0.5"},
		// The coordinator used to skip these (ip.Is4 is false for ::ffff:a.b.c.d) while the agent
		// unmapped them: the node's own agent and the coordinator disagreed on its address.
		{"ipv4-mapped ipv6 is unmapped", []corev1.NodeAddress{addr(corev1.NodeInternalIP, "::ffff:10.0.0.6")}, "10.0.0.6"},
		{"ipv6 first, ipv4 second", []corev1.NodeAddress{addr(corev1.NodeInternalIP, "fd00::5"), addr(corev1.NodeInternalIP, "10.0.0.7")}, "10.0.0.7"},
		{"external and hostname are not underlay", []corev1.NodeAddress{addr(corev1.NodeExternalIP, "198.51.100.1"), addr(corev1.NodeHostName, "n1")}, ""},
		{"ipv6 only", []corev1.NodeAddress{addr(corev1.NodeInternalIP, "fd00::5")}, ""},
		{"garbage", []corev1.NodeAddress{addr(corev1.NodeInternalIP, "not-an-ip"), addr(corev1.NodeInternalIP, "10.0.0.8")}, "10.0.0.8"},
		{"none", nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := UnderlayIP(&corev1.Node{Status: corev1.NodeStatus{Addresses: c.addrs}})
			if c.want == "" {
				if got.IsValid() {
					t.Fatalf("underlay %s, want none", got)
				}
				return
			}
			if got != netip.MustParseAddr(c.want) {
				t.Fatalf("underlay %s, want %s", got, c.want)
			}
		})
	}
}

func TestSteerable(t *testing.T) {
	pod := func(hostNetwork bool, phase corev1.PodPhase, podIP string, podIPs ...string) *corev1.Pod {
		p := &corev1.Pod{Spec: corev1.PodSpec{HostNetwork: hostNetwork}, Status: corev1.PodStatus{Phase: phase, PodIP: podIP}}
		for _, ip := range podIPs {
			p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
		}
		return p
	}
	for _, c := range []struct {
		name string
		pod  *corev1.Pod
		want bool
	}{
		{"running with an ip", pod(false, corev1.PodRunning, "10.244.0.5", "10.244.0.5"), true},
		{"pending with an ip", pod(false, corev1.PodPending, "10.244.0.5"), true},
		{"podIPs only", pod(false, corev1.PodRunning, "", "fd44::5"), true},
		{"host network", pod(true, corev1.PodRunning, "10.0.0.5", "10.0.0.5"), false},
		{"succeeded", pod(false, corev1.PodSucceeded, "10.244.0.5"), false},
		{"failed", pod(false, corev1.PodFailed, "10.244.0.5"), false},
		{"no ip yet", pod(false, corev1.PodPending, ""), false},
		{"unparsable ip", pod(false, corev1.PodRunning, "x"), false},
	} {
		if got := Steerable(c.pod); got != c.want {
			t.Errorf("%s: Steerable %v, want %v", c.name, got, c.want)
		}
	}
	p := pod(false, corev1.PodRunning, "::ffff:10.244.0.9", "::ffff:10.244.0.9", "fd44::9")
	if got := PodIPs(p); len(got) != 2 || got[0] != netip.MustParseAddr("10.244.0.9") || got[1] != netip.MustParseAddr("fd44::9") {
		t.Errorf("PodIPs %v, want unmapped 10.244.0.9 and fd44::9 once each", got)
	}
}

func TestNamespaceAdmitted(t *testing.T) {
	team := map[string]string{"team": "a", corev1.LabelMetadataName: "x"}
	for _, c := range []struct {
		name    string
		sel     *egressv1.NamespaceSelection
		ns      string
		labels  map[string]string
		want    bool
		wantErr bool
	}{
		{"unset admits all", nil, "x", nil, true, false},
		{"by name", &egressv1.NamespaceSelection{Names: []string{"y", "x"}}, "x", nil, true, false},
		{"name not listed", &egressv1.NamespaceSelection{Names: []string{"y"}}, "x", team, false, false},
		{"by selector", &egressv1.NamespaceSelection{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}}, "x", team, true, false},
		{"selector does not match", &egressv1.NamespaceSelection{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "b"}}}, "x", team, false, false},
		{"name or selector", &egressv1.NamespaceSelection{Names: []string{"x"}, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "b"}}}, "x", team, true, false},
		{"bad selector admits nothing", &egressv1.NamespaceSelection{Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Nope"}}}}, "x", team, false, true},
	} {
		got, err := NamespaceAdmitted(c.sel, c.ns, c.labels)
		if got != c.want || (err != nil) != c.wantErr {
			t.Errorf("%s: admitted %v, err %v; want %v, error %v", c.name, got, err, c.want, c.wantErr)
		}
	}
}

func TestProbeTargetAndSpecDefaults(t *testing.T) {
	addr := netip.MustParseAddrPort("10.0.0.1:8743")
	d := ProbeTarget(addr, nil)
	if d.Addr != addr || d.Interval != 100*time.Millisecond || d.FailureThreshold != 3 || d.Timeout != 0 {
		t.Errorf("default probe target %+v", d)
	}
	h := &egressv1.HealthSpec{Interval: &metav1.Duration{Duration: 50 * time.Millisecond}, Timeout: &metav1.Duration{Duration: 20 * time.Millisecond}, FailureThreshold: 2}
	if got := ProbeTarget(addr, h); got.Interval != 50*time.Millisecond || got.Timeout != 20*time.Millisecond || got.FailureThreshold != 2 {
		t.Errorf("probe target %+v from %+v", got, h)
	}
	if got := ProbeTarget(addr, &egressv1.HealthSpec{}); got != d {
		t.Errorf("an empty health spec gives %+v, want the defaults %+v", got, d)
	}

	var spec egressv1.EgressGatewaySpec
	if ZoneAffinity(&spec) != egressv1.AffinityPreferLocal || Mode(&spec) != egressv1.ModeActiveActive || DrainGracePeriod(&spec) != 30*time.Second {
		t.Errorf("defaults of an empty spec: %s %s %s", ZoneAffinity(&spec), Mode(&spec), DrainGracePeriod(&spec))
	}
	spec = egressv1.EgressGatewaySpec{Mode: egressv1.ModeActiveStandby, Zones: &egressv1.ZoneSpec{Affinity: egressv1.AffinityAny},
		DrainGracePeriod: &metav1.Duration{Duration: time.Minute}}
	if ZoneAffinity(&spec) != egressv1.AffinityAny || Mode(&spec) != egressv1.ModeActiveStandby || DrainGracePeriod(&spec) != time.Minute {
		t.Errorf("set values not kept: %s %s %s", ZoneAffinity(&spec), Mode(&spec), DrainGracePeriod(&spec))
	}
	if AgentLeaseName("n1") != "egressd-agent-n1" {
		t.Errorf("lease name %q", AgentLeaseName("n1"))
	}
}

func TestAdmit(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	at := func(s int) metav1.Time { return metav1.NewTime(t0.Add(time.Duration(s) * time.Second)) }
	pol := func(name string, created, prefixes int) BudgetedPolicy {
		return BudgetedPolicy{Name: name, Created: at(created), Prefixes: prefixes}
	}
	for _, c := range []struct {
		name     string
		pols     []BudgetedPolicy
		budget   int
		rejected map[string]int // name → used before it
		used     int
	}{
		{"all fit", []BudgetedPolicy{pol("a", 0, 3), pol("b", 1, 5)}, 8, nil, 8},
		{"exactly the budget fits", []BudgetedPolicy{pol("a", 0, 8)}, 8, nil, 8},
		{"oldest first, whatever the input order", []BudgetedPolicy{pol("new", 2, 5), pol("old", 1, 5)}, 8, map[string]int{"new": 5}, 5},
		{"first fit: a later smaller one still fits", []BudgetedPolicy{pol("a", 0, 5), pol("big", 1, 4), pol("small", 2, 3)}, 8,
			map[string]int{"big": 5}, 8},
		{"rejected whole, not in part", []BudgetedPolicy{pol("a", 0, 6), pol("b", 1, 3)}, 8, map[string]int{"b": 6}, 6},
		{"one larger than the budget alone", []BudgetedPolicy{pol("huge", 0, 9), pol("b", 1, 8)}, 8, map[string]int{"huge": 0}, 8},
		{"same creation second: by name", []BudgetedPolicy{pol("b", 0, 5), pol("a", 0, 5)}, 8, map[string]int{"b": 5}, 5},
		{"name breaks ties only", []BudgetedPolicy{pol("a", 1, 5), pol("z", 0, 5)}, 8, map[string]int{"a": 5}, 5},
		{"an empty policy always fits", []BudgetedPolicy{pol("a", 0, 8), pol("b", 1, 0)}, 8, nil, 8},
		{"none", nil, 8, nil, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := Admit("namespace x", c.pols, c.budget)
			if a.Used != c.used || a.Budget != c.budget || len(a.Rejected) != len(c.rejected) {
				t.Fatalf("used %d of %d, rejected %v; want used %d, rejected %v", a.Used, a.Budget, a.Rejected, c.used, c.rejected)
			}
			for name, before := range c.rejected {
				if got, ok := a.Rejected[name]; !ok || got != before || a.Admits(name) {
					t.Errorf("%s: rejected %v with %d used before it (admits %v); want rejected with %d", name, ok, got, a.Admits(name), before)
				}
			}
			for _, p := range c.pols {
				if _, rejected := c.rejected[p.Name]; !rejected && !a.Admits(p.Name) {
					t.Errorf("%s rejected, want admitted", p.Name)
				}
			}
		})
	}
	a := Admit("namespace x", []BudgetedPolicy{pol("a", 0, 100), pol("b", 1, 40)}, 128)
	if got, want := a.Refusal("b", 40), "needs 40 prefixes (destinationCIDRs plus excludedCIDRs) but namespace x may hold 128, and the policies created before it use 100 (100 with those admitted after it); not steered"; got != want {
		t.Errorf("refusal %q, want %q", got, want)
	}
}

func TestAdmitPolicies(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC))
	cidrs := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("198.51.%d.0/24", i)
		}
		return out
	}
	ep := func(ns, name string, dests, excl int) egressv1.EgressPolicy {
		return egressv1.EgressPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: t0},
			Spec: egressv1.EgressPolicyRule{DestinationCIDRs: cidrs(dests), ExcludedCIDRs: cidrs(excl)}}
	}
	// Each namespace has its own budget: b's full use leaves a's alone, and a's over-budget
	// policy is rejected in a only. Destinations and exclusions both count.
	got := AdmitEgressPolicies([]egressv1.EgressPolicy{
		ep("a", "p1", 60, 10), ep("b", "p1", 64, 64), ep("a", "p2", 64, 0), ep("a", "p3", 30, 28),
	}, PrefixBudget{})
	if len(got) != 2 || got["b"].Used != 128 || !got["b"].Admits("p1") || got["b"].Scope != "namespace b" {
		t.Errorf("namespace b: %+v", got["b"])
	}
	if a := got["a"]; a.Budget != DefaultNamespacePrefixBudget || a.Used != 128 || !a.Admits("p1") || a.Admits("p2") || !a.Admits("p3") || a.Rejected["p2"] != 70 {
		t.Errorf("namespace a: %+v; want p1 (70) and p3 (58) admitted, p2 (64) rejected after 70", a)
	}
	if got := AdmitEgressPolicies([]egressv1.EgressPolicy{ep("a", "p1", 3, 0), ep("a", "p2", 3, 0)}, PrefixBudget{Namespace: 5}); got["a"].Admits("p2") || got["a"].Budget != 5 {
		t.Errorf("a budget of 5: %+v", got["a"])
	}

	cp := func(name string, dests int) egressv1.ClusterEgressPolicy {
		return egressv1.ClusterEgressPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: t0},
			Spec: egressv1.ClusterEgressPolicySpec{EgressPolicyRule: egressv1.EgressPolicyRule{DestinationCIDRs: cidrs(dests)}}}
	}
	c := AdmitClusterEgressPolicies([]egressv1.ClusterEgressPolicy{cp("c2", 10), cp("c1", 64), cp("c3", 64)}, PrefixBudget{Namespace: 1})
	if c.Budget != DefaultClusterPrefixBudget || c.Used != 74 || !c.Admits("c1") || !c.Admits("c2") || c.Admits("c3") || c.Scope != "the ClusterEgressPolicies" {
		t.Errorf("cluster: %+v; want c1 and c2 admitted (the namespace budget does not apply), c3 rejected", c)
	}
}

func TestPrefixBudgetDefaults(t *testing.T) {
	if got := (PrefixBudget{}).WithDefaults(); got != (PrefixBudget{Namespace: 128, Cluster: 128}) {
		t.Errorf("defaults %+v", got)
	}
	if got := (PrefixBudget{Namespace: 7}).WithDefaults(); got != (PrefixBudget{Namespace: 7, Cluster: 128}) {
		t.Errorf("a set field is kept: %+v", got)
	}
	if err := (PrefixBudget{}).Validate(); err != nil {
		t.Error(err)
	}
	for _, b := range []PrefixBudget{{Namespace: -1}, {Cluster: -1}} {
		if err := b.Validate(); err == nil {
			t.Errorf("%+v: no error", b)
		}
	}
}

func TestPrivateDestinations(t *testing.T) {
	got, bad := PrivateDestinations(nil)
	if len(got) != len(egressv1.DefaultPrivateCIDRs) || len(bad) != 0 {
		t.Fatalf("defaults: %v (bad %v), want the %d of DefaultPrivateCIDRs", got, bad, len(egressv1.DefaultPrivateCIDRs))
	}
	for _, c := range []struct {
		addr    string
		private bool
	}{{"10.1.2.3", true}, {"172.31.0.1", true}, {"100.127.255.255", true}, {"100.128.0.1", false},
		{"35.191.0.1", false}, {"8.8.8.8", false}, {"198.19.0.1", true}, {"198.20.0.1", false}} {
		in := false
		for _, p := range got {
			in = in || p.Contains(netip.MustParseAddr(c.addr))
		}
		if in != c.private {
			t.Errorf("%s private by default: %v, want %v", c.addr, in, c.private)
		}
	}
	got, bad = PrivateDestinations(&egressv1.CloudAddresses{PrivateCIDRs: []string{"35.0.0.0/8", "10.0.0.0/8", "10.9.9.9/8", "fd00::/8", "x"}})
	if fmt.Sprint(got) != "[10.0.0.0/8 35.0.0.0/8]" || fmt.Sprint(bad) != "[fd00::/8 x]" {
		t.Fatalf("configured: %v, bad %v", got, bad)
	}
}
