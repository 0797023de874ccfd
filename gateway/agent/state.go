package agent

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/bpf"
	"github.com/egressd/egressd/gateway/agent/dataplane"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/gateway/probe"
)

// Inputs is everything ComputeState decides from: cached API objects, the agent's own probe
// results and the node's interfaces. ComputeState does no I/O.
type Inputs struct {
	// Node is this node. Its InternalIP (IPv4) is the underlay IP, its zone label the zone.
	Node *corev1.Node
	// Pods are the pods scheduled on this node.
	Pods            []corev1.Pod
	Namespaces      []corev1.Namespace
	Policies        []egressv1.EgressPolicy
	ClusterPolicies []egressv1.ClusterEgressPolicy
	Gateways        []egressv1.EgressGateway
	EgressIPs       []egressv1.EgressIP
	// Health is this agent's probe verdict per gateway underlay IP. A gateway missing from it
	// is healthy: the coordinator listed it Active, and the probes take it out within
	// FailureThreshold intervals if it is not.
	Health map[netip.Addr]bool
	// ProbeDraining is the draining bit of each gateway's last probe reply (probe.Status): a
	// gateway whose node is cordoned gets no new flows even before the coordinator marks it
	// Draining.
	ProbeDraining map[netip.Addr]bool
	// Interfaces of this node, where the egress IPs this node holds are mounted.
	Interfaces []Interface
	// SetIDs is the policy-set id assignment of the previous Result, so ids stay stable.
	SetIDs map[string]uint32
	// Listed are the groups of the previous Result (its State.Groups): a gateway whose agent
	// Lease expired stays listed for its pinned flows only while it was listed with an address
	// before (leaseExpiredKeep). Nil keeps none.
	Listed []dataplane.Group
	// ProbePort is the probe port of every node.
	ProbePort uint16
	// PrefixBudget bounds the prefixes of each namespace's EgressPolicies and of the
	// ClusterEgressPolicies (zero fields: the contract's defaults); policies over it are
	// skipped. The coordinator must use the same budget to say which ones.
	PrefixBudget contract.PrefixBudget
	// Namespace is the release namespace: the controller's pods there may reach ProbePort
	// (contract.ControllerPod); no other pod may.
	Namespace string
	// ClusterView says that ClusterPods and Nodes are read (from a synced cache): the
	// cluster's pods and nodes, which a gateway node admits tunnelled traffic from. The agent
	// reads them only on a node that Result.NeedsClusterView; without them its gateway role
	// admits nothing.
	ClusterView bool
	ClusterPods []corev1.Pod
	Nodes       []corev1.Node
	// MaxGroup is the largest group id this node's packet mark layout carries
	// (marks.Layout.MaxGroup of --mark-mask); zero means bpf.MaxGroup. A gateway numbered
	// past it is skipped with ProblemGroupIDTooLarge, never cut to another group's id.
	MaxGroup uint32
	// Delivered holds the delivery proofs this node's agent made (docs/control-plane.md,
	// "Delivery"): a cloud egress IP the cloud gave this node is mounted at once but served
	// (SNATed to) only once Delivered proves it for the EgressIP's generation. Nil turns the
	// proof off: held addresses are served at once (egressctl explain, and --verify-delivery=false).
	Delivered contract.Delivered
}

// Interface is a network interface of this node.
type Interface struct {
	Name  string
	MAC   net.HardwareAddr
	Addrs []netip.Addr
}

// Result is the decision of ComputeState.
type Result struct {
	// State is what the datapath must look like.
	State dataplane.State
	// SetIDs maps a policy set's key (its member policies) to its id; feed it back.
	SetIDs map[string]uint32
	// Probes are the gateways to probe: every Active or Draining gateway of every group a
	// local pod uses, whatever the zone affinity, so that failover to another zone is decided
	// on fresh results.
	Probes []probe.Target
	// Members are, per group, the gateways probed for it (for metrics).
	Members []Member
	// GroupNames maps group ids to EgressGateway names, GatewayNames gateway ids to node
	// names (for metrics).
	GroupNames   map[uint32]string
	GatewayNames map[uint32]string
	// Problems are objects ComputeState skipped or used in part, and why.
	Problems []Problem
	// Announce are the addresses of State.Gateway that belong to static groups: nobody but
	// this node tells the neighbours they moved, so the agent sends gratuitous ARP /
	// unsolicited NA for each one it did not hold before. Cloud addresses are routed by the
	// cloud and nodeInterface ones never move.
	Announce []dataplane.EgressAddress
	// NeedsClusterView is set on a node that an EgressGateway lists (in any state) or that
	// holds an egress IP: it may serve a group now or soon, and admits tunnelled traffic only
	// from the pods of the cluster's nodes (Inputs.ClusterView).
	NeedsClusterView bool
	// DeliveryChecks are the cloud egress IPs mounted here whose delivery is not proven yet
	// (Inputs.Delivered): the agent probes Peers from each address and, once one answers, adds
	// the proof and computes again.
	DeliveryChecks []DeliveryCheck
}

// DeliveryCheck is a delivery proof to make: a probe sent from IP to any of Peers (other
// gateways' probe responders) whose reply comes back proves that the fabric accepts the address
// from this node (a cloud's source check) and delivers it here. A check without Peers (no other
// gateway to probe, or an IPv6 address) is taken on the cloud's word: the address is served
// already, and the agent publishes it as delivered at once.
type DeliveryCheck struct {
	IP         netip.Addr
	Generation int64
	Peers      []netip.AddrPort
}

// Member is a gateway node probed for a group.
type Member struct {
	Group, Node string
	Addr        netip.Addr
	Self        bool
}

// GatewayID is a gateway's id in the datapath: its underlay IPv4 address, big-endian. It is
// unique without coordination.
func GatewayID(underlay netip.Addr) uint32 {
	b := underlay.As4()
	return binary.BigEndian.Uint32(b[:])
}

// policy is a parsed EgressPolicy or ClusterEgressPolicy.
type policy struct {
	key       string // "ns/name" or "name": unique across both kinds
	name, ns  string // ns is empty for a ClusterEgressPolicy
	cluster   bool
	pods, nss labels.Selector
	dests     []netip.Prefix
	excl      []netip.Prefix
	priority  int32
	gw        *gatewayInfo
}

// selects reports whether the policy steers pod p, whose namespace has the labels nsLabels:
// the namespace matches (its own for an EgressPolicy, the namespace selector for a
// ClusterEgressPolicy), the pod selector matches, and the policy's gateway admits the
// namespace.
func (p *policy) selects(pod *corev1.Pod, nsLabels labels.Set) bool {
	if p.cluster {
		if !p.nss.Matches(nsLabels) {
			return false
		}
	} else if p.ns != pod.Namespace {
		return false
	}
	if !p.pods.Matches(labels.Set(pod.Labels)) {
		return false
	}
	ok, _ := contract.NamespaceAdmitted(p.gw.obj.Spec.AllowedNamespaces, pod.Namespace, nsLabels)
	return ok
}

// before reports whether p wins over q on equal prefixes: higher priority, then the lower
// name, then the lower namespace (a ClusterEgressPolicy's empty one first).
func (p *policy) before(q *policy) bool {
	if p.priority != q.priority {
		return p.priority > q.priority
	}
	if p.name != q.name {
		return p.name < q.name
	}
	return p.ns < q.ns
}

type gatewayInfo struct {
	obj   *egressv1.EgressGateway
	group uint32
}

// ComputeState turns the inputs into the node's datapath state. It fails only when the node
// itself is unusable (no IPv4 InternalIP); objects it cannot use are skipped and listed in
// Result.Problems.
func ComputeState(in Inputs) (Result, error) {
	res := Result{SetIDs: map[string]uint32{}, GroupNames: map[uint32]string{}, GatewayNames: map[uint32]string{}}
	if in.Node == nil {
		return res, errors.New("node not known yet")
	}
	nodeIP := contract.UnderlayIP(in.Node)
	if !nodeIP.IsValid() {
		return res, fmt.Errorf("node %s has no IPv4 InternalIP", in.Node.Name)
	}
	res.State.NodeIP = nodeIP
	// The datapath answers probes on this node, with the bit its userspace responder sets.
	res.State.ProbePort = in.ProbePort
	res.State.Draining = in.Node.Spec.Unschedulable
	problem := func(p Problem) { res.Problems = append(res.Problems, p) }

	gateways := map[string]*gatewayInfo{}
	for i := range in.Gateways {
		g := &in.Gateways[i]
		id := g.Status.GroupID
		if id < 1 {
			problem(problemf(ProblemNoGroupID, gatewayRef(g.Name), nil, "no group id yet"))
			continue
		}
		if maxGroup := cmp.Or(in.MaxGroup, bpf.MaxGroup); uint32(id) > maxGroup {
			problem(problemf(ProblemGroupIDTooLarge, gatewayRef(g.Name), nil,
				"group id %d does not fit this node's packet mark layout (group ids 1-%d; widen --mark-mask, chart agent.markMask): "+
					"its policies are not steered from this node and it cannot serve here", id, maxGroup))
			continue
		}
		gateways[g.Name] = &gatewayInfo{obj: g, group: uint32(id)}
	}
	nsLabels := map[string]labels.Set{}
	for i := range in.Namespaces {
		nsLabels[in.Namespaces[i].Name] = labels.Set(in.Namespaces[i].Labels)
	}
	labelsOf := func(ns string) labels.Set {
		if l, ok := nsLabels[ns]; ok {
			return l
		}
		// The API server sets this label on every namespace; it is all we know of one the
		// cache has not seen yet.
		return labels.Set{corev1.LabelMetadataName: ns}
	}

	policies := parsePolicies(in, gateways, problem)

	// Pods and their policy sets.
	type podSet struct {
		pod      dataplane.Pod
		key      string
		policies []*policy
	}
	var pods []podSet
	for i := range in.Pods {
		p := &in.Pods[i]
		if !contract.Steerable(p) {
			continue
		}
		ps := podSet{pod: dataplane.Pod{Name: p.Namespace + "/" + p.Name, IPs: contract.PodIPs(p),
			Prober: contract.ControllerPod(p, in.Namespace)}}
		for _, pol := range policies {
			if pol.selects(p, labelsOf(p.Namespace)) {
				ps.policies = append(ps.policies, pol)
			}
		}
		if len(ps.policies) > 0 {
			keys := make([]string, len(ps.policies))
			for j, pol := range ps.policies {
				keys[j] = pol.key
			}
			ps.key = strings.Join(keys, ",") // policies are sorted by key
		}
		pods = append(pods, ps)
	}

	// Set ids: kept while the membership (the key) lives on; a new set takes the lowest id
	// that neither a live set nor the previous Result used, so an id never changes meaning
	// within one Apply.
	members := map[string][]*policy{}
	for _, ps := range pods {
		if ps.key != "" {
			members[ps.key] = ps.policies
		}
	}
	used := map[uint32]bool{}
	for _, id := range in.SetIDs {
		used[id] = true
	}
	var fresh []string
	for key := range members {
		if id, ok := in.SetIDs[key]; ok && id != 0 {
			res.SetIDs[key] = id
		} else {
			fresh = append(fresh, key)
		}
	}
	slices.Sort(fresh)
	next := uint32(1)
	for _, key := range fresh {
		for used[next] {
			next++
		}
		res.SetIDs[key] = next
		used[next] = true
	}

	usedGroups := map[uint32]*gatewayInfo{}
	for key, pols := range members {
		set := resolve(pols)
		set.ID = res.SetIDs[key]
		for _, d := range set.Destinations {
			usedGroups[d.Group] = gatewayFor(pols, d.Group)
		}
		res.State.PolicySets = append(res.State.PolicySets, set)
	}
	slices.SortFunc(res.State.PolicySets, func(a, b dataplane.PolicySet) int { return cmp.Compare(a.ID, b.ID) })
	for _, ps := range pods {
		ps.pod.PolicySet = res.SetIDs[ps.key]
		res.State.Pods = append(res.State.Pods, ps.pod)
	}
	slices.SortFunc(res.State.Pods, func(a, b dataplane.Pod) int { return strings.Compare(a.Name, b.Name) })

	// Groups.
	probes := map[netip.Addr]probe.Target{}
	for id, gi := range usedGroups {
		g := buildGroup(in, gi, nodeIP, probes, &res)
		g.ID = id
		res.State.Groups = append(res.State.Groups, g)
	}
	slices.SortFunc(res.State.Groups, func(a, b dataplane.Group) int { return cmp.Compare(a.ID, b.ID) })
	for _, t := range probes {
		res.Probes = append(res.Probes, t)
	}
	slices.SortFunc(res.Probes, func(a, b probe.Target) int { return a.Addr.Compare(b.Addr) })
	slices.SortFunc(res.Members, func(a, b Member) int {
		return cmp.Or(strings.Compare(a.Group, b.Group), strings.Compare(a.Node, b.Node))
	})

	res.State.Gateway, res.Announce, res.DeliveryChecks = gatewayRole(in, gateways, nodeIP, problem)
	res.NeedsClusterView = res.State.Gateway != nil
	for i := range in.Gateways {
		res.NeedsClusterView = res.NeedsClusterView || in.Gateways[i].Status.ListsNode(in.Node.Name)
	}
	if r := res.State.Gateway; r != nil && len(r.Groups) > 0 {
		if in.ClusterView {
			r.Sources, r.Nodes = sources(in, r.Groups, policies, labelsOf)
		} else {
			// A restarted agent's first states come before its cluster view has synced:
			// replacing the sources its predecessor admitted with none would drop every
			// tunnelled frame (foreign_node) until the view is read, although the gateway
			// forwarded them a moment ago. Keep them; a node booted afresh has none.
			r.KeepSources = true
			// Nor does it take new flows meanwhile: its probe replies say draining, so
			// workers send new flows to gateways that admit them. After a cold boot it
			// admits nothing, and answering probes as a plain healthy gateway drew new
			// flows it dropped (foreign_node) until the view synced (the soak's
			// zone-loss/short failures after the settle).
			res.State.Draining = true
			problem(problemf(ProblemNoClusterView, nodeRef(in.Node.Name), nil,
				"the cluster's pods and nodes are not read yet: the gateway admits only the tunnelled traffic its datapath already admitted"))
		}
	}
	return res, nil
}

// sources lists, for the groups this gateway serves, every address of every steerable pod of
// another node that a policy of the group selects, with its node's underlay address; and the
// underlay addresses of all nodes. Pods of nodes without one are left out: their node could
// not tunnel to a gateway anyway.
func sources(in Inputs, served []dataplane.ServedGroup, policies []*policy, labelsOf func(string) labels.Set) ([]dataplane.Source, []netip.Addr) {
	underlay := map[string]netip.Addr{}
	var nodes []netip.Addr
	for i := range in.Nodes {
		if ip := contract.UnderlayIP(&in.Nodes[i]); ip.IsValid() {
			underlay[in.Nodes[i].Name] = ip
			nodes = append(nodes, ip)
		}
	}
	isServed := map[uint32]bool{}
	for _, g := range served {
		isServed[g.Group] = true
	}
	var pols []*policy
	for _, p := range policies {
		if isServed[p.gw.group] {
			pols = append(pols, p)
		}
	}
	// Namespaced policies only look at their namespace's pods.
	byNS := map[string][]*policy{}
	var cluster []*policy
	for _, p := range pols {
		if p.cluster {
			cluster = append(cluster, p)
		} else {
			byNS[p.ns] = append(byNS[p.ns], p)
		}
	}
	seen := map[dataplane.Source]bool{}
	var out []dataplane.Source
	for i := range in.ClusterPods {
		p := &in.ClusterPods[i]
		node, ok := underlay[p.Spec.NodeName]
		if !ok || p.Spec.NodeName == in.Node.Name || !contract.Steerable(p) {
			continue
		}
		nsLabels := labelsOf(p.Namespace)
		for _, group := range [][]*policy{byNS[p.Namespace], cluster} {
			for _, pol := range group {
				if !pol.selects(p, nsLabels) {
					continue
				}
				for _, ip := range contract.PodIPs(p) {
					s := dataplane.Source{Node: node, Group: pol.gw.group, Pod: ip}
					if !seen[s] {
						seen[s] = true
						out = append(out, s)
					}
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b dataplane.Source) int {
		return cmp.Or(a.Node.Compare(b.Node), cmp.Compare(a.Group, b.Group), a.Pod.Compare(b.Pod))
	})
	slices.SortFunc(nodes, netip.Addr.Compare)
	return out, slices.Compact(nodes)
}

// parsePolicies parses the policies that fit their prefix budget (contract.Admit, the
// coordinator's verdict too): a namespace over its budget loses only its own newest policies,
// and what the datapath holds stays within what the budgets allow.
func parsePolicies(in Inputs, gateways map[string]*gatewayInfo, problem func(Problem)) []*policy {
	nsAdmission := contract.AdmitEgressPolicies(in.Policies, in.PrefixBudget)
	clusterAdmission := contract.AdmitClusterEgressPolicies(in.ClusterPolicies, in.PrefixBudget)
	var out []*policy
	add := func(kind, key, name, ns string, cluster bool, nsSel *metav1.LabelSelector, rule *egressv1.EgressPolicyRule) {
		p := &policy{key: key, name: name, ns: ns, cluster: cluster, priority: rule.Priority}
		ref := ObjectRef{Kind: kind, Namespace: ns, Name: name}
		adm := clusterAdmission
		if !cluster {
			adm = nsAdmission[ns]
		}
		if !adm.Admits(name) {
			problem(problemf(ProblemPrefixBudgetExceeded, ref, nil, "%s", adm.Refusal(name, contract.Prefixes(rule))))
			return
		}
		gw, ok := gateways[rule.Gateway]
		if !ok {
			problem(problemf(ProblemGatewayNotFound, ref, []ObjectRef{gatewayRef(rule.Gateway)},
				"EgressGateway %q not found or without a group id", rule.Gateway))
			return
		}
		p.gw = gw
		var err error
		if p.pods, err = metav1.LabelSelectorAsSelector(&rule.PodSelector); err != nil {
			problem(problemf(ProblemInvalidSelector, ref, nil, "podSelector: %v", err))
			return
		}
		if cluster {
			if p.nss, err = metav1.LabelSelectorAsSelector(nsSel); err != nil {
				problem(problemf(ProblemInvalidSelector, ref, nil, "namespaceSelector: %v", err))
				return
			}
		}
		for _, c := range rule.DestinationCIDRs {
			pfx, err := netip.ParsePrefix(c)
			if err != nil {
				problem(problemf(ProblemInvalidCIDR, ref, nil, "destination %q: %v", c, err))
				return
			}
			p.dests = append(p.dests, pfx.Masked())
		}
		for _, c := range rule.ExcludedCIDRs {
			pfx, err := netip.ParsePrefix(c)
			if err != nil {
				problem(problemf(ProblemInvalidCIDR, ref, nil, "excluded %q: %v", c, err))
				return
			}
			p.excl = append(p.excl, pfx.Masked())
		}
		out = append(out, p)
	}
	for i := range in.Policies {
		p := &in.Policies[i]
		add("EgressPolicy", p.Namespace+"/"+p.Name, p.Name, p.Namespace, false, nil, &p.Spec)
	}
	for i := range in.ClusterPolicies {
		p := &in.ClusterPolicies[i]
		add("ClusterEgressPolicy", p.Name, p.Name, "", true, &p.Spec.NamespaceSelector, &p.Spec.EgressPolicyRule)
	}
	slices.SortFunc(out, func(a, b *policy) int { return strings.Compare(a.key, b.key) })
	return out
}

func contains(outer, inner netip.Prefix) bool {
	return outer.Addr().Is4() == inner.Addr().Is4() && outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

// resolve turns the policies of one set into LPM entries that give every address the decision
// the policies mean: among the policies with a destination containing it and no excluded
// prefix of their own containing it, the longest destination wins, then the priority, then
// the name; no such policy means the traffic leaves the usual way. An exclusion only carves
// its own policy (another policy's destination still applies inside it), and within its
// policy it wins over destinations of any length.
//
// The decision is constant between candidate prefixes, so evaluating it at each candidate and
// keeping the ones that differ from their nearest enclosing candidate is exact.
func resolve(pols []*policy) dataplane.PolicySet {
	var cands []netip.Prefix
	for _, p := range pols {
		cands = append(cands, p.dests...)
		cands = append(cands, p.excl...)
	}
	slices.SortFunc(cands, func(a, b netip.Prefix) int {
		return cmp.Or(cmp.Compare(a.Bits(), b.Bits()), a.Addr().Compare(b.Addr()))
	})
	cands = slices.Compact(cands)

	decide := func(c netip.Prefix) uint32 { // 0: leave the usual way
		var best *policy
		bestBits := -1
		for _, p := range pols {
			if slices.ContainsFunc(p.excl, func(e netip.Prefix) bool { return contains(e, c) }) {
				continue
			}
			for _, d := range p.dests {
				if !contains(d, c) {
					continue
				}
				if d.Bits() > bestBits || d.Bits() == bestBits && p.before(best) {
					best, bestBits = p, d.Bits()
				}
			}
		}
		if best == nil {
			return 0
		}
		return best.gw.group
	}
	var set dataplane.PolicySet
	decided := map[netip.Prefix]uint32{}
	for _, c := range cands { // shortest first, so every enclosing candidate is decided
		g := decide(c)
		decided[c] = g
		parent := uint32(0)
		for bits := c.Bits() - 1; bits >= 0; bits-- {
			if pg, ok := decided[netip.PrefixFrom(c.Addr(), bits).Masked()]; ok {
				parent = pg
				break
			}
		}
		if g == parent {
			continue
		}
		if g == 0 {
			set.Excluded = append(set.Excluded, c)
		} else {
			set.Destinations = append(set.Destinations, dataplane.Destination{Prefix: c, Group: g})
		}
	}
	return set
}

func gatewayFor(pols []*policy, group uint32) *gatewayInfo {
	for _, p := range pols {
		if p.gw.group == group {
			return p.gw
		}
	}
	return nil
}

type candidate struct {
	node     dataplane.GatewayNode
	name     string
	zone     string
	local    bool
	self     bool
	draining bool
}

// buildGroup lists the gateways this node sends a group's flows to, and adds every Active or
// Draining gateway of the group to the probes.
//
// Draining gateways (state Draining, a draining bit in their probe reply, or this node while
// cordoned) stay listed with their probe health and the Draining flag: their established flows
// keep going, new flows go to the others (or to them when no other is left) until the
// coordinator moves their egress IPs.
func buildGroup(in Inputs, gi *gatewayInfo, nodeIP netip.Addr, probes map[netip.Addr]probe.Target, res *Result) dataplane.Group {
	gw := gi.obj
	res.GroupNames[gi.group] = gw.Name
	myZone := in.Node.Labels[corev1.LabelTopologyZone]

	// Egress IPs per holder: the lowest of each family; and the holder of each of the group's
	// addresses ("" while the cloud moves it).
	held := map[string][2]netip.Addr{}
	holders := map[netip.Addr]string{}
	for i := range in.EgressIPs {
		e := &in.EgressIPs[i]
		if e.Spec.Gateway != gw.Name {
			continue
		}
		ip, err := netip.ParseAddr(e.Spec.IP)
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		holders[ip] = e.Status.Node
		if e.Status.Node == "" {
			continue
		}
		h := held[e.Status.Node]
		fam := 0
		if ip.Is6() {
			fam = 1
		}
		if !h[fam].IsValid() || ip.Less(h[fam]) {
			h[fam] = ip
		}
		held[e.Status.Node] = h
	}

	// A draining gateway is listed for its established flows while it holds one of the group's
	// addresses. Once they have moved on nothing can leave through it, and a flow pinned there (a
	// SYN sent while it was the last gateway taking new flows) would stay black-holed for as long
	// as it stays listed. nodeInterface gateways hold no EgressIP: their own address serves.
	allocated := gw.Spec.Addresses.Source() != egressv1.AddressSourceNodeInterface
	var cands []candidate
	for _, z := range gw.Status.Zones {
		for _, g := range z.Gateways {
			if g.State == egressv1.GatewayUnhealthy && g.Reason == egressv1.ReasonAgentLeaseExpired {
				if c, ok := leaseExpiredKeep(in, gi, z.Name, g, nodeIP, holders); ok {
					c.local = z.Name == myZone
					addProbe(probes, contract.ProbeTarget(netip.AddrPortFrom(c.node.NodeIP, in.ProbePort), gw.Spec.Health))
					res.GatewayNames[c.node.ID] = g.Node
					res.Members = append(res.Members, Member{Group: gw.Name, Node: g.Node, Addr: c.node.NodeIP})
					cands = append(cands, c)
				}
				continue
			}
			if g.State != egressv1.GatewayActive && g.State != egressv1.GatewayDraining {
				continue
			}
			ip, err := netip.ParseAddr(g.UnderlayIP)
			if err != nil || !ip.Is4() {
				res.Problems = append(res.Problems, problemf(ProblemNoUnderlayIP, gatewayRef(gw.Name), []ObjectRef{nodeRef(g.Node)},
					"gateway %s has no IPv4 underlay IP", g.Node))
				continue
			}
			c := candidate{name: g.Node, zone: z.Name, local: z.Name == myZone, self: ip == nodeIP,
				draining: g.State == egressv1.GatewayDraining}
			c.node = dataplane.GatewayNode{ID: GatewayID(ip), NodeIP: ip, EgressIPv4: held[g.Node][0], EgressIPv6: held[g.Node][1], Healthy: true}
			if c.draining && allocated && held[g.Node] == ([2]netip.Addr{}) {
				continue
			}
			if c.self {
				c.draining = c.draining || in.Node.Spec.Unschedulable
			} else {
				if up, ok := in.Health[ip]; ok {
					c.node.Healthy = up
				}
				c.draining = c.draining || in.ProbeDraining[ip]
				addProbe(probes, contract.ProbeTarget(netip.AddrPortFrom(ip, in.ProbePort), gw.Spec.Health))
			}
			c.node.Draining = c.draining
			res.GatewayNames[c.node.ID] = g.Node
			res.Members = append(res.Members, Member{Group: gw.Name, Node: g.Node, Addr: ip, Self: c.self})
			cands = append(cands, c)
		}
	}

	affinity := contract.ZoneAffinity(&gw.Spec)
	// A local zone whose healthy gateways all drain cannot take new flows: PreferLocal then
	// lists every zone (the draining ones stay listed for their established flows).
	usable := func(c candidate) bool { return c.node.Healthy && !c.draining }
	localUsable := slices.ContainsFunc(cands, func(c candidate) bool { return c.local && usable(c) })
	switch {
	case affinity == egressv1.AffinityLocalOnly, affinity == egressv1.AffinityPreferLocal && localUsable:
		cands = slices.DeleteFunc(cands, func(c candidate) bool { return !c.local })
	}
	// Local first, then those taking new flows, then healthy draining ones (so truncation keeps
	// working ones), then by zone and name.
	slices.SortFunc(cands, func(a, b candidate) int {
		return cmp.Or(-cmpBool(a.local, b.local), -cmpBool(usable(a), usable(b)), -cmpBool(a.node.Healthy, b.node.Healthy),
			strings.Compare(a.zone, b.zone), strings.Compare(a.name, b.name))
	})
	if len(cands) > bpf.MaxGateways {
		res.Problems = append(res.Problems, problemf(ProblemTooManyGateways, gatewayRef(gw.Name), nil, "%d gateways, using the first %d", len(cands), bpf.MaxGateways))
		cands = cands[:bpf.MaxGateways]
	}
	g := dataplane.Group{}
	for _, c := range cands {
		g.Gateways = append(g.Gateways, c.node)
	}
	return g
}

// leaseExpiredKeep decides whether a gateway the coordinator failed because its agent's Lease
// expired (g, in zone) stays listed for the flows pinned to it, and returns it as a draining
// candidate if so. The agent is gone but the datapath may not be: it keeps its programs, maps,
// addresses and conntrack, and the probe reflector answers. Failed, the gateway's addresses move
// to another gateway; a cloud accepts the move at once and its fabric delivers the address to
// the new holder later (seconds on EC2), and until then it still delivers it to the old holder,
// which can forward the flows pinned to it with their own address and port. Switched away at
// once, their packets would be held at this node for all that time (docs/datapath.md,
// "Connections across a move").
//
// So the gateway stays listed, draining (no new flow while another gateway takes them), with
// the addresses it was listed with, while all of these hold:
//   - this node's own probes of it answer: a rebooted or cut-off gateway's flows move at once;
//   - the previous Result listed it with an address (in.Listed): it is kept from the listing it
//     had, never taken back once dropped;
//   - none of those addresses has landed elsewhere: each is still held by g, or being moved
//     ("" holder), or held by a gateway not Active yet (the coordinator lists a cloud address's
//     new holder Active only once its agent proved the fabric delivers it there). From that
//     proof on the fabric drops what g sends from the address, and the pins move to the new
//     holder, which SNATs them to the same address and port.
//
// Other reasons (NodeNotReady, ProbeFailed) are not kept: nothing says the datapath forwards.
func leaseExpiredKeep(in Inputs, gi *gatewayInfo, zone string, g egressv1.GatewayNodeStatus, nodeIP netip.Addr, holders map[netip.Addr]string) (candidate, bool) {
	ip, err := netip.ParseAddr(g.UnderlayIP)
	if err != nil || !ip.Is4() || ip == nodeIP {
		return candidate{}, false
	}
	if up, ok := in.Health[ip]; !ok || !up {
		return candidate{}, false
	}
	id := GatewayID(ip)
	var prev dataplane.GatewayNode
	for _, lg := range in.Listed {
		if lg.ID != gi.group {
			continue
		}
		if i := slices.IndexFunc(lg.Gateways, func(n dataplane.GatewayNode) bool { return n.ID == id }); i >= 0 {
			prev = lg.Gateways[i]
		}
	}
	if !prev.EgressIPv4.IsValid() && !prev.EgressIPv6.IsValid() {
		return candidate{}, false
	}
	active := map[string]bool{}
	for _, z := range gi.obj.Status.Zones {
		for _, o := range z.Gateways {
			active[o.Node] = o.State == egressv1.GatewayActive
		}
	}
	for _, a := range []netip.Addr{prev.EgressIPv4, prev.EgressIPv6} {
		if !a.IsValid() {
			continue
		}
		h, ok := holders[a]
		if !ok || h != g.Node && h != "" && active[h] {
			return candidate{}, false // released, or landed on its new holder
		}
	}
	n := dataplane.GatewayNode{ID: id, NodeIP: ip, EgressIPv4: prev.EgressIPv4, EgressIPv6: prev.EgressIPv6, Healthy: true, Draining: true}
	return candidate{node: n, name: g.Node, zone: zone, draining: true}, true
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

// addProbe merges a gateway's probe settings across groups: the most demanding wins.
func addProbe(probes map[netip.Addr]probe.Target, t probe.Target) {
	ip := t.Addr.Addr()
	old, ok := probes[ip]
	if !ok {
		probes[ip] = t
		return
	}
	old.Interval = min(old.Interval, t.Interval)
	old.FailureThreshold = min(old.FailureThreshold, t.FailureThreshold)
	if t.Timeout > 0 && (old.Timeout == 0 || t.Timeout < old.Timeout) {
		old.Timeout = t.Timeout
	}
	probes[ip] = old
}

// gatewayRole mounts every egress IP held by this node and serves each of their groups with
// every held IP (the datapath spreads new flows over them, docs/datapath.md#snat); for nodeInterface groups this node is a gateway of, it serves
// the group with the first address of the named interface (already there, so the datapath
// neither adds nor ever removes it). It also returns the mounted addresses of static groups,
// which the agent announces, and the delivery proofs still to make: a cloud address is mounted
// as soon as the cloud gives it to this node, but its group is served with it only once
// in.Delivered proves the fabric delivers it here.
func gatewayRole(in Inputs, gateways map[string]*gatewayInfo, nodeIP netip.Addr, problem func(Problem)) (*dataplane.GatewayRole, []dataplane.EgressAddress, []DeliveryCheck) {
	var primary string
	for _, ifc := range in.Interfaces {
		if slices.Contains(ifc.Addrs, nodeIP) {
			primary = ifc.Name
		}
	}
	// Egress IPs are never taken for an interface's own address: egressd may have mounted
	// them there itself.
	egressIPs := map[netip.Addr]bool{}
	for i := range in.EgressIPs {
		if ip, err := netip.ParseAddr(in.EgressIPs[i].Spec.IP); err == nil {
			egressIPs[ip.Unmap()] = true
		}
	}
	role := &dataplane.GatewayRole{}
	var announce []dataplane.EgressAddress
	var checks []DeliveryCheck
	served := map[uint32]*dataplane.ServedGroup{}
	// For the public source of a group: each served IP's interface, the source the cloud
	// translates its public IP from where that is not the IP, and the groups with one.
	ifaceOf := map[netip.Addr]string{}
	natSources := map[netip.Addr]netip.Addr{}
	public := map[uint32]*gatewayInfo{}
	serve := func(gi *gatewayInfo) *dataplane.ServedGroup {
		sg := served[gi.group]
		if sg == nil {
			sg = &dataplane.ServedGroup{Group: gi.group}
			served[gi.group] = sg
		}
		return sg
	}
	for i := range in.EgressIPs {
		e := &in.EgressIPs[i]
		if e.Status.Node != in.Node.Name {
			continue
		}
		ip, err := netip.ParseAddr(e.Spec.IP)
		if err != nil {
			problem(problemf(ProblemInvalidIP, egressIPRef(e.Name), nil, "ip %q: %v", e.Spec.IP, err))
			continue
		}
		ip = ip.Unmap()
		gi, ok := gateways[e.Spec.Gateway]
		var static *egressv1.StaticAddresses
		var source egressv1.AddressSource
		if ok {
			static, source = gi.obj.Spec.Addresses.Static, gi.obj.Spec.Addresses.Source()
		}
		ifname := primary
		if e.Status.InterfaceMAC != "" {
			if mac, err := net.ParseMAC(e.Status.InterfaceMAC); err == nil {
				for _, ifc := range in.Interfaces {
					if slices.Equal(ifc.MAC, mac) {
						ifname = ifc.Name
						break
					}
				}
			}
		} else if static != nil {
			name, err := staticInterface(static, ip, in.Interfaces, egressIPs)
			if err != nil {
				problem(problemf(ProblemNoInterface, egressIPRef(e.Name), nil, "%v", err))
				continue
			}
			if name != "" {
				ifname = name
			}
		}
		if ifname == "" {
			problem(problemf(ProblemNoInterface, egressIPRef(e.Name), nil, "no interface with MAC %q or the node IP %s", e.Status.InterfaceMAC, nodeIP))
			continue
		}
		addr := dataplane.EgressAddress{IP: ip, Interface: ifname}
		role.Addresses = append(role.Addresses, addr)
		if !ok {
			continue // mounted, but no group to serve yet
		}
		natSrc, err := publicNATSource(e, ip, ifname, in.Interfaces)
		if err != nil {
			// Served, its public-bound flows would leave with an address the cloud does not
			// translate: the group is not served with it here.
			problem(problemf(ProblemNoInterface, egressIPRef(e.Name), nil, "%v; not serving %s on this node", err, ip))
			continue
		}
		if source.Announced() {
			announce = append(announce, addr)
		}
		if e.Spec.Source() == egressv1.AddressSourceCloud && in.Delivered != nil && !in.Delivered.Proves(ip, e.Generation) {
			var peers []netip.AddrPort
			if ip.Is4() {
				peers = deliveryPeers(gi.obj, nodeIP, in.ProbePort)
			}
			checks = append(checks, DeliveryCheck{IP: ip, Generation: e.Generation, Peers: peers})
			if len(peers) > 0 {
				continue // mounted, served once the fabric delivers it
			}
			// No other gateway to prove it with, or IPv6 (the probe protocol is IPv4 only):
			// served on the cloud's word, and published as delivered so that the coordinator
			// lists the node Active.
		}
		sg := serve(gi)
		if ip.Is4() {
			sg.EgressIPv4s = append(sg.EgressIPv4s, ip)
		} else {
			sg.EgressIPv6s = append(sg.EgressIPv6s, ip)
		}
		ifaceOf[ip] = ifname
		if natSrc.IsValid() {
			natSources[ip] = natSrc
			public[gi.group] = gi
		}
	}
	for group, gi := range public {
		setPublicSource(served[group], gi, ifaceOf, natSources, problem)
	}

	// nodeInterface groups: this node serves every group whose status lists it as a gateway,
	// whatever the state (workers only send to the Active and Draining ones; serving costs
	// nothing and keeps a worker with a stale view working).
	names := make([]string, 0, len(gateways))
	for name := range gateways {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		gi := gateways[name]
		ni := gi.obj.Spec.Addresses.NodeInterface
		if ni == nil || !gi.obj.Status.ListsNode(in.Node.Name) {
			continue
		}
		ip, err := interfaceAddr(in.Interfaces, ni, egressIPs)
		if err != nil {
			problem(problemf(ProblemNoInterface, gatewayRef(name), nil, "%v; not serving it on this node", err))
			continue
		}
		if !slices.ContainsFunc(role.Addresses, func(a dataplane.EgressAddress) bool { return a.IP == ip }) {
			role.Addresses = append(role.Addresses, dataplane.EgressAddress{IP: ip, Interface: ni.Interface})
		}
		// The group has one address source: a leftover EgressIP of an earlier mode does not
		// win over the interface's address.
		sg := serve(gi)
		if ip.Is4() {
			sg.EgressIPv4s = []netip.Addr{ip}
		} else {
			sg.EgressIPv6s = []netip.Addr{ip}
		}
	}

	if len(role.Addresses) == 0 {
		return nil, nil, nil
	}
	slices.SortFunc(role.Addresses, func(a, b dataplane.EgressAddress) int { return a.IP.Compare(b.IP) })
	slices.SortFunc(announce, func(a, b dataplane.EgressAddress) int { return a.IP.Compare(b.IP) })
	slices.SortFunc(checks, func(a, b DeliveryCheck) int { return a.IP.Compare(b.IP) })
	for _, sg := range served {
		for _, ips := range []*[]netip.Addr{&sg.EgressIPv4s, &sg.EgressIPv6s} {
			slices.SortFunc(*ips, netip.Addr.Compare)
			*ips = slices.Compact(*ips)
		}
		role.Groups = append(role.Groups, *sg)
	}
	slices.SortFunc(role.Groups, func(a, b dataplane.ServedGroup) int { return cmp.Compare(a.Group, b.Group) })
	return role, announce, checks
}

// publicNATSource is the address e's public IP is translated from when that is not ip itself
// (status.publicNATSource, set on GCP: an access config translates the interface's primary
// address only), or invalid. It must be an IPv4 address of ifname, the interface the egress IP
// is mounted on and leaves through; otherwise it is an error.
func publicNATSource(e *egressv1.EgressIP, ip netip.Addr, ifname string, ifs []Interface) (netip.Addr, error) {
	if e.Status.PublicIP == "" || e.Status.PublicNATSource == "" {
		return netip.Addr{}, nil
	}
	src, err := netip.ParseAddr(e.Status.PublicNATSource)
	if err != nil || !src.Is4() || !ip.Is4() {
		return netip.Addr{}, fmt.Errorf("status.publicNATSource %q of IPv4 egress IP %s: not an IPv4 address", e.Status.PublicNATSource, ip)
	}
	src = src.Unmap()
	if src == ip {
		return netip.Addr{}, nil
	}
	i := slices.IndexFunc(ifs, func(ifc Interface) bool { return ifc.Name == ifname })
	if i < 0 || !slices.ContainsFunc(ifs[i].Addrs, func(a netip.Addr) bool { return a.Unmap() == src }) {
		return netip.Addr{}, fmt.Errorf("the cloud translates public IP %s from %s, which interface %s does not have", e.Status.PublicIP, src, ifname)
	}
	return src, nil
}

// setPublicSource gives sg (served for gi) the source its public-bound IPv4 flows are SNATed
// to: the NAT source of its lowest egress IP that has one on the interface the group's IPv4
// traffic is routed through (that of its lowest IPv4 egress IP), and the private destinations
// that keep the egress IPs (contract.PrivateDestinations).
func setPublicSource(sg *dataplane.ServedGroup, gi *gatewayInfo, ifaceOf map[netip.Addr]string, natSources map[netip.Addr]netip.Addr, problem func(Problem)) {
	ips := slices.SortedFunc(slices.Values(sg.EgressIPv4s), netip.Addr.Compare)
	if len(ips) == 0 {
		return
	}
	route := ifaceOf[ips[0]]
	for _, ip := range ips {
		if src, ok := natSources[ip]; ok && ifaceOf[ip] == route {
			sg.PublicSource = src
			break
		}
	}
	if !sg.PublicSource.IsValid() {
		problem(problemf(ProblemNoInterface, gatewayRef(gi.obj.Name), nil,
			"no egress IP on %s (the group's route) has a public NAT source; public-bound flows keep the egress IP", route))
		return
	}
	var bad []string
	sg.Private, bad = contract.PrivateDestinations(gi.obj.Spec.Addresses.Cloud)
	if len(bad) > 0 {
		problem(problemf(ProblemInvalidCIDR, gatewayRef(gi.obj.Name), nil, "cloud.privateCIDRs %q are not IPv4 CIDRs; left out", bad))
	}
}

// maxDeliveryPeers bounds the probe responders a delivery proof asks: any one answering proves
// it, a few cover some of them being down.
const maxDeliveryPeers = 4

// deliveryPeers are the probe responders a delivery proof for gw's address asks: the group's
// other gateways not known to be down, other zones first (a zone's own peers are the likeliest
// to share this node's trouble), by name within a zone.
func deliveryPeers(gw *egressv1.EgressGateway, self netip.Addr, port uint16) []netip.AddrPort {
	type peer struct {
		zone, name string
		addr       netip.Addr
		local      bool
	}
	var ps []peer
	var myZone string
	for _, z := range gw.Status.Zones {
		for _, g := range z.Gateways {
			ip, err := netip.ParseAddr(g.UnderlayIP)
			if err != nil || !ip.Is4() {
				continue
			}
			if ip == self {
				myZone = z.Name
				continue
			}
			if g.State == egressv1.GatewayUnhealthy {
				continue
			}
			ps = append(ps, peer{zone: z.Name, name: g.Node, addr: ip})
		}
	}
	for i := range ps {
		ps[i].local = ps[i].zone == myZone
	}
	slices.SortFunc(ps, func(a, b peer) int {
		return cmp.Or(cmpBool(a.local, b.local), strings.Compare(a.zone, b.zone), strings.Compare(a.name, b.name))
	})
	var out []netip.AddrPort
	for _, p := range ps[:min(len(ps), maxDeliveryPeers)] {
		out = append(out, netip.AddrPortFrom(p.addr, port))
	}
	return out
}

// interfaceAddr is a nodeInterface group's egress IP on this node: the first address of the
// family on the interface, leaving out link-local ones (useless off the link) and egress IPs
// (which egressd itself may have mounted there).
func interfaceAddr(ifs []Interface, ni *egressv1.NodeInterfaceAddresses, egressIPs map[netip.Addr]bool) (netip.Addr, error) {
	v6 := ni.Family == egressv1.IPv6
	fam := egressv1.IPv4
	if v6 {
		fam = egressv1.IPv6
	}
	i := slices.IndexFunc(ifs, func(ifc Interface) bool { return ifc.Name == ni.Interface })
	if i < 0 {
		return netip.Addr{}, fmt.Errorf("no interface %s", ni.Interface)
	}
	for _, a := range ifs[i].Addrs {
		a = a.Unmap()
		if a.Is6() == v6 && !a.IsLinkLocalUnicast() && !a.IsLoopback() && !egressIPs[a] {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("interface %s has no %s address", ni.Interface, fam)
}

// staticInterface is the interface a static egress IP goes on: its pool's interface if set
// (which must exist), else the interface with an address (not an egress IP) inside the pool's
// subnet, else ""
// (the caller's fallback: the interface holding the node IP).
func staticInterface(static *egressv1.StaticAddresses, ip netip.Addr, ifs []Interface, egressIPs map[netip.Addr]bool) (string, error) {
	for _, pool := range static.Pools {
		subnet, err := netip.ParsePrefix(pool.Subnet)
		if err != nil || !subnet.Contains(ip) {
			continue
		}
		if pool.Interface != "" {
			if !slices.ContainsFunc(ifs, func(ifc Interface) bool { return ifc.Name == pool.Interface }) {
				return "", fmt.Errorf("no interface %s (static pool %s)", pool.Interface, pool.Subnet)
			}
			return pool.Interface, nil
		}
		for _, ifc := range ifs {
			if slices.ContainsFunc(ifc.Addrs, func(a netip.Addr) bool { return !egressIPs[a.Unmap()] && subnet.Contains(a.Unmap()) }) {
				return ifc.Name, nil
			}
		}
	}
	return "", nil
}
