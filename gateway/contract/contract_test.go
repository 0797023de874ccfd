package contract

import (
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
