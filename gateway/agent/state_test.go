package agent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/agent/dataplane"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/gateway/probe"
)

// Fixtures: this node is worker1 (10.0.0.11, zone a). Gateways gw1 (zone a, 10.0.0.21),
// gw2 (zone a, 10.0.0.22), gw3 (zone b, 10.0.1.23).

var (
	ip     = netip.MustParseAddr
	pfx    = netip.MustParsePrefix
	myIP   = ip("10.0.0.11")
	gw1IP  = ip("10.0.0.21")
	gw2IP  = ip("10.0.0.22")
	gw3IP  = ip("10.0.1.23")
	idOf   = GatewayID
	sel    = func(kv ...string) metav1.LabelSelector { return metav1.LabelSelector{MatchLabels: kvs(kv)} }
	nsSel  = sel
	allSel = metav1.LabelSelector{}
)

func kvs(kv []string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func node(name, zone, addr string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelTopologyZone: zone}}}
	if addr != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: addr}}
	}
	return n
}

func pod(ns, name string, ips []string, kv ...string) corev1.Pod {
	p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: kvs(kv)}, Spec: corev1.PodSpec{NodeName: "worker1"}}
	p.Status.Phase = corev1.PodRunning
	for _, s := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: s})
	}
	if len(ips) > 0 {
		p.Status.PodIP = ips[0]
	}
	return p
}

func namespace(name string, kv ...string) corev1.Namespace {
	l := kvs(kv)
	l[corev1.LabelMetadataName] = name
	return corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}
}

func rule(gw string, podSel metav1.LabelSelector, dests []string, excl ...string) egressv1.EgressPolicyRule {
	return egressv1.EgressPolicyRule{PodSelector: podSel, DestinationCIDRs: dests, ExcludedCIDRs: excl, Gateway: gw}
}

func pol(ns, name string, r egressv1.EgressPolicyRule) egressv1.EgressPolicy {
	return egressv1.EgressPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: r}
}

func cpol(name string, nss metav1.LabelSelector, r egressv1.EgressPolicyRule) egressv1.ClusterEgressPolicy {
	return egressv1.ClusterEgressPolicy{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: egressv1.ClusterEgressPolicySpec{NamespaceSelector: nss, EgressPolicyRule: r}}
}

type gwNode struct {
	zone, node, ip string
	state          egressv1.GatewayState
}

func egw(name string, group int32, nodes ...gwNode) egressv1.EgressGateway {
	g := egressv1.EgressGateway{ObjectMeta: metav1.ObjectMeta{Name: name}}
	g.Status.GroupID = group
	for _, n := range nodes {
		var z *egressv1.ZoneStatus
		for i := range g.Status.Zones {
			if g.Status.Zones[i].Name == n.zone {
				z = &g.Status.Zones[i]
			}
		}
		if z == nil {
			g.Status.Zones = append(g.Status.Zones, egressv1.ZoneStatus{Name: n.zone})
			z = &g.Status.Zones[len(g.Status.Zones)-1]
		}
		z.Gateways = append(z.Gateways, egressv1.GatewayNodeStatus{Node: n.node, UnderlayIP: n.ip, State: n.state})
	}
	return g
}

var (
	gw1 = gwNode{"a", "gw1", "10.0.0.21", egressv1.GatewayActive}
	gw2 = gwNode{"a", "gw2", "10.0.0.22", egressv1.GatewayActive}
	gw3 = gwNode{"b", "gw3", "10.0.1.23", egressv1.GatewayActive}
)

func eip(addr, gw, holder string) egressv1.EgressIP {
	e := egressv1.EgressIP{ObjectMeta: metav1.ObjectMeta{Name: strings.ReplaceAll(addr, ":", "-")},
		Spec: egressv1.EgressIPSpec{IP: addr, Gateway: gw, Zone: "a", Provider: "aws"}}
	e.Status.Node = holder
	return e
}

func gnode(addr netip.Addr, healthy bool, eg ...netip.Addr) dataplane.GatewayNode {
	n := dataplane.GatewayNode{ID: idOf(addr), NodeIP: addr, Healthy: healthy}
	for _, e := range eg {
		if e.Is4() {
			n.EgressIPv4 = e
		} else {
			n.EgressIPv6 = e
		}
	}
	return n
}

func draining(n dataplane.GatewayNode) dataplane.GatewayNode {
	n.Draining = true
	return n
}

func dst(p string, g uint32) dataplane.Destination {
	return dataplane.Destination{Prefix: pfx(p), Group: g}
}

func pfxs(ps ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		out = append(out, pfx(p))
	}
	return out
}

func dpod(name string, set uint32, ips ...string) dataplane.Pod {
	p := dataplane.Pod{Name: name, PolicySet: set}
	for _, s := range ips {
		p.IPs = append(p.IPs, ip(s))
	}
	return p
}

// base: default/a (app=web) selected by default/web → egw "out" (group 7) for 203.0.113.0/24;
// default/b unselected.
func base() Inputs {
	return Inputs{
		Node:       node("worker1", "a", "10.0.0.11"),
		Pods:       []corev1.Pod{pod("default", "a", []string{"10.244.0.5", "fd00:244::5"}, "app", "web"), pod("default", "b", []string{"10.244.0.6"}, "app", "db")},
		Namespaces: []corev1.Namespace{namespace("default")},
		Policies:   []egressv1.EgressPolicy{pol("default", "web", rule("out", sel("app", "web"), []string{"203.0.113.0/24"}))},
		Gateways:   []egressv1.EgressGateway{egw("out", 7, gw1)},
		EgressIPs:  []egressv1.EgressIP{eip("10.0.0.201", "out", "gw1"), eip("10.0.0.200", "out", "gw1"), eip("10.0.0.202", "out", "")},
		ProbePort:  contract.DefaultProbePort,
	}
}

func TestComputeState(t *testing.T) {
	baseSet := dataplane.PolicySet{ID: 1, Destinations: []dataplane.Destination{dst("203.0.113.0/24", 7)}}
	baseGroup := dataplane.Group{ID: 7, Gateways: []dataplane.GatewayNode{gnode(gw1IP, true, ip("10.0.0.200"))}}
	basePods := []dataplane.Pod{dpod("default/a", 1, "10.244.0.5", "fd00:244::5"), dpod("default/b", 0, "10.244.0.6")}

	tests := []struct {
		name   string
		mutate func(*Inputs)
		// Expectations; nil fields are not checked.
		pods    []dataplane.Pod
		sets    []dataplane.PolicySet
		groups  []dataplane.Group
		gateway *dataplane.GatewayRole
		noRole  bool
		// announce is checked against Result.Announce when non-nil.
		announce []dataplane.EgressAddress
		setIDs   map[string]uint32
		probes   []netip.AddrPort
		// probeTarget is checked against the first probe.
		probeTarget *probe.Target
		problem     string
		// state checks the rest of the State.
		state func(*testing.T, dataplane.State)
	}{
		{
			name: "selected pod gets a set; the group lists the holder with its lowest egress IP",
			pods: basePods, sets: []dataplane.PolicySet{baseSet}, groups: []dataplane.Group{baseGroup}, noRole: true,
			setIDs: map[string]uint32{"default/web": 1},
			probes: []netip.AddrPort{netip.AddrPortFrom(gw1IP, contract.DefaultProbePort)},
		},
		{
			name: "host-network, finished and IP-less pods are left out",
			mutate: func(in *Inputs) {
				hn := pod("default", "hn", []string{"10.0.0.11"}, "app", "web")
				hn.Spec.HostNetwork = true
				done := pod("default", "done", []string{"10.244.0.9"}, "app", "web")
				done.Status.Phase = corev1.PodSucceeded
				failed := pod("default", "failed", []string{"10.244.0.10"}, "app", "web")
				failed.Status.Phase = corev1.PodFailed
				in.Pods = append(in.Pods, hn, done, failed, pod("default", "pending", nil, "app", "web"))
			},
			pods: basePods,
		},
		{
			name: "pods with the same policies share a set; another combination gets the next id",
			mutate: func(in *Inputs) {
				in.Pods = append(in.Pods, pod("default", "c", []string{"10.244.0.7"}, "app", "web"),
					pod("default", "d", []string{"10.244.0.8"}, "app", "web", "tier", "x"))
				in.Policies = append(in.Policies, pol("default", "x", rule("out", sel("tier", "x"), []string{"198.51.100.0/24"})))
			},
			pods:   append(basePods, dpod("default/c", 1, "10.244.0.7"), dpod("default/d", 2, "10.244.0.8")),
			sets:   []dataplane.PolicySet{baseSet, {ID: 2, Destinations: []dataplane.Destination{dst("198.51.100.0/24", 7), dst("203.0.113.0/24", 7)}}},
			setIDs: map[string]uint32{"default/web": 1, "default/web,default/x": 2},
		},
		{
			name: "ids are stable; a new set skips ids the previous result used",
			mutate: func(in *Inputs) {
				in.SetIDs = map[string]uint32{"default/web": 5, "gone": 1}
				in.Pods = append(in.Pods, pod("default", "d", []string{"10.244.0.8"}, "tier", "x"))
				in.Policies = append(in.Policies, pol("default", "x", rule("out", sel("tier", "x"), []string{"198.51.100.0/24"})))
			},
			pods:   []dataplane.Pod{dpod("default/a", 5, "10.244.0.5", "fd00:244::5"), dpod("default/b", 0, "10.244.0.6"), dpod("default/d", 2, "10.244.0.8")},
			setIDs: map[string]uint32{"default/web": 5, "default/x": 2},
		},
		{
			name: "overlap: the longest prefix wins across policies and gateways",
			mutate: func(in *Inputs) {
				in.Gateways = append(in.Gateways, egw("other", 9, gw2))
				in.Policies = append(in.Policies, pol("default", "all", rule("other", sel("app", "web"), []string{"0.0.0.0/0"})))
			},
			sets:   []dataplane.PolicySet{{ID: 1, Destinations: []dataplane.Destination{dst("0.0.0.0/0", 9), dst("203.0.113.0/24", 7)}}},
			groups: []dataplane.Group{baseGroup, {ID: 9, Gateways: []dataplane.GatewayNode{gnode(gw2IP, true)}}},
		},
		{
			name: "equal prefixes: higher priority wins",
			mutate: func(in *Inputs) {
				in.Gateways = append(in.Gateways, egw("other", 9, gw2))
				r := rule("other", sel("app", "web"), []string{"203.0.113.0/24"})
				r.Priority = 10
				in.Policies = append(in.Policies, pol("default", "zz", r))
			},
			sets:   []dataplane.PolicySet{{ID: 1, Destinations: []dataplane.Destination{dst("203.0.113.0/24", 9)}}},
			groups: []dataplane.Group{{ID: 9, Gateways: []dataplane.GatewayNode{gnode(gw2IP, true)}}},
		},
		{
			name: "equal prefixes and priorities: the lower name wins, namespaced or cluster-wide",
			mutate: func(in *Inputs) {
				in.Gateways = append(in.Gateways, egw("other", 9, gw2))
				in.ClusterPolicies = append(in.ClusterPolicies, cpol("aaa", allSel, rule("other", sel("app", "web"), []string{"203.0.113.0/24"})))
			},
			sets: []dataplane.PolicySet{{ID: 1, Destinations: []dataplane.Destination{dst("203.0.113.0/24", 9)}}},
		},
		{
			name: "an exclusion carves its own policy only",
			mutate: func(in *Inputs) {
				in.Gateways = append(in.Gateways, egw("other", 9, gw2))
				in.Policies = []egressv1.EgressPolicy{
					pol("default", "wide", rule("out", sel("app", "web"), []string{"0.0.0.0/0"}, "10.1.0.0/16", "192.168.0.0/16")),
					pol("default", "corp", rule("other", sel("app", "web"), []string{"10.0.0.0/8"})),
				}
			},
			sets: []dataplane.PolicySet{{ID: 1,
				Destinations: []dataplane.Destination{dst("0.0.0.0/0", 7), dst("10.0.0.0/8", 9)},
				Excluded:     pfxs("192.168.0.0/16")}},
		},
		{
			name: "within a policy an exclusion beats a longer destination; redundant entries go",
			mutate: func(in *Inputs) {
				in.Policies = []egressv1.EgressPolicy{
					pol("default", "p", rule("out", sel("app", "web"), []string{"0.0.0.0/0", "10.1.0.0/16", "172.16.0.0/12", "::/0"}, "10.0.0.0/8", "2001:db8::/32")),
				}
			},
			sets: []dataplane.PolicySet{{ID: 1,
				Destinations: []dataplane.Destination{dst("0.0.0.0/0", 7), dst("::/0", 7)},
				Excluded:     pfxs("10.0.0.0/8", "2001:db8::/32")}},
		},
		{
			name: "cluster policy by namespace label; a namespace not in the cache matches by name",
			mutate: func(in *Inputs) {
				in.Policies = nil
				in.Namespaces = append(in.Namespaces, namespace("team", "egress", "yes"))
				in.Pods = []corev1.Pod{pod("team", "t", []string{"10.244.0.20"}), pod("default", "d", []string{"10.244.0.21"}), pod("ghost", "g", []string{"10.244.0.22"})}
				in.ClusterPolicies = []egressv1.ClusterEgressPolicy{
					cpol("teams", nsSel("egress", "yes"), rule("out", allSel, []string{"203.0.113.0/24"})),
					cpol("ghosts", nsSel(corev1.LabelMetadataName, "ghost"), rule("out", allSel, []string{"198.51.100.0/24"})),
				}
			},
			pods: []dataplane.Pod{dpod("default/d", 0, "10.244.0.21"), dpod("ghost/g", 1, "10.244.0.22"), dpod("team/t", 2, "10.244.0.20")},
		},
		{
			name: "gateway that does not admit the namespace, unknown gateway, gateway without group id",
			mutate: func(in *Inputs) {
				in.Gateways[0].Spec.AllowedNamespaces = &egressv1.NamespaceSelection{Names: []string{"prod"}}
				in.Gateways = append(in.Gateways, egw("nogroup", 0, gw2))
				in.Policies = append(in.Policies,
					pol("default", "missing", rule("nope", allSel, []string{"198.51.100.0/24"})),
					pol("default", "early", rule("nogroup", allSel, []string{"198.51.100.0/24"})))
			},
			pods: []dataplane.Pod{dpod("default/a", 0, "10.244.0.5", "fd00:244::5"), dpod("default/b", 0, "10.244.0.6")},
			sets: []dataplane.PolicySet{}, groups: []dataplane.Group{}, probes: []netip.AddrPort{},
			problem: `EgressGateway "nope" not found`,
		},
		{
			// --mark-mask 0x00003fff carries group ids 1-511: group 7 fits, 600 would be cut
			// to another group's id by the mark, so its gateway is skipped, said so.
			name: "group id past the node's mark layout is refused, one that fits is used",
			mutate: func(in *Inputs) {
				in.MaxGroup = 511
				in.Gateways = append(in.Gateways, egw("wide", 600, gw2))
				in.Policies = append(in.Policies, pol("default", "wide", rule("wide", allSel, []string{"198.51.100.0/24"})))
			},
			pods: basePods, sets: []dataplane.PolicySet{baseSet}, groups: []dataplane.Group{baseGroup},
			problem: "EgressGateway wide: group id 600 does not fit this node's packet mark layout (group ids 1-511",
		},
		{
			name: "allowedNamespaces selector admits by namespace label",
			mutate: func(in *Inputs) {
				in.Namespaces = []corev1.Namespace{namespace("default", "tier", "prod")}
				in.Gateways[0].Spec.AllowedNamespaces = &egressv1.NamespaceSelection{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "prod"}}}
			},
			pods: basePods,
		},
		{
			name: "only Active and Draining gateways are listed (a draining one holding no address is not); probe health marks them; this node is healthy unprobed",
			mutate: func(in *Inputs) {
				in.Gateways[0] = egw("out", 7, gw1, gw2,
					gwNode{"a", "worker1", "10.0.0.11", egressv1.GatewayActive},
					gwNode{"a", "sb", "10.0.0.30", egressv1.GatewayStandby},
					gwNode{"a", "dr", "10.0.0.31", egressv1.GatewayDraining},
					gwNode{"a", "bad", "10.0.0.32", egressv1.GatewayUnhealthy})
				in.Health = map[netip.Addr]bool{gw2IP: false, myIP: false}
				in.EgressIPs = append(in.EgressIPs, eip("10.0.0.210", "out", "gw2"), eip("fd00:a::210", "out", "gw2"), eip("10.0.0.199", "elsewhere", "gw2"))
			},
			groups: []dataplane.Group{{ID: 7, Gateways: []dataplane.GatewayNode{
				gnode(gw1IP, true, ip("10.0.0.200")), gnode(myIP, true),
				gnode(gw2IP, false, ip("10.0.0.210"), ip("fd00:a::210"))}}},
			probes: []netip.AddrPort{netip.AddrPortFrom(ip("10.0.0.21"), 8743), netip.AddrPortFrom(gw2IP, 8743)},
		},
		{
			name: "Draining state: listed (established flows stay) with the Draining flag, after those taking new flows",
			mutate: func(in *Inputs) {
				in.Gateways[0] = egw("out", 7, gwNode{"a", "gw1", "10.0.0.21", egressv1.GatewayDraining}, gw2)
			},
			groups: []dataplane.Group{{ID: 7, Gateways: []dataplane.GatewayNode{
				gnode(gw2IP, true), draining(gnode(gw1IP, true, ip("10.0.0.200")))}}},
			probes: []netip.AddrPort{netip.AddrPortFrom(gw1IP, 8743), netip.AddrPortFrom(gw2IP, 8743)},
		},
		{
			name: "the draining bit of a probe reply drains an Active gateway; unhealthy stays unhealthy",
			mutate: func(in *Inputs) {
				in.Gateways[0] = egw("out", 7, gw1, gw2)
				in.ProbeDraining = map[netip.Addr]bool{gw1IP: true, gw2IP: false}
			},
			groups: []dataplane.Group{{ID: 7, Gateways: []dataplane.GatewayNode{
				gnode(gw2IP, true), draining(gnode(gw1IP, true, ip("10.0.0.200")))}}},
		},
		{
			name: "every gateway draining: all listed, none takes new flows",
			mutate: func(in *Inputs) {
				in.Gateways[0] = egw("out", 7, gwNode{"a", "gw1", "10.0.0.21", egressv1.GatewayDraining}, gw2)
				in.ProbeDraining = map[netip.Addr]bool{gw2IP: true}
				in.Health = map[netip.Addr]bool{gw1IP: false}
			},
			groups: []dataplane.Group{{ID: 7, Gateways: []dataplane.GatewayNode{
				draining(gnode(gw2IP, true)), draining(gnode(gw1IP, false, ip("10.0.0.200")))}}},
		},
		{
			name: "PreferLocal: a local zone whose gateways all drain lists every zone",
			mutate: func(in *Inputs) {
				in.Gateways[0] = egw("out", 7, gwNode{"a", "gw1", "10.0.0.21", egressv1.GatewayDraining}, gw2, gw3)
				in.Health = map[netip.Addr]bool{gw2IP: false}
			},
			groups: []dataplane.Group{{ID: 7, Gateways: []dataplane.GatewayNode{
				draining(gnode(gw1IP, true, ip("10.0.0.200"))), gnode(gw2IP, false), gnode(gw3IP, true)}}},
		},
		{
			name: "this node cordoned: the datapath's probe replies and its own gateway entry drain",
			mutate: func(in *Inputs) {
				in.Node.Spec.Unschedulable = true
				in.Gateways[0] = egw("out", 7, gw1, gwNode{"a", "worker1", "10.0.0.11", egressv1.GatewayActive})
			},
			groups: []dataplane.Group{{ID: 7, Gateways: []dataplane.GatewayNode{
				gnode(gw1IP, true, ip("10.0.0.200")), draining(gnode(myIP, true))}}},
			state: func(t *testing.T, s dataplane.State) {
				if s.ProbePort != contract.DefaultProbePort || !s.Draining {
					t.Errorf("probe port %d, draining %v; want %d, true", s.ProbePort, s.Draining, contract.DefaultProbePort)
				}
			},
		},
		{
			name: "the probe port reaches the datapath; a schedulable node does not drain",
			mutate: func(in *Inputs) {
				in.ProbePort = 9000
			},
			probes: []netip.AddrPort{netip.AddrPortFrom(gw1IP, 9000)},
			state: func(t *testing.T, s dataplane.State) {
				if s.ProbePort != 9000 || s.Draining {
					t.Errorf("probe port %d, draining %v; want 9000, false", s.ProbePort, s.Draining)
				}
			},
		},
		{
			name: "PreferLocal: local gateways while one is healthy",
			mutate: func(in *Inputs) {
				in.Gateways[0] = egw("out", 7, gw1, gw2, gw3)
				in.Health = map[netip.Addr]bool{gw1IP: false}
			},
			groups: []dataplane.Group{{ID: 7, Gateways: []dataplane.GatewayNode{gnode(gw2IP, true), gnode(gw1IP, false, ip("10.0.0.200"))}}},
			probes: []netip.AddrPort{netip.AddrPortFrom(gw1IP, 8743), netip.AddrPortFrom(gw2IP, 8743), netip.AddrPortFrom(gw3IP, 8743)},
		},
		{
			name: "PreferLocal: every zone when no local gateway is healthy",
			mutate: func(in *Inputs) {
				in.Gateways[0] = egw("out", 7, gw1, gw2, gw3)
				in.Health = map[netip.Addr]bool{gw1IP: false, gw2IP: false}
			},
			groups: []dataplane.Group{{ID: 7, Gateways: []dataplane.GatewayNode{gnode(gw1IP, false, ip("10.0.0.200")), gnode(gw2IP, false), gnode(gw3IP, true)}}},
		},
		{
			name: "LocalOnly: never another zone",
			mutate: func(in *Inputs) {
				in.Gateways[0] = egw("out", 7, gw1, gw3)
				in.Gateways[0].Spec.Zones = &egressv1.ZoneSpec{Affinity: egressv1.AffinityLocalOnly}
				in.Health = map[netip.Addr]bool{gw1IP: false}
			},
			groups: []dataplane.Group{{ID: 7, Gateways: []dataplane.GatewayNode{gnode(gw1IP, false, ip("10.0.0.200"))}}},
		},
		{
			name: "Any: every zone, local first",
			mutate: func(in *Inputs) {
				in.Gateways[0] = egw("out", 7, gw3, gw1)
				in.Gateways[0].Spec.Zones = &egressv1.ZoneSpec{Affinity: egressv1.AffinityAny}
			},
			groups: []dataplane.Group{{ID: 7, Gateways: []dataplane.GatewayNode{gnode(gw1IP, true, ip("10.0.0.200")), gnode(gw3IP, true)}}},
		},
		{
			name: "at most 8 gateways, healthy ones kept",
			mutate: func(in *Inputs) {
				var nodes []gwNode
				in.Health = map[netip.Addr]bool{}
				for i := range 10 {
					a := netip.AddrFrom4([4]byte{10, 0, 0, byte(40 + i)})
					nodes = append(nodes, gwNode{"a", "n" + string(rune('a'+i)), a.String(), egressv1.GatewayActive})
					in.Health[a] = i >= 2
				}
				in.Gateways[0] = egw("out", 7, nodes...)
			},
			groups: func() []dataplane.Group {
				g := dataplane.Group{ID: 7}
				for i := 2; i < 10; i++ {
					g.Gateways = append(g.Gateways, gnode(netip.AddrFrom4([4]byte{10, 0, 0, byte(40 + i)}), true))
				}
				return []dataplane.Group{g}
			}(),
			problem: "10 gateways, using the first 8",
		},
		{
			name: "a gateway in several groups is probed with the most demanding settings",
			mutate: func(in *Inputs) {
				in.Gateways[0].Spec.Health = &egressv1.HealthSpec{Interval: &metav1.Duration{Duration: 50 * time.Millisecond}, FailureThreshold: 5}
				other := egw("other", 9, gw1)
				other.Spec.Health = &egressv1.HealthSpec{Interval: &metav1.Duration{Duration: time.Second}, Timeout: &metav1.Duration{Duration: 20 * time.Millisecond}, FailureThreshold: 2}
				in.Gateways = append(in.Gateways, other)
				in.Policies = append(in.Policies, pol("default", "o", rule("other", sel("app", "web"), []string{"198.51.100.0/24"})))
			},
			probes:      []netip.AddrPort{netip.AddrPortFrom(gw1IP, 8743)},
			probeTarget: &probe.Target{Addr: netip.AddrPortFrom(gw1IP, 8743), Interval: 50 * time.Millisecond, Timeout: 20 * time.Millisecond, FailureThreshold: 2},
		},
		{
			name: "gateway role: held IPs on the interface with their MAC or the node's; every held IP served",
			mutate: func(in *Inputs) {
				in.Node = node("gw1", "a", "10.0.0.21")
				in.Interfaces = []Interface{
					{Name: "eth0", MAC: mac("02:00:00:00:00:01"), Addrs: []netip.Addr{gw1IP}},
					{Name: "eth1", MAC: mac("02:00:00:00:00:02")},
				}
				e := eip("10.0.0.150", "out", "gw1")
				e.Status.InterfaceMAC = "02:00:00:00:00:02"
				e6 := eip("fd00:a::9", "out", "gw1")
				e6.Status.InterfaceMAC = "02:00:00:00:00:99" // no such interface: the node's
				in.EgressIPs = append(in.EgressIPs, e, e6, eip("10.0.0.160", "unknown", "gw1"), eip("10.0.0.170", "out", "gw2"))
			},
			gateway: &dataplane.GatewayRole{
				Addresses: []dataplane.EgressAddress{
					{IP: ip("10.0.0.150"), Interface: "eth1"}, {IP: ip("10.0.0.160"), Interface: "eth0"},
					{IP: ip("10.0.0.200"), Interface: "eth0"}, {IP: ip("10.0.0.201"), Interface: "eth0"},
					{IP: ip("fd00:a::9"), Interface: "eth0"},
				},
				// Every held IP per family (the datapath spreads over 10.0.0.150's interface: itself).
				Groups: []dataplane.ServedGroup{{Group: 7, EgressIPv4s: []netip.Addr{ip("10.0.0.150"), ip("10.0.0.200"), ip("10.0.0.201")}, EgressIPv6s: []netip.Addr{ip("fd00:a::9")}}},
			},
			groups: []dataplane.Group{{ID: 7, Gateways: []dataplane.GatewayNode{gnode(gw1IP, true, ip("10.0.0.150"), ip("fd00:a::9"))}}},
			probes: []netip.AddrPort{},
		},
		{
			name: "gateway role: no interface for a held IP is a problem, not a failure",
			mutate: func(in *Inputs) {
				in.Node = node("gw1", "a", "10.0.0.21")
			},
			noRole:  true,
			problem: "EgressIP 10.0.0.200: no interface",
		},
		{
			name: "nodeInterface: the gateway serves the group with the interface's first IPv4, not link-local",
			mutate: func(in *Inputs) {
				in.Node = node("gw1", "a", "10.0.0.21")
				in.Gateways[0].Spec.Addresses = nodeIface("eth1", "")
				in.EgressIPs = nil
				in.Interfaces = []Interface{
					{Name: "eth0", Addrs: []netip.Addr{gw1IP}},
					{Name: "eth1", Addrs: []netip.Addr{ip("fe80::7"), ip("169.254.3.3"), ip("192.168.5.7"), ip("192.168.5.8"), ip("fd00:5::7")}},
				}
			},
			gateway: &dataplane.GatewayRole{
				Addresses: []dataplane.EgressAddress{{IP: ip("192.168.5.7"), Interface: "eth1"}},
				Groups:    []dataplane.ServedGroup{{Group: 7, EgressIPv4s: []netip.Addr{ip("192.168.5.7")}}},
			},
			announce: []dataplane.EgressAddress{},
			// Its own pods go through itself; the worker-side egress IP is informational.
			groups: []dataplane.Group{{ID: 7, Gateways: []dataplane.GatewayNode{gnode(gw1IP, true)}}},
		},
		{
			name: "nodeInterface IPv6: skips link-local and egress IPs mounted on the interface; draining still serves",
			mutate: func(in *Inputs) {
				in.Node = node("gw1", "a", "10.0.0.21")
				in.Gateways[0] = egw("out", 7, gwNode{"a", "gw1", "10.0.0.21", egressv1.GatewayDraining})
				in.Gateways[0].Spec.Addresses = nodeIface("eth0", egressv1.IPv6)
				in.EgressIPs = []egressv1.EgressIP{eip("fd00:a::99", "elsewhere", "gw1")}
				in.Interfaces = []Interface{
					{Name: "eth0", Addrs: []netip.Addr{gw1IP, ip("fe80::21"), ip("fd00:a::99"), ip("fd00:a::21"), ip("fd00:a::22")}},
				}
			},
			gateway: &dataplane.GatewayRole{
				Addresses: []dataplane.EgressAddress{{IP: ip("fd00:a::21"), Interface: "eth0"}, {IP: ip("fd00:a::99"), Interface: "eth0"}},
				Groups:    []dataplane.ServedGroup{{Group: 7, EgressIPv6s: []netip.Addr{ip("fd00:a::21")}}},
			},
		},
		{
			name: "nodeInterface: workers list the Active and Draining gateways without any EgressIP",
			mutate: func(in *Inputs) {
				in.Gateways[0] = egw("out", 7, gw1, gwNode{"a", "gw2", "10.0.0.22", egressv1.GatewayStandby},
					gwNode{"a", "gw4", "10.0.0.24", egressv1.GatewayDraining})
				in.Gateways[0].Spec.Addresses = nodeIface("eth0", "")
				in.EgressIPs = nil
				in.Interfaces = []Interface{{Name: "eth0", Addrs: []netip.Addr{myIP}}}
			},
			groups: []dataplane.Group{{ID: 7, Gateways: []dataplane.GatewayNode{gnode(gw1IP, true), draining(gnode(ip("10.0.0.24"), true))}}},
			probes: []netip.AddrPort{netip.AddrPortFrom(gw1IP, contract.DefaultProbePort), netip.AddrPortFrom(ip("10.0.0.24"), contract.DefaultProbePort)},
			noRole: true, // worker1 is not a gateway of the group, though it has eth0
		},
		{
			name: "nodeInterface: a missing interface skips the group on this gateway",
			mutate: func(in *Inputs) {
				in.Node = node("gw1", "a", "10.0.0.21")
				in.Gateways[0].Spec.Addresses = nodeIface("bond0", "")
				in.EgressIPs = nil
				in.Interfaces = []Interface{{Name: "eth0", Addrs: []netip.Addr{gw1IP}}}
			},
			noRole:  true,
			problem: "EgressGateway out: no interface bond0; not serving it on this node",
		},
		{
			name: "nodeInterface: an interface without an address of the family skips the group; held IPs still mount",
			mutate: func(in *Inputs) {
				in.Node = node("gw1", "a", "10.0.0.21")
				in.Gateways[0].Spec.Addresses = nodeIface("eth0", egressv1.IPv6)
				in.Gateways = append(in.Gateways, egw("cloud", 9, gw1))
				in.EgressIPs = []egressv1.EgressIP{eip("10.0.0.150", "cloud", "gw1")}
				in.Interfaces = []Interface{{Name: "eth0", Addrs: []netip.Addr{gw1IP, ip("fe80::21")}}}
			},
			gateway: &dataplane.GatewayRole{
				Addresses: []dataplane.EgressAddress{{IP: ip("10.0.0.150"), Interface: "eth0"}},
				Groups:    []dataplane.ServedGroup{{Group: 9, EgressIPv4s: []netip.Addr{ip("10.0.0.150")}}},
			},
			announce: []dataplane.EgressAddress{}, // cloud addresses are routed by the cloud
			problem:  "EgressGateway out: interface eth0 has no IPv6 address; not serving it on this node",
		},
		{
			name: "static: addresses go on the pool's interface or the one on the pool's subnet, and are announced",
			mutate: func(in *Inputs) {
				in.Node = node("gw1", "a", "10.0.0.21")
				in.Gateways[0].Spec.Addresses = egressv1.EgressAddresses{Static: &egressv1.StaticAddresses{Pools: []egressv1.StaticPool{
					{Zone: "a", Subnet: "192.168.50.0/24", IPs: []string{"192.168.50.10"}, Interface: "eth1"},
					{Zone: "a", Subnet: "fd00:50::/64", IPs: []string{"fd00:50::10", "fd00:50::11"}},
					{Zone: "a", Subnet: "10.0.0.0/24", IPs: []string{"10.0.0.30"}},
				}}}
				in.Gateways = append(in.Gateways, egw("cloud", 9, gw1))
				in.EgressIPs = []egressv1.EgressIP{eip("192.168.50.10", "out", "gw1"), eip("fd00:50::10", "out", "gw1"),
					eip("fd00:50::11", "out", "gw1"), eip("10.0.0.30", "out", "gw1"), eip("10.0.0.160", "cloud", "gw1")}
				in.Interfaces = []Interface{
					{Name: "eth0", Addrs: []netip.Addr{gw1IP, ip("fd00:50::11")}}, // ::11 mounted here earlier: not a hint
					{Name: "eth1"},
					{Name: "eth2", Addrs: []netip.Addr{ip("fd00:50::21")}},
				}
			},
			gateway: &dataplane.GatewayRole{
				Addresses: []dataplane.EgressAddress{
					{IP: ip("10.0.0.30"), Interface: "eth0"}, {IP: ip("10.0.0.160"), Interface: "eth0"},
					{IP: ip("192.168.50.10"), Interface: "eth1"},
					{IP: ip("fd00:50::10"), Interface: "eth2"}, {IP: ip("fd00:50::11"), Interface: "eth2"},
				},
				Groups: []dataplane.ServedGroup{
					// Every held IP, sorted: the datapath spreads new flows over those on the
					// lowest one's interface.
					{Group: 7, EgressIPv4s: []netip.Addr{ip("10.0.0.30"), ip("192.168.50.10")}, EgressIPv6s: []netip.Addr{ip("fd00:50::10"), ip("fd00:50::11")}},
					{Group: 9, EgressIPv4s: []netip.Addr{ip("10.0.0.160")}},
				},
			},
			announce: []dataplane.EgressAddress{
				{IP: ip("10.0.0.30"), Interface: "eth0"}, {IP: ip("192.168.50.10"), Interface: "eth1"},
				{IP: ip("fd00:50::10"), Interface: "eth2"}, {IP: ip("fd00:50::11"), Interface: "eth2"},
			},
		},
		{
			name: "static: a pool interface missing on the node skips the address",
			mutate: func(in *Inputs) {
				in.Node = node("gw1", "a", "10.0.0.21")
				in.Gateways[0].Spec.Addresses = egressv1.EgressAddresses{Static: &egressv1.StaticAddresses{Pools: []egressv1.StaticPool{
					{Zone: "a", Subnet: "10.0.0.0/24", IPs: []string{"10.0.0.200", "10.0.0.201"}, Interface: "eth7"},
				}}}
				in.Interfaces = []Interface{{Name: "eth0", Addrs: []netip.Addr{gw1IP}}}
			},
			noRole:  true,
			problem: "EgressIP 10.0.0.200: no interface eth7 (static pool 10.0.0.0/24)",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := base()
			in.ClusterView = true // an empty cluster: TestGatewaySources covers the sources
			if tc.mutate != nil {
				tc.mutate(&in)
			}
			res, err := ComputeState(in)
			if err != nil {
				t.Fatal(err)
			}
			if err := validate(res.State); err != nil {
				t.Errorf("state would not apply: %v", err)
			}
			check := func(what string, want, got any) {
				t.Helper()
				if d := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}, netip.AddrPort{})); d != "" {
					t.Errorf("%s (-want +got):\n%s", what, d)
				}
			}
			if tc.pods != nil {
				check("pods", tc.pods, res.State.Pods)
			}
			if tc.sets != nil {
				check("policy sets", tc.sets, nonNil(res.State.PolicySets))
			}
			if tc.groups != nil {
				check("groups", tc.groups, nonNil(res.State.Groups))
			}
			if tc.gateway != nil {
				check("gateway role", tc.gateway, res.State.Gateway)
			}
			if tc.announce != nil {
				check("announce", tc.announce, nonNil(res.Announce))
			}
			if tc.noRole && res.State.Gateway != nil {
				t.Errorf("unexpected gateway role %+v", res.State.Gateway)
			}
			if tc.setIDs != nil {
				check("set ids", tc.setIDs, res.SetIDs)
			}
			if tc.probes != nil {
				var got []netip.AddrPort
				for _, p := range res.Probes {
					got = append(got, p.Addr)
				}
				check("probes", tc.probes, nonNil(got))
			}
			if tc.probeTarget != nil && (len(res.Probes) == 0 || res.Probes[0] != *tc.probeTarget) {
				t.Errorf("probe target %+v, want %+v", res.Probes, *tc.probeTarget)
			}
			if tc.state != nil {
				tc.state(t, res.State)
			}
			var problems []string
			for _, p := range res.Problems {
				problems = append(problems, p.String())
			}
			if tc.problem != "" && !strings.Contains(strings.Join(problems, "\n"), tc.problem) {
				t.Errorf("problems %q lack %q", problems, tc.problem)
			}
		})
	}
}

func nodeIface(name string, fam egressv1.IPFamily) egressv1.EgressAddresses {
	return egressv1.EgressAddresses{NodeInterface: &egressv1.NodeInterfaceAddresses{Interface: name, Family: fam}}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// validate mirrors the checks dataplane.Apply makes before touching anything.
func validate(s dataplane.State) error {
	sets := map[uint32]bool{}
	groups := map[uint32]bool{}
	for _, g := range s.Groups {
		if g.ID == 0 || len(g.Gateways) > 8 {
			return fmt.Errorf("group %d", g.ID)
		}
		groups[g.ID] = true
	}
	for _, ps := range s.PolicySets {
		if ps.ID == 0 || sets[ps.ID] {
			return fmt.Errorf("set id %d", ps.ID)
		}
		sets[ps.ID] = true
		for _, d := range ps.Destinations {
			if !groups[d.Group] {
				return fmt.Errorf("set %d: unknown group %d", ps.ID, d.Group)
			}
		}
	}
	for _, p := range s.Pods {
		if p.PolicySet != 0 && !sets[p.PolicySet] {
			return fmt.Errorf("pod %s: unknown set %d", p.Name, p.PolicySet)
		}
	}
	return nil
}

// TestResolveOracle checks resolve against the plain meaning of overlapping policies, looked
// up the way the datapath's LPM trie does, on random policies and addresses.
func TestResolveOracle(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	randPrefix := func() netip.Prefix {
		bits := []int{0, 8, 12, 16, 20, 24, 28, 32}[r.IntN(8)]
		a := netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(4) * 64), byte(r.IntN(4) * 64)})
		if bits == 0 {
			a = netip.IPv4Unspecified()
		}
		return netip.PrefixFrom(a, bits).Masked()
	}
	for iter := range 2000 {
		var pols []*policy
		for i := range 1 + r.IntN(4) {
			p := &policy{name: string(rune('a' + r.IntN(3))), ns: string(rune('a' + i)), priority: int32(r.IntN(3)),
				gw: &gatewayInfo{group: uint32(1 + r.IntN(4))}}
			for range 1 + r.IntN(3) {
				p.dests = append(p.dests, randPrefix())
			}
			for range r.IntN(3) {
				p.excl = append(p.excl, randPrefix())
			}
			pols = append(pols, p)
		}
		set := resolve(pols)
		for range 50 {
			a := netip.AddrFrom4([4]byte{10, byte(r.IntN(5)), byte(r.IntN(256)), byte(r.IntN(256))})
			if got, want := lpm(set, a), oracle(pols, a); got != want {
				t.Fatalf("iteration %d: %s → group %d, want %d\nset %+v", iter, a, got, want, set)
			}
		}
	}
}

func lpm(set dataplane.PolicySet, a netip.Addr) uint32 {
	best, group := -1, uint32(0)
	for _, d := range set.Destinations {
		if d.Prefix.Contains(a) && d.Prefix.Bits() > best {
			best, group = d.Prefix.Bits(), d.Group
		}
	}
	for _, e := range set.Excluded {
		if e.Contains(a) && e.Bits() >= best {
			best, group = e.Bits(), 0
		}
	}
	return group
}

func oracle(pols []*policy, a netip.Addr) uint32 {
	var best *policy
	bits := -1
	for _, p := range pols {
		if slices.ContainsFunc(p.excl, func(e netip.Prefix) bool { return e.Contains(a) }) {
			continue
		}
		for _, d := range p.dests {
			if d.Contains(a) && (d.Bits() > bits || d.Bits() == bits && p.before(best)) {
				best, bits = p, d.Bits()
			}
		}
	}
	if best == nil {
		return 0
	}
	return best.gw.group
}

// TestGatewaySources: a gateway admits, per served group, every address of the steerable pods
// of other nodes that a policy of the group selects (its namespace's for an EgressPolicy, the
// selected namespaces' for a ClusterEgressPolicy, within allowedNamespaces), from their node's
// underlay address; unselected, finished and host-network pods, pods of nodes without an
// underlay address, its own pods and groups it does not serve are left out. Without the
// cluster view it admits nothing and says why.
func TestGatewaySources(t *testing.T) {
	in := base()
	in.Node = node("gw1", "a", "10.0.0.21")
	in.Interfaces = []Interface{{Name: "eth0", Addrs: []netip.Addr{gw1IP}}}
	other := egw("other", 8, gw2)
	in.Gateways = append(in.Gateways, other)
	in.Gateways[0].Spec.AllowedNamespaces = &egressv1.NamespaceSelection{Names: []string{"default", "team"}}
	in.EgressIPs = append(in.EgressIPs, eip("10.0.0.210", "other", "gw2"))
	in.Namespaces = append(in.Namespaces, namespace("team", "tier", "gold"), namespace("blocked", "tier", "gold"))
	in.ClusterPolicies = []egressv1.ClusterEgressPolicy{cpol("gold", nsSel("tier", "gold"), rule("out", sel("app", "api"), []string{"198.51.100.0/24"}))}
	in.Policies = append(in.Policies, pol("default", "to-other", rule("other", sel("app", "web"), []string{"192.0.2.0/24"})))
	on := func(p corev1.Pod, n string) corev1.Pod { p.Spec.NodeName = n; return p }
	finished := on(pod("default", "done", []string{"10.244.1.9"}, "app", "web"), "worker2")
	finished.Status.Phase = corev1.PodSucceeded
	host := on(pod("default", "host", []string{"10.0.0.12"}, "app", "web"), "worker2")
	host.Spec.HostNetwork = true
	in.ClusterPods = []corev1.Pod{
		on(pod("default", "web1", []string{"10.244.1.5", "fd00:244:1::5"}, "app", "web"), "worker2"),
		on(pod("default", "db", []string{"10.244.1.6"}, "app", "db"), "worker2"),
		on(pod("team", "api", []string{"10.244.2.7"}, "app", "api"), "worker3"),
		on(pod("blocked", "api", []string{"10.244.2.8"}, "app", "api"), "worker3"),  // not allowed by "out"
		on(pod("default", "web2", []string{"10.244.3.5"}, "app", "web"), "nowhere"), // node without an address
		on(pod("default", "mine", []string{"10.244.0.9"}, "app", "web"), "gw1"),     // this node's
		finished, host,
	}
	in.Nodes = []corev1.Node{*node("worker2", "a", "10.0.0.12"), *node("worker3", "b", "10.0.1.13"), *node("nowhere", "b", ""), *node("gw1", "a", "10.0.0.21")}

	res, err := ComputeState(in)
	if err != nil {
		t.Fatal(err)
	}
	if !res.NeedsClusterView {
		t.Error("a gateway node does not ask for the cluster view")
	}
	if r := res.State.Gateway; r == nil || len(r.Sources) != 0 || !r.KeepSources {
		t.Fatalf("without the cluster view the gateway role is %+v, want no sources of its own and KeepSources (a restarted agent keeps what its datapath admits)", r)
	}
	if !slices.ContainsFunc(res.Problems, func(p Problem) bool { return p.Kind == ProblemNoClusterView }) {
		t.Errorf("no %s problem without the cluster view: %v", ProblemNoClusterView, res.Problems)
	}
	if !res.State.Draining {
		t.Error("without the cluster view the gateway's probe replies do not say draining: workers would send it new flows it may not admit")
	}

	in.ClusterView = true
	res, err = ComputeState(in)
	if err != nil {
		t.Fatal(err)
	}
	if res.State.Draining {
		t.Error("draining with the cluster view read and the node schedulable")
	}
	want := []dataplane.Source{
		{Node: ip("10.0.0.12"), Group: 7, Pod: ip("10.244.1.5")},
		{Node: ip("10.0.0.12"), Group: 7, Pod: ip("fd00:244:1::5")},
		{Node: ip("10.0.1.13"), Group: 7, Pod: ip("10.244.2.7")},
	}
	r := res.State.Gateway
	if r.KeepSources {
		t.Error("with the cluster view read the gateway still keeps the sources it had")
	}
	if !reflect.DeepEqual(r.Sources, want) {
		t.Errorf("sources\n got %v\nwant %v", r.Sources, want)
	}
	if wantNodes := []netip.Addr{ip("10.0.0.12"), ip("10.0.0.21"), ip("10.0.1.13")}; !slices.Equal(r.Nodes, wantNodes) {
		t.Errorf("nodes %v, want %v", r.Nodes, wantNodes)
	}
	if err := validate(res.State); err != nil {
		t.Errorf("state does not validate: %v", err)
	}

	// A worker that no gateway lists and that holds no egress IP never asks for the view.
	w := base()
	w.Gateways[0] = egw("out", 7, gw1)
	w.EgressIPs = nil
	if res, err := ComputeState(w); err != nil || res.NeedsClusterView {
		t.Errorf("worker: NeedsClusterView %v, %v; want false", res.NeedsClusterView, err)
	}
	// A standby listed by a gateway asks for it before it holds anything.
	w.Node = node("gw3", "b", "10.0.1.23")
	w.Gateways[0] = egw("out", 7, gw1, gwNode{"b", "gw3", "10.0.1.23", egressv1.GatewayStandby})
	if res, err := ComputeState(w); err != nil || !res.NeedsClusterView {
		t.Errorf("standby gateway: NeedsClusterView %v, %v; want true", res.NeedsClusterView, err)
	}
}

// TestControllerPodsMayProbe: the controller's pods in the release namespace are Probers (the
// datapath lets them reach the probe port); the same labels in another namespace, and other
// pods of the release namespace, are not.
func TestControllerPodsMayProbe(t *testing.T) {
	in := base()
	in.Namespace = "egressd-system"
	ctrl := []string{"app.kubernetes.io/name", "egressd", "app.kubernetes.io/component", "controller"}
	in.Pods = []corev1.Pod{
		pod("egressd-system", "controller", []string{"10.244.0.20"}, ctrl...),
		pod("default", "impostor", []string{"10.244.0.21"}, ctrl...),
		pod("egressd-system", "other", []string{"10.244.0.22"}, "app.kubernetes.io/name", "egressd"),
	}
	res, err := ComputeState(in)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, p := range res.State.Pods {
		got[p.Name] = p.Prober
	}
	want := map[string]bool{"egressd-system/controller": true, "default/impostor": false, "egressd-system/other": false}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("probers %v, want %v", got, want)
	}
}

// TestPrefixBudget: a namespace over its prefix budget loses only its own policies that do not
// fit (oldest kept first, a later smaller one still admitted); other namespaces' steering is
// untouched, ClusterEgressPolicies have a budget of their own, and each policy left out is a
// PrefixBudgetExceeded problem.
func TestPrefixBudget(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	// n prefixes 10.<block>.<i>.0/24, all distinct.
	prefixes := func(block, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("10.%d.%d.0/24", block, i)
		}
		return out
	}
	halves := func(block, n int) []string { // inside the /24s of prefixes(block, n)
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("10.%d.%d.0/25", block, i)
		}
		return out
	}
	aged := func(p egressv1.EgressPolicy, s int) egressv1.EgressPolicy {
		p.CreationTimestamp = metav1.NewTime(t0.Add(time.Duration(s) * time.Second))
		return p
	}
	in := base()
	in.Namespaces = append(in.Namespaces, namespace("team-a", "tier", "tenant"))
	in.Pods = append(in.Pods, pod("team-a", "t", []string{"10.244.1.5"}, "app", "api"))
	in.Policies = append(in.Policies,
		// Created in the order listed; "grow" does not fit after "first" (100 + 40 > 128),
		// "late" (20) still does. Destinations and exclusions both count.
		aged(pol("team-a", "grow", rule("out", sel("app", "api"), prefixes(2, 40))), 2),
		aged(pol("team-a", "first", rule("out", sel("app", "api"), prefixes(1, 64), halves(1, 36)...)), 1),
		aged(pol("team-a", "late", rule("out", sel("app", "api"), prefixes(3, 20))), 3),
	)
	// The cluster budget: "wide" (1 prefix) fits, "huge" (64 + 64 after it) does not.
	in.ClusterPolicies = []egressv1.ClusterEgressPolicy{
		cpol("wide", nsSel("tier", "tenant"), rule("out", allSel, []string{"192.0.2.0/24"})),
		cpol("zhuge", nsSel("tier", "tenant"), rule("out", allSel, prefixes(4, 64), prefixes(5, 64)...)),
	}

	res, err := ComputeState(in)
	if err != nil {
		t.Fatal(err)
	}
	var over []string
	for _, p := range res.Problems {
		if p.Kind == ProblemPrefixBudgetExceeded {
			over = append(over, p.String())
		}
	}
	want := []string{
		"EgressPolicy team-a/grow: needs 40 prefixes (destinationCIDRs plus excludedCIDRs) but namespace team-a may hold 128, and the policies created before it use 100 (120 with those admitted after it); not steered",
		"ClusterEgressPolicy zhuge: needs 128 prefixes (destinationCIDRs plus excludedCIDRs) but the ClusterEgressPolicies may hold 128, and the policies created before it use 1 (1 with those admitted after it); not steered",
	}
	if diff := cmp.Diff(want, over); diff != "" {
		t.Errorf("budget problems (-want +got):\n%s", diff)
	}

	pods := map[string]uint32{}
	for _, p := range res.State.Pods {
		pods[p.Name] = p.PolicySet
	}
	sets := map[uint32]dataplane.PolicySet{}
	for _, s := range res.State.PolicySets {
		sets[s.ID] = s
	}
	// default/a keeps exactly the steering it had.
	if s := sets[pods["default/a"]]; !reflect.DeepEqual(s.Destinations, []dataplane.Destination{dst("203.0.113.0/24", 7)}) || len(s.Excluded) != 0 {
		t.Errorf("default/a's set %+v, want 203.0.113.0/24 only", s)
	}
	// team-a/t: first and late, and wide; nothing of grow or zhuge.
	s := sets[pods["team-a/t"]]
	has := func(p string) bool {
		return slices.ContainsFunc(s.Destinations, func(d dataplane.Destination) bool { return d.Prefix == pfx(p) }) ||
			slices.Contains(s.Excluded, pfx(p))
	}
	for _, p := range []string{"10.1.0.0/24", "10.1.63.0/24", "10.1.35.0/25", "10.3.19.0/24", "192.0.2.0/24"} {
		if !has(p) {
			t.Errorf("team-a/t's set lacks %s", p)
		}
	}
	for _, p := range []string{"10.2.0.0/24", "10.4.0.0/24", "10.5.0.0/24"} {
		if has(p) {
			t.Errorf("team-a/t's set holds %s of a policy over its budget", p)
		}
	}
	if n := len(s.Destinations) + len(s.Excluded); n > contract.DefaultNamespacePrefixBudget+contract.DefaultClusterPrefixBudget {
		t.Errorf("team-a/t's set has %d entries, over both budgets together", n)
	}

	// The budget is the caller's: at 50 per namespace "first" (100) does not fit, "grow" (40)
	// does, and "late" (20) no longer does.
	in.PrefixBudget = contract.PrefixBudget{Namespace: 50}
	if res, err = ComputeState(in); err != nil {
		t.Fatal(err)
	}
	skipped := map[string]bool{}
	for _, p := range res.Problems {
		if p.Kind == ProblemPrefixBudgetExceeded {
			skipped[p.Object.String()] = true
		}
	}
	if want := map[string]bool{"EgressPolicy team-a/first": true, "EgressPolicy team-a/late": true, "ClusterEgressPolicy zhuge": true}; !reflect.DeepEqual(skipped, want) {
		t.Errorf("at a budget of 50 skipped %v, want %v", skipped, want)
	}
}

// TestPrefixBudgetBoundsEverySet: on random namespaces, policies and pods, every policy set
// holds at most the namespace budget plus the cluster budget of entries, and the node at most
// that times its sets: the bound docs/control-plane.md derives the default budgets from.
func TestPrefixBudgetBoundsEverySet(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	budget := contract.PrefixBudget{Namespace: 40, Cluster: 24}
	prefix := func() string {
		return fmt.Sprintf("10.%d.%d.0/%d", r.IntN(8), r.IntN(64)*4, []int{22, 24, 26}[r.IntN(3)])
	}
	prefixes := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = prefix()
		}
		return out
	}
	label := func() []string { return []string{"k", string(rune('a' + r.IntN(4)))} }
	for iter := range 300 {
		in := base()
		in.PrefixBudget = budget
		in.Namespaces, in.Pods, in.Policies, in.ClusterPolicies = nil, nil, nil, nil
		for n := range 3 {
			ns := fmt.Sprintf("ns%d", n)
			in.Namespaces = append(in.Namespaces, namespace(ns, "tenant", "yes"))
			for i := range 1 + r.IntN(8) {
				p := pol(ns, fmt.Sprintf("p%d", i), rule("out", sel(label()...), prefixes(1+r.IntN(30)), prefixes(r.IntN(10))...))
				p.CreationTimestamp = metav1.NewTime(time.Unix(int64(r.IntN(5)), 0))
				in.Policies = append(in.Policies, p)
			}
			for i := range 1 + r.IntN(6) {
				in.Pods = append(in.Pods, pod(ns, fmt.Sprintf("pod%d", i), []string{fmt.Sprintf("10.244.%d.%d", n, i+1)}, label()...))
			}
		}
		for i := range r.IntN(4) {
			in.ClusterPolicies = append(in.ClusterPolicies, cpol(fmt.Sprintf("c%d", i), nsSel("tenant", "yes"), rule("out", sel(label()...), prefixes(1+r.IntN(20)))))
		}
		res, err := ComputeState(in)
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for _, s := range res.State.PolicySets {
			n := len(s.Destinations) + len(s.Excluded)
			total += n
			if n > budget.Namespace+budget.Cluster {
				t.Fatalf("iteration %d: set %d holds %d entries, over %d + %d", iter, s.ID, n, budget.Namespace, budget.Cluster)
			}
		}
		if bound := len(res.State.PolicySets) * (budget.Namespace + budget.Cluster); total > bound {
			t.Fatalf("iteration %d: %d entries in %d sets, over %d", iter, total, len(res.State.PolicySets), bound)
		}
	}
}

// A gateway mounts a cloud address as soon as the cloud gives it the address, but serves its
// group with it only once Inputs.Delivered proves delivery for the EgressIP's generation; until
// then the Result asks for the proof, from the group's other gateways, other zones first.
func TestDeliveryProof(t *testing.T) {
	gwIn := func(delivered contract.Delivered) Inputs {
		in := base()
		in.Node = node("gw1", "a", "10.0.0.21")
		in.Pods = nil
		in.Gateways = []egressv1.EgressGateway{egw("out", 7, gw1, gw2, gw3,
			gwNode{"b", "gw4", "10.0.1.24", egressv1.GatewayUnhealthy})}
		e := eip("10.0.0.200", "out", "gw1")
		e.Generation = 3
		in.EgressIPs = []egressv1.EgressIP{e}
		in.Interfaces = []Interface{{Name: "eth0", Addrs: []netip.Addr{ip("10.0.0.21")}}}
		in.Delivered = delivered
		return in
	}
	mounted := []dataplane.EgressAddress{{IP: ip("10.0.0.200"), Interface: "eth0"}}
	served := []dataplane.ServedGroup{{Group: 7, EgressIPv4s: []netip.Addr{ip("10.0.0.200")}}}
	peers := []netip.AddrPort{netip.MustParseAddrPort("10.0.1.23:4790"), netip.MustParseAddrPort("10.0.0.22:4790")}
	for _, tc := range []struct {
		name      string
		delivered contract.Delivered
		groups    []dataplane.ServedGroup
		checks    []DeliveryCheck
	}{
		{"no proof yet: mounted, not served, proof asked", contract.Delivered{}, nil,
			[]DeliveryCheck{{IP: ip("10.0.0.200"), Generation: 3, Peers: peers}}},
		{"a proof of an earlier placement counts for nothing", contract.Delivered{ip("10.0.0.200"): 2}, nil,
			[]DeliveryCheck{{IP: ip("10.0.0.200"), Generation: 3, Peers: peers}}},
		{"proven: served", contract.Delivered{ip("10.0.0.200"): 3}, served, nil},
		{"proofs off: served on the cloud's word", nil, served, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := gwIn(tc.delivered)
			in.ProbePort = 4790
			res, err := ComputeState(in)
			if err != nil {
				t.Fatal(err)
			}
			role := res.State.Gateway
			if role == nil || !reflect.DeepEqual(role.Addresses, mounted) {
				t.Fatalf("gateway role %+v, want %v mounted", role, mounted)
			}
			if !reflect.DeepEqual(role.Groups, tc.groups) {
				t.Errorf("served %+v, want %+v", role.Groups, tc.groups)
			}
			if !reflect.DeepEqual(res.DeliveryChecks, tc.checks) {
				t.Errorf("delivery checks %+v, want %+v", res.DeliveryChecks, tc.checks)
			}
		})
	}
}

// TestPublicNATSource: a held egress IP whose public IP the cloud translates from another
// address (status.publicNATSource: GCP's access config NATs the interface's primary address)
// serves its group with that address for public-bound flows and the egress IP for the private
// destinations (cloud.privateCIDRs, defaulting to GCP's valid subnet ranges). A source the
// interface lacks is refused, never served untranslated.
func TestPublicNATSource(t *testing.T) {
	gwIn := func(mod func(*egressv1.EgressGateway, []egressv1.EgressIP)) Inputs {
		in := base()
		in.Node = node("gw1", "a", "10.0.0.21")
		in.Pods = nil
		g := egw("out", 7, gw1)
		g.Spec.Addresses.Cloud = &egressv1.CloudAddresses{Provider: "gcp", Public: true}
		pub := eip("10.0.0.200", "out", "gw1")
		pub.Spec.Provider, pub.Spec.Public = "gcp", true
		pub.Status.PublicIP, pub.Status.PublicNATSource = "34.1.2.3", "10.0.0.21"
		eips := []egressv1.EgressIP{pub}
		if mod != nil {
			mod(&g, eips)
		}
		in.Gateways = []egressv1.EgressGateway{g}
		in.EgressIPs = eips
		in.Interfaces = []Interface{{Name: "eth0", Addrs: []netip.Addr{ip("10.0.0.21")}}, {Name: "eth1", Addrs: []netip.Addr{ip("10.0.5.9")}}}
		in.ClusterView = true
		return in
	}
	defaults, _ := contract.PrivateDestinations(nil)
	for _, tc := range []struct {
		name    string
		mod     func(*egressv1.EgressGateway, []egressv1.EgressIP)
		want    []dataplane.ServedGroup
		problem ProblemKind
	}{
		{"GCP: public-bound flows from the primary, private ones from the alias", nil,
			[]dataplane.ServedGroup{{Group: 7, EgressIPv4s: []netip.Addr{ip("10.0.0.200")}, PublicSource: ip("10.0.0.21"), Private: defaults}}, ""},
		{"privateCIDRs configured", func(g *egressv1.EgressGateway, _ []egressv1.EgressIP) {
			g.Spec.Addresses.Cloud.PrivateCIDRs = []string{"10.0.0.0/8", "35.0.0.0/8", "10.0.0.0/8"}
		}, []dataplane.ServedGroup{{Group: 7, EgressIPv4s: []netip.Addr{ip("10.0.0.200")}, PublicSource: ip("10.0.0.21"), Private: pfxs("10.0.0.0/8", "35.0.0.0/8")}}, ""},
		{"AWS/Azure: no NAT source, the egress IP is translated itself", func(_ *egressv1.EgressGateway, e []egressv1.EgressIP) {
			e[0].Status.PublicNATSource = ""
		}, []dataplane.ServedGroup{{Group: 7, EgressIPv4s: []netip.Addr{ip("10.0.0.200")}}}, ""},
		{"NAT source is the egress IP itself", func(_ *egressv1.EgressGateway, e []egressv1.EgressIP) {
			e[0].Status.PublicNATSource = "10.0.0.200"
		}, []dataplane.ServedGroup{{Group: 7, EgressIPv4s: []netip.Addr{ip("10.0.0.200")}}}, ""},
		{"no public IP: the NAT source means nothing", func(_ *egressv1.EgressGateway, e []egressv1.EgressIP) {
			e[0].Status.PublicIP = ""
		}, []dataplane.ServedGroup{{Group: 7, EgressIPv4s: []netip.Addr{ip("10.0.0.200")}}}, ""},
		{"NAT source on another interface: not served", func(_ *egressv1.EgressGateway, e []egressv1.EgressIP) {
			e[0].Status.PublicNATSource = "10.0.5.9"
		}, nil, ProblemNoInterface},
		{"NAT source not on the node: not served", func(_ *egressv1.EgressGateway, e []egressv1.EgressIP) {
			e[0].Status.PublicNATSource = "10.0.0.99"
		}, nil, ProblemNoInterface},
		{"NAT source not an IPv4 address: not served", func(_ *egressv1.EgressGateway, e []egressv1.EgressIP) {
			e[0].Status.PublicNATSource = "fd00::1"
		}, nil, ProblemNoInterface},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := ComputeState(gwIn(tc.mod))
			if err != nil {
				t.Fatal(err)
			}
			role := res.State.Gateway
			if role == nil || len(role.Addresses) != 1 || role.Addresses[0] != (dataplane.EgressAddress{IP: ip("10.0.0.200"), Interface: "eth0"}) {
				t.Fatalf("gateway role %+v: want 10.0.0.200 mounted on eth0", role)
			}
			if diff := cmp.Diff(tc.want, role.Groups, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("served groups (-want +got):\n%s", diff)
			}
			var kinds []ProblemKind
			for _, p := range res.Problems {
				kinds = append(kinds, p.Kind)
			}
			if tc.problem != "" && !slices.Contains(kinds, tc.problem) || tc.problem == "" && len(kinds) > 0 {
				t.Errorf("problems %+v, want %q", res.Problems, tc.problem)
			}
		})
	}
}

// A group's only gateway has no peer to prove delivery with: it serves the address on the
// cloud's word and asks for a check without peers, which publishes it as delivered.
func TestDeliveryProofAlone(t *testing.T) {
	in := base()
	in.Node = node("gw1", "a", "10.0.0.21")
	in.Pods = nil
	in.Gateways = []egressv1.EgressGateway{egw("out", 7, gw1)}
	e := eip("10.0.0.200", "out", "gw1")
	e.Generation = 3
	in.EgressIPs = []egressv1.EgressIP{e}
	in.Interfaces = []Interface{{Name: "eth0", Addrs: []netip.Addr{ip("10.0.0.21")}}}
	in.Delivered = contract.Delivered{}
	in.ProbePort = 4790
	res, err := ComputeState(in)
	if err != nil {
		t.Fatal(err)
	}
	served := []dataplane.ServedGroup{{Group: 7, EgressIPv4s: []netip.Addr{ip("10.0.0.200")}}}
	if role := res.State.Gateway; role == nil || !reflect.DeepEqual(role.Groups, served) {
		t.Errorf("gateway role %+v, want %+v served", role, served)
	}
	if want := []DeliveryCheck{{IP: ip("10.0.0.200"), Generation: 3}}; !reflect.DeepEqual(res.DeliveryChecks, want) {
		t.Errorf("delivery checks %+v, want %+v", res.DeliveryChecks, want)
	}
}

// A check without peers is taken on the cloud's word: published as delivered at once, so that
// the coordinator lists a group's only gateway Active (it waits for the proof of every node
// whose Lease carries proofs), and any proof in progress for the address ends.
func TestDeliveriesWithoutPeers(t *testing.T) {
	d := newDeliveries()
	listen := func(string, string) (net.PacketConn, error) { return net.ListenPacket("udp4", "127.0.0.1:0") }
	addr := ip("10.0.0.200")
	held := map[netip.Addr]int64{addr: 3}
	ctx := context.Background()
	d.update(ctx, logr.Discard(), held, []DeliveryCheck{{IP: addr, Generation: 3, Peers: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}}}, listen, func() {})
	if got := d.pending(); !slices.Equal(got, []netip.Addr{addr}) {
		t.Fatalf("pending %v, want the proof in progress", got)
	}
	if d.snapshot().Proves(addr, 3) {
		t.Fatal("proven before any probe came back")
	}
	d.update(ctx, logr.Discard(), held, []DeliveryCheck{{IP: addr, Generation: 3}}, listen, func() {})
	if got := d.pending(); len(got) != 0 {
		t.Errorf("pending %v once the peers are gone, want none", got)
	}
	if !d.snapshot().Proves(addr, 3) {
		t.Errorf("proofs %v, want %s@3 published on the cloud's word", d.snapshot(), addr)
	}
	select {
	case <-d.changed:
	default:
		t.Error("the heartbeat was not woken to publish the proof")
	}
	d.stop()
}
