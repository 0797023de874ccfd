// Package contract is the one home of the runtime facts that the node agent, the coordinator
// and egressctl must agree on and that the API does not show: the agent's heartbeat Lease
// (name, namespace, lifetime), a node's underlay address, which pods egressd steers and which
// namespaces a gateway admits, the probe settings a gateway's health spec means, the UDP
// ports every node uses, and which policies fit their prefix budgets. API-visible facts
// (condition reasons, labels, tag keys, the defaults of the CRD fields) live in api/v1alpha1.
//
// Everything here is a pure function of its arguments or a constant: no I/O, no clock.
package contract

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/probe"
)

// Ports every node uses; the agent flags, the coordinator config and the chart default to them
// (charts/egressd's tests pin values.yaml to these).
const (
	// DefaultTunnelPort is egressd's own VXLAN port, away from 4789 (IANA, Cilium, Calico)
	// and 8472 (Linux default, flannel).
	DefaultTunnelPort = 8742
	// DefaultProbePort is the UDP probe port on every node's underlay address.
	DefaultProbePort = 8743
)

// DefaultNamespace holds the agents' heartbeat Leases and the controller's leader election.
const DefaultNamespace = "egressd-system"

// ControllerPod reports whether p is a pod of egressd's controller in the release namespace:
// labels app.kubernetes.io/name=egressd and app.kubernetes.io/component=controller, as the
// chart's Deployment gives them. The controller probes every gateway from its pod, so the
// datapath lets only these pods reach the probe port. Only who may create pods in the release
// namespace can make one, and they can already read the controller's credentials there.
func ControllerPod(p *corev1.Pod, namespace string) bool {
	return p.Namespace == namespace && p.Labels["app.kubernetes.io/name"] == "egressd" &&
		p.Labels["app.kubernetes.io/component"] == "controller"
}

// MaxGatewaysPerGroup is how many gateways of a group a node's datapath lists (bpf.MaxGateways,
// zone-local first). The coordinator says so on an EgressGateway with more Active or Draining
// gateways; the agent uses the first ones and reports the rest.
const MaxGatewaysPerGroup = 8

// AgentLeaseDuration is how long an agent's heartbeat Lease stays valid: the agent writes it
// into the Lease and the coordinator, by default, treats an older Lease as a dead agent.
const AgentLeaseDuration = 10 * time.Second

// AgentLeaseName is the Lease a node's agent renews as its heartbeat.
func AgentLeaseName(node string) string { return "egressd-agent-" + node }

// UnderlayIP is the node's first IPv4 InternalIP (an IPv4-mapped IPv6 one counts, unmapped):
// the address tunnels and probes reach it at. It is invalid when the node has none.
func UnderlayIP(n *corev1.Node) netip.Addr {
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Unmap().Is4() {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// PodIPs are the pod's addresses (status.podIPs, then status.podIP), unmapped and without
// repeats.
func PodIPs(p *corev1.Pod) []netip.Addr {
	var out []netip.Addr
	add := func(s string) {
		if ip, err := netip.ParseAddr(s); err == nil && !slices.Contains(out, ip.Unmap()) {
			out = append(out, ip.Unmap())
		}
	}
	for _, ip := range p.Status.PodIPs {
		add(ip.IP)
	}
	add(p.Status.PodIP)
	return out
}

// Steerable reports whether the datapath can steer a pod's traffic at all, whatever the
// policies: it has its own IP (host-network pods have the node's, which egressd never
// steers), and has not finished (a finished pod may have lost its IP to another). The agent
// steers exactly these pods when a policy selects them; a policy's status.matchedPods counts
// them.
func Steerable(p *corev1.Pod) bool {
	return !p.Spec.HostNetwork && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed &&
		len(PodIPs(p)) > 0
}

// NamespaceAdmitted applies a gateway's spec.allowedNamespaces to a namespace, given its name
// and labels: unset admits every namespace; otherwise the namespace must be listed by name or
// match the selector. A selector that does not parse admits nothing and is returned as the
// error.
func NamespaceAdmitted(sel *egressv1.NamespaceSelection, name string, nsLabels map[string]string) (bool, error) {
	if sel == nil {
		return true, nil
	}
	if slices.Contains(sel.Names, name) {
		return true, nil
	}
	if sel.Selector == nil {
		return false, nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel.Selector)
	if err != nil {
		return false, err
	}
	return s.Matches(labels.Set(nsLabels)), nil
}

// ProbeTarget is how to probe a gateway at addr under a group's spec.health, with the API's
// defaults for what the spec leaves unset. The agents and the coordinator probe with it.
func ProbeTarget(addr netip.AddrPort, h *egressv1.HealthSpec) probe.Target {
	t := probe.Target{Addr: addr, Interval: egressv1.DefaultProbeInterval, FailureThreshold: egressv1.DefaultFailureThreshold}
	if h == nil {
		return t
	}
	if h.Interval != nil {
		t.Interval = h.Interval.Duration
	}
	if h.Timeout != nil {
		t.Timeout = h.Timeout.Duration
	}
	if h.FailureThreshold > 0 {
		t.FailureThreshold = int(h.FailureThreshold)
	}
	return t
}

// PrivateDestinations are the IPv4 destinations that keep a cloud gateway's private egress
// address where the cloud translates its public IP from another address (EgressIP
// status.publicNATSource): cloud.privateCIDRs, egressv1.DefaultPrivateCIDRs when unset. An
// entry that does not parse (the CRD's rules refuse it) is left out and returned in bad.
func PrivateDestinations(cloud *egressv1.CloudAddresses) (out []netip.Prefix, bad []string) {
	cidrs := egressv1.DefaultPrivateCIDRs
	if cloud != nil && len(cloud.PrivateCIDRs) > 0 {
		cidrs = cloud.PrivateCIDRs
	}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil || !p.Addr().Is4() {
			bad = append(bad, c)
			continue
		}
		out = append(out, p.Masked())
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	return slices.Compact(out), bad
}

// ZoneAffinity is a gateway's zone affinity, PreferLocal when unset.
func ZoneAffinity(spec *egressv1.EgressGatewaySpec) egressv1.ZoneAffinity {
	if spec.Zones != nil && spec.Zones.Affinity != "" {
		return spec.Zones.Affinity
	}
	return egressv1.DefaultZoneAffinity
}

// Mode is a gateway's mode, ActiveActive when unset.
func Mode(spec *egressv1.EgressGatewaySpec) egressv1.GatewayMode {
	if spec.Mode != "" {
		return spec.Mode
	}
	return egressv1.DefaultMode
}

// DrainGracePeriod bounds how long a draining gateway keeps its addresses, 30 s when unset.
func DrainGracePeriod(spec *egressv1.EgressGatewaySpec) time.Duration {
	if spec.DrainGracePeriod != nil {
		return spec.DrainGracePeriod.Duration
	}
	return egressv1.DefaultDrainGracePeriod
}

// Policy prefix budgets. Every prefix of a policy (a destinationCIDRs or excludedCIDRs entry)
// becomes at most one LPM entry of the rules4 or rules6 map in each policy set that holds the
// policy on a node, and a policy set holds the EgressPolicies of one namespace (its pods') and
// ClusterEgressPolicies. So a policy set's entries are at most the prefixes of its
// namespace's admitted EgressPolicies plus those of the admitted ClusterEgressPolicies, and a
// node's are at most that times its policy sets (at most one per steered pod). The budget
// bounds the first factor for every namespace alike; it does not bound how many policy sets a
// node holds: pods per node do. With the defaults, a node of 110 pods (kubelet's default
// maxPods), each in a policy set of its own at the full budgets with IPv4 prefixes only, needs
// 110 × (128 + 128) = 28,160 entries, and 56,320 while a change replaces every set (old and
// new entries are in the map together): both fit the 65,536 of rules4. A node of 250 pods
// needs 64,000 once settled.
const (
	// DefaultNamespacePrefixBudget is how many prefixes the EgressPolicies of one namespace
	// may hold together: one policy at the CRD's maximum (64 destinations, 64 exclusions), or
	// sixteen of eight prefixes.
	DefaultNamespacePrefixBudget = 128
	// DefaultClusterPrefixBudget is how many prefixes all ClusterEgressPolicies may hold
	// together.
	DefaultClusterPrefixBudget = 128
)

// PrefixBudget is how many prefixes policies may hold: the EgressPolicies of each namespace,
// and the ClusterEgressPolicies of the cluster. The agents and the coordinator must be given
// the same one (the chart gives both one value each).
type PrefixBudget struct {
	// Namespace bounds the EgressPolicies of each namespace; zero means
	// DefaultNamespacePrefixBudget.
	Namespace int `json:"namespace,omitempty"`
	// Cluster bounds the ClusterEgressPolicies together; zero means
	// DefaultClusterPrefixBudget.
	Cluster int `json:"cluster,omitempty"`
}

// WithDefaults fills the fields left zero.
func (b PrefixBudget) WithDefaults() PrefixBudget {
	if b.Namespace == 0 {
		b.Namespace = DefaultNamespacePrefixBudget
	}
	if b.Cluster == 0 {
		b.Cluster = DefaultClusterPrefixBudget
	}
	return b
}

// Validate refuses a negative budget (zero is the default).
func (b PrefixBudget) Validate() error {
	if b.Namespace < 0 {
		return fmt.Errorf("namespace prefix budget %d: must be positive (0: the default, %d)", b.Namespace, DefaultNamespacePrefixBudget)
	}
	if b.Cluster < 0 {
		return fmt.Errorf("cluster prefix budget %d: must be positive (0: the default, %d)", b.Cluster, DefaultClusterPrefixBudget)
	}
	return nil
}

// Prefixes is what a policy costs in its budget: its destinationCIDRs and excludedCIDRs as
// listed, whether or not they parse or repeat.
func Prefixes(rule *egressv1.EgressPolicyRule) int {
	return len(rule.DestinationCIDRs) + len(rule.ExcludedCIDRs)
}

// BudgetedPolicy is a policy as its budget sees it.
type BudgetedPolicy struct {
	Name     string
	Created  metav1.Time
	Prefixes int
}

// Admission is the outcome of a budget for the policies it covers.
type Admission struct {
	// Scope names what the budget covers: "namespace NAME" or "the ClusterEgressPolicies".
	Scope string
	// Budget is how many prefixes the policies may hold together.
	Budget int
	// Used is the prefixes of the admitted policies.
	Used int
	// Rejected maps each policy that does not fit to the prefixes of the policies admitted
	// before it: it fits once that plus its own prefixes are within Budget.
	Rejected map[string]int
}

// Admits reports whether the named policy fits.
func (a Admission) Admits(name string) bool {
	_, rejected := a.Rejected[name]
	return !rejected
}

// Refusal says, for people, why the named policy, of the given prefixes, does not fit.
func (a Admission) Refusal(name string, prefixes int) string {
	return fmt.Sprintf("needs %d prefixes (destinationCIDRs plus excludedCIDRs) but %s may hold %d, and the policies created before it use %d (%d with those admitted after it); not steered",
		prefixes, a.Scope, a.Budget, a.Rejected[name], a.Used)
}

// Admit applies a budget to policies: oldest first (creationTimestamp, then name), each is
// admitted while the prefixes of those admitted stay within budget; one that does not fit is
// rejected whole, and later, smaller ones may still fit. An older policy thus keeps its place
// when a newer one arrives, and growing a policy can push out only newer ones. The order of
// pols does not matter.
func Admit(scope string, pols []BudgetedPolicy, budget int) Admission {
	sorted := slices.Clone(pols)
	slices.SortFunc(sorted, func(a, b BudgetedPolicy) int {
		return cmp.Or(a.Created.Compare(b.Created.Time), strings.Compare(a.Name, b.Name))
	})
	a := Admission{Scope: scope, Budget: budget}
	for _, p := range sorted {
		if a.Used+p.Prefixes > budget {
			if a.Rejected == nil {
				a.Rejected = map[string]int{}
			}
			a.Rejected[p.Name] = a.Used
			continue
		}
		a.Used += p.Prefixes
	}
	return a
}

// AdmitEgressPolicies applies the namespace budget to the EgressPolicies of each namespace
// among pols, by namespace.
func AdmitEgressPolicies(pols []egressv1.EgressPolicy, b PrefixBudget) map[string]Admission {
	b = b.WithDefaults()
	byNS := map[string][]BudgetedPolicy{}
	for i := range pols {
		p := &pols[i]
		byNS[p.Namespace] = append(byNS[p.Namespace], BudgetedPolicy{Name: p.Name, Created: p.CreationTimestamp, Prefixes: Prefixes(&p.Spec)})
	}
	out := make(map[string]Admission, len(byNS))
	for ns, list := range byNS {
		out[ns] = Admit("namespace "+ns, list, b.Namespace)
	}
	return out
}

// AdmitClusterEgressPolicies applies the cluster budget to the ClusterEgressPolicies.
func AdmitClusterEgressPolicies(pols []egressv1.ClusterEgressPolicy, b PrefixBudget) Admission {
	b = b.WithDefaults()
	list := make([]BudgetedPolicy, len(pols))
	for i := range pols {
		p := &pols[i]
		list[i] = BudgetedPolicy{Name: p.Name, Created: p.CreationTimestamp, Prefixes: Prefixes(&p.Spec.EgressPolicyRule)}
	}
	return Admit("the ClusterEgressPolicies", list, b.Cluster)
}

// DeliveredAnnotation, on an agent's Lease, lists the cloud egress IPs its node has proven the
// fabric delivers to it (docs/control-plane.md, "Delivery"): an agent mounts an address the
// cloud moved to it but SNATs to it only once a probe sent from the address came back, and the
// coordinator lists the node Active for it only once this annotation carries the proof. Each
// proof names the EgressIP's metadata.generation it was made for: every placement changes
// spec.node, hence the generation, so a proof never outlives the move it proved. A Lease
// without the annotation is an agent that does not prove delivery (older versions): its held
// addresses count as delivered.
const DeliveredAnnotation = "egressd.io/delivered-egress-ips"

// Delivered maps an egress IP to the EgressIP generation its delivery was proven for.
type Delivered map[netip.Addr]int64

// String encodes d as the annotation's value: "ip@generation" entries, sorted, comma-separated.
func (d Delivered) String() string {
	ips := make([]netip.Addr, 0, len(d))
	for ip := range d {
		ips = append(ips, ip)
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	parts := make([]string, len(ips))
	for i, ip := range ips {
		parts[i] = ip.String() + "@" + strconv.FormatInt(d[ip], 10)
	}
	return strings.Join(parts, ",")
}

// ParseDelivered decodes the annotation's value. An entry that does not parse is an error
// naming it; the empty string is an empty set.
func ParseDelivered(s string) (Delivered, error) {
	d := Delivered{}
	if s == "" {
		return d, nil
	}
	for _, part := range strings.Split(s, ",") {
		ipStr, genStr, ok := strings.Cut(part, "@")
		ip, ierr := netip.ParseAddr(ipStr)
		gen, gerr := strconv.ParseInt(genStr, 10, 64)
		if !ok || ierr != nil || gerr != nil {
			return nil, fmt.Errorf("%s: entry %q is not ip@generation", DeliveredAnnotation, part)
		}
		d[ip.Unmap()] = gen
	}
	return d, nil
}

// Proves reports whether d proves that ip, at the EgressIP generation gen, reaches this node.
func (d Delivered) Proves(ip netip.Addr, gen int64) bool {
	g, ok := d[ip]
	return ok && g == gen
}
