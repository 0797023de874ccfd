// Package explain answers "where does this pod's traffic leave, and why": it feeds the objects
// the agent on the pod's node would see into gateway/agent.ComputeState and reads the node's
// decision back. Every verdict comes from ComputeState, including why a policy does not apply
// (by asking it again with that one policy and, where needed, an open stand-in gateway), so
// egressctl and the agent cannot disagree on the rules.
package explain

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/agent"
	"github.com/egressd/egressd/gateway/agent/dataplane"
	"github.com/egressd/egressd/gateway/contract"
)

// Explanation is the answer; it is also the -o json|yaml document.
type Explanation struct {
	Pod       string   `json:"pod"`
	Namespace string   `json:"namespace"`
	Node      string   `json:"node,omitempty"`
	Zone      string   `json:"zone,omitempty"`
	PodIPs    []string `json:"podIPs,omitempty"`
	// Selected: some policy steers the pod's traffic. Otherwise Why says why none does.
	Selected bool   `json:"selected"`
	Why      string `json:"why,omitempty"`
	// PolicySet is the set id as computed from the current objects. The agent keeps ids
	// stable across changes, so the id on the node can differ; egressctl list shows it.
	PolicySet    uint32    `json:"policySet,omitempty"`
	Policies     []Verdict `json:"policies,omitempty"`
	Destinations []Route   `json:"destinations,omitempty"`
	Excluded     []string  `json:"excluded,omitempty"`
	Groups       []Group   `json:"groups,omitempty"`
	// HealthAssumed: egressctl cannot see the agent's probe results, so every gateway the
	// coordinator lists as Active or Draining counts as healthy.
	HealthAssumed bool `json:"healthAssumed,omitempty"`
	// Problems are what the agent would log about the policies considered and the gateways
	// used.
	Problems []agent.Problem `json:"problems,omitempty"`
}

// Verdict is one policy that could select the pod and whether it does.
type Verdict struct {
	Kind         string   `json:"kind"`
	Namespace    string   `json:"namespace,omitempty"`
	Name         string   `json:"name"`
	Gateway      string   `json:"gateway"`
	Priority     int32    `json:"priority,omitempty"`
	Applies      bool     `json:"applies"`
	Reason       string   `json:"reason"`
	Destinations []string `json:"destinationCIDRs"`
	Excluded     []string `json:"excludedCIDRs,omitempty"`
}

// Ref is how the policy is named in text and in ComputeState's keys.
func (v Verdict) Ref() string {
	if v.Namespace == "" {
		return v.Name
	}
	return v.Namespace + "/" + v.Name
}

// Object is the policy as the agent's problems name it.
func (v Verdict) Object() agent.ObjectRef {
	return agent.ObjectRef{Kind: v.Kind, Namespace: v.Namespace, Name: v.Name}
}

// Route is a resolved destination prefix of the pod's policy set.
type Route struct {
	Prefix  string `json:"prefix"`
	Gateway string `json:"gateway"`
	Group   uint32 `json:"group"`
	// Policies are the applying policies through this gateway whose destinations cover it.
	Policies []string `json:"policies,omitempty"`
}

// Group is a gateway group the pod's traffic uses, as the pod's node sees it.
type Group struct {
	Gateway  string `json:"gateway"`
	ID       uint32 `json:"id"`
	Mode     string `json:"mode"`
	Affinity string `json:"zoneAffinity"`
	// Used are the gateways the node's datapath lists, in its order; new flows hash over the
	// healthy ones. Unused are the group's other gateways and why.
	Used   []Gateway `json:"used"`
	Unused []Gateway `json:"unused,omitempty"`
	// EgressIPs are the addresses new flows can leave with (private, and public if any);
	// DrainingIPs those only established flows still leave with.
	EgressIPs   []string `json:"egressIPs,omitempty"`
	DrainingIPs []string `json:"drainingEgressIPs,omitempty"`
}

// Gateway is one gateway node of a group.
type Gateway struct {
	Node       string `json:"node"`
	Zone       string `json:"zone"`
	State      string `json:"state"`
	UnderlayIP string `json:"underlayIP,omitempty"`
	Healthy    bool   `json:"healthy"`
	Draining   bool   `json:"draining,omitempty"`
	Self       bool   `json:"self,omitempty"`
	EgressIPv4 string `json:"egressIPv4,omitempty"`
	EgressIPv6 string `json:"egressIPv6,omitempty"`
	PublicIP   string `json:"publicIP,omitempty"`
	Note       string `json:"note,omitempty"`
}

// Gather reads the pod and what the agent on its node would have in its cache, with the
// agent's own reader (agent.ReadInputs), asking the API server for that node's pods only.
func Gather(ctx context.Context, c client.Reader, namespace, name string) (*corev1.Pod, agent.Inputs, error) {
	var pod corev1.Pod
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &pod); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, agent.Inputs{}, fmt.Errorf("pod %s/%s not found", namespace, name)
		}
		return nil, agent.Inputs{}, fmt.Errorf("reading pod %s/%s: %w", namespace, name, err)
	}
	if pod.Spec.NodeName == "" {
		return &pod, agent.Inputs{}, nil
	}
	in, err := agent.ReadInputs(ctx, c, pod.Spec.NodeName, client.MatchingFields{"spec.nodeName": pod.Spec.NodeName})
	if err != nil {
		return nil, in, err
	}
	return &pod, in, nil
}

// standIn names the open gateway the counterfactual runs point a policy at.
const standIn = "egressctl-stand-in"

// Explain decides, with ComputeState, what happens to pod's traffic given in (the inputs of
// the agent on the pod's node; in.Health empty means unknown).
func Explain(pod *corev1.Pod, in agent.Inputs) *Explanation {
	ex := &Explanation{Pod: pod.Name, Namespace: pod.Namespace, Node: pod.Spec.NodeName}
	for _, ip := range pod.Status.PodIPs {
		ex.PodIPs = append(ex.PodIPs, ip.IP)
	}
	if len(ex.PodIPs) == 0 && pod.Status.PodIP != "" {
		ex.PodIPs = []string{pod.Status.PodIP}
	}
	if pod.Spec.NodeName == "" {
		ex.Why = "the pod is not scheduled to a node yet"
		return ex
	}
	if in.Node == nil {
		ex.Why = fmt.Sprintf("node %s does not exist", pod.Spec.NodeName)
		return ex
	}
	ex.Zone = in.Node.Labels[corev1.LabelTopologyZone]
	ex.HealthAssumed = len(in.Health) == 0
	res, err := agent.ComputeState(in)
	if err != nil {
		ex.Why = fmt.Sprintf("the agent on %s cannot compute a datapath: %v", in.Node.Name, err)
		return ex
	}
	key := pod.Namespace + "/" + pod.Name
	i := slices.IndexFunc(res.State.Pods, func(p dataplane.Pod) bool { return p.Name == key })
	if i < 0 {
		switch {
		case pod.Spec.HostNetwork:
			ex.Why = "the pod uses the host network: its traffic is the node's, which egressd does not steer"
		case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
			ex.Why = fmt.Sprintf("the pod has finished (%s)", pod.Status.Phase)
		default:
			ex.Why = "the pod has no IP yet: the datapath matches traffic by source pod IP"
		}
		return ex
	}
	ex.Policies = verdicts(pod, in)
	setID := res.State.Pods[i].PolicySet
	if setID == 0 {
		ex.Why = whyNone(pod, ex.Policies)
		ex.Problems = relevantProblems(res.Problems, ex.Policies, nil)
		return ex
	}
	ex.Selected, ex.PolicySet = true, setID
	si := slices.IndexFunc(res.State.PolicySets, func(s dataplane.PolicySet) bool { return s.ID == setID })
	set := res.State.PolicySets[si]
	groups := map[uint32]bool{}
	for _, d := range set.Destinations {
		r := Route{Prefix: d.Prefix.String(), Group: d.Group, Gateway: res.GroupNames[d.Group]}
		for _, v := range ex.Policies {
			if v.Applies && v.Gateway == r.Gateway && covers(v.Destinations, d.Prefix) {
				r.Policies = append(r.Policies, v.Kind+" "+v.Ref())
			}
		}
		ex.Destinations = append(ex.Destinations, r)
		groups[d.Group] = true
	}
	for _, e := range set.Excluded {
		ex.Excluded = append(ex.Excluded, e.String())
	}
	var used []string
	for _, g := range res.State.Groups {
		if groups[g.ID] {
			grp := group(g, res, in)
			ex.Groups = append(ex.Groups, grp)
			used = append(used, grp.Gateway)
		}
	}
	ex.Problems = relevantProblems(res.Problems, ex.Policies, used)
	return ex
}

// verdicts asks ComputeState about each policy that could select the pod on its own: with
// its real gateway (does it apply?), else with an open stand-in gateway (do its selectors
// match?), else with an empty podSelector (is it the namespace selector?).
func verdicts(pod *corev1.Pod, in agent.Inputs) []Verdict {
	var out []Verdict
	selects := func(pols []egressv1.EgressPolicy, cpols []egressv1.ClusterEgressPolicy, gws []egressv1.EgressGateway) (bool, []agent.Problem) {
		one := agent.Inputs{Node: in.Node, Pods: []corev1.Pod{*pod}, Namespaces: in.Namespaces,
			Policies: pols, ClusterPolicies: cpols, Gateways: gws}
		res, err := agent.ComputeState(one)
		if err != nil || len(res.State.Pods) != 1 {
			return false, res.Problems
		}
		return res.State.Pods[0].PolicySet != 0, res.Problems
	}
	open := []egressv1.EgressGateway{{ObjectMeta: metav1.ObjectMeta{Name: standIn}, Status: egressv1.EgressGatewayStatus{GroupID: 1}}}
	gatewayWhy := func(name string) string {
		i := slices.IndexFunc(in.Gateways, func(g egressv1.EgressGateway) bool { return g.Name == name })
		switch {
		case i < 0:
			return fmt.Sprintf("EgressGateway %s does not exist", name)
		case in.Gateways[i].Status.GroupID == 0:
			return fmt.Sprintf("EgressGateway %s has no groupID yet (the coordinator assigns it)", name)
		}
		return fmt.Sprintf("EgressGateway %s does not admit namespace %s (allowedNamespaces)", name, pod.Namespace)
	}
	decide := func(v *Verdict, real, withStandIn func() (bool, []agent.Problem), anyPod func() (bool, []agent.Problem), nsSel bool) {
		if ok, _ := real(); ok {
			v.Applies, v.Reason = true, "selects the pod"
			return
		}
		ok, problems := withStandIn()
		switch {
		case ok:
			v.Reason = gatewayWhy(v.Gateway)
		case len(problems) > 0:
			var msgs []string
			for _, p := range problems {
				msgs = append(msgs, p.String())
			}
			v.Reason = strings.Join(msgs, "; ")
		case !nsSel:
			v.Reason = "podSelector does not match the pod's labels"
		default:
			if ok, _ := anyPod(); ok {
				v.Reason = "podSelector does not match the pod's labels"
			} else {
				v.Reason = fmt.Sprintf("namespaceSelector does not match namespace %s", pod.Namespace)
			}
		}
	}
	for _, p := range in.Policies {
		if p.Namespace != pod.Namespace {
			continue // a namespaced policy only ever selects pods of its own namespace
		}
		v := Verdict{Kind: "EgressPolicy", Namespace: p.Namespace, Name: p.Name, Gateway: p.Spec.Gateway,
			Priority: p.Spec.Priority, Destinations: p.Spec.DestinationCIDRs, Excluded: p.Spec.ExcludedCIDRs}
		alt := *p.DeepCopy()
		alt.Spec.Gateway = standIn
		decide(&v,
			func() (bool, []agent.Problem) { return selects([]egressv1.EgressPolicy{p}, nil, in.Gateways) },
			func() (bool, []agent.Problem) { return selects([]egressv1.EgressPolicy{alt}, nil, open) },
			nil, false)
		out = append(out, v)
	}
	for _, p := range in.ClusterPolicies {
		v := Verdict{Kind: "ClusterEgressPolicy", Name: p.Name, Gateway: p.Spec.Gateway,
			Priority: p.Spec.Priority, Destinations: p.Spec.DestinationCIDRs, Excluded: p.Spec.ExcludedCIDRs}
		alt := *p.DeepCopy()
		alt.Spec.Gateway = standIn
		anyPod := *alt.DeepCopy()
		anyPod.Spec.PodSelector = metav1.LabelSelector{}
		decide(&v,
			func() (bool, []agent.Problem) { return selects(nil, []egressv1.ClusterEgressPolicy{p}, in.Gateways) },
			func() (bool, []agent.Problem) { return selects(nil, []egressv1.ClusterEgressPolicy{alt}, open) },
			func() (bool, []agent.Problem) { return selects(nil, []egressv1.ClusterEgressPolicy{anyPod}, open) },
			true)
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b Verdict) int {
		return cmp.Or(-cmpBool(a.Applies, b.Applies), strings.Compare(a.Kind, b.Kind), strings.Compare(a.Ref(), b.Ref()))
	})
	return out
}

func whyNone(pod *corev1.Pod, vs []Verdict) string {
	if len(vs) == 0 {
		return fmt.Sprintf("no EgressPolicy in namespace %s and no ClusterEgressPolicy exists: traffic leaves the usual way, with the node's IP", pod.Namespace)
	}
	return "no policy applies to the pod (see each policy's reason): traffic leaves the usual way, with the node's IP"
}

// relevantProblems keeps ComputeState's problems with the policies considered and the
// gateways used (as the problem's object), leaving out the rest of the cluster.
func relevantProblems(problems []agent.Problem, vs []Verdict, gateways []string) []agent.Problem {
	var out []agent.Problem
	for _, p := range problems {
		keep := slices.ContainsFunc(vs, func(v Verdict) bool { return p.Object == v.Object() }) ||
			slices.ContainsFunc(gateways, func(g string) bool { return p.Object == agent.ObjectRef{Kind: "EgressGateway", Name: g} })
		if keep {
			out = append(out, p)
		}
	}
	return out
}

func covers(cidrs []string, p netip.Prefix) bool {
	for _, c := range cidrs {
		d, err := netip.ParsePrefix(c)
		if err == nil && d.Addr().Is4() == p.Addr().Is4() && d.Bits() <= p.Bits() && d.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// group describes a group as the node's datapath has it, and the group's gateways it left out.
func group(g dataplane.Group, res agent.Result, in agent.Inputs) Group {
	out := Group{ID: g.ID, Gateway: res.GroupNames[g.ID], Affinity: string(egressv1.DefaultZoneAffinity), Mode: string(egressv1.DefaultMode)}
	var gw *egressv1.EgressGateway
	for i := range in.Gateways {
		if in.Gateways[i].Name == out.Gateway {
			gw = &in.Gateways[i]
		}
	}
	if gw == nil {
		return out
	}
	out.Mode, out.Affinity = string(contract.Mode(&gw.Spec)), string(contract.ZoneAffinity(&gw.Spec))
	public := map[string]string{}
	for _, e := range in.EgressIPs {
		if e.Spec.Gateway == gw.Name && e.Status.PublicIP != "" {
			public[e.Spec.IP] = e.Status.PublicIP
		}
	}
	for _, z := range gw.Status.Zones {
		for _, h := range z.EgressIPs {
			if h.PublicIP != "" {
				public[h.IP] = h.PublicIP
			}
		}
	}
	type where struct {
		zone string
		st   egressv1.GatewayNodeStatus
	}
	byNode := map[string]where{}
	for _, z := range gw.Status.Zones {
		for _, n := range z.Gateways {
			byNode[n.Node] = where{z.Name, n}
		}
	}
	nodeZone := in.Node.Labels[corev1.LabelTopologyZone]
	listed := map[string]bool{}
	seen := map[string]bool{}
	for _, n := range g.Gateways {
		name := res.GatewayNames[n.ID]
		listed[name] = true
		w := byNode[name]
		u := Gateway{Node: name, Zone: w.zone, State: string(w.st.State), UnderlayIP: n.NodeIP.String(), Healthy: n.Healthy,
			Draining: n.Draining, Self: n.NodeIP == res.State.NodeIP}
		if n.EgressIPv4.IsValid() {
			u.EgressIPv4 = n.EgressIPv4.String()
		}
		if n.EgressIPv6.IsValid() {
			u.EgressIPv6 = n.EgressIPv6.String()
		}
		u.PublicIP = public[u.EgressIPv4]
		var notes []string
		if u.Self {
			notes = append(notes, "this node: no tunnel hop")
		}
		if n.Draining {
			notes = append(notes, "draining: keeps its established flows, gets no new ones")
		}
		if !n.EgressIPv4.IsValid() && !n.EgressIPv6.IsValid() {
			notes = append(notes, "holds no egress IP of the group: its traffic is dropped until one is assigned")
		}
		if !n.Healthy {
			notes = append(notes, "unhealthy per the agent's probes: no new flows")
		}
		u.Note = strings.Join(notes, "; ")
		out.Used = append(out.Used, u)
		if n.Healthy {
			dst := &out.EgressIPs
			if n.Draining {
				dst = &out.DrainingIPs
			}
			for _, ip := range []string{u.EgressIPv4, u.EgressIPv6, u.PublicIP} {
				if ip != "" && !seen[ip] {
					seen[ip] = true
					*dst = append(*dst, ip)
				}
			}
		}
	}
	for _, z := range gw.Status.Zones {
		for _, n := range z.Gateways {
			if listed[n.Node] {
				continue
			}
			u := Gateway{Node: n.Node, Zone: z.Name, State: string(n.State), UnderlayIP: n.UnderlayIP}
			switch {
			case n.State == egressv1.GatewayStandby:
				u.Note = "Standby: gets traffic only after a failover moves egress IPs to it"
			case n.State == egressv1.GatewayUnhealthy:
				u.Note = "Unhealthy per the coordinator" + reason(n.Reason)
			case n.State != egressv1.GatewayActive && n.State != egressv1.GatewayDraining:
				u.Note = "state " + string(n.State)
			case z.Name != nodeZone && out.Affinity == string(egressv1.AffinityLocalOnly):
				u.Note = fmt.Sprintf("zone %s: LocalOnly keeps the node's zone %s", z.Name, cmp.Or(nodeZone, "(none)"))
			case z.Name != nodeZone:
				u.Note = fmt.Sprintf("zone %s: PreferLocal uses zone %s while one of its gateways takes new flows", z.Name, cmp.Or(nodeZone, "(none)"))
			default:
				u.Note = "not listed by the datapath (no IPv4 underlay IP, or beyond the 8 gateways a group holds)"
			}
			out.Unused = append(out.Unused, u)
		}
	}
	slices.Sort(out.EgressIPs)
	slices.Sort(out.DrainingIPs)
	return out
}

func reason(r string) string {
	if r == "" {
		return ""
	}
	return " (" + r + ")"
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}
