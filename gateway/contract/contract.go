// Package contract is the one home of the runtime facts that the node agent, the coordinator
// and egressctl must agree on and that the API does not show: the agent's heartbeat Lease
// (name, namespace, lifetime), a node's underlay address, which pods egressd steers and which
// namespaces a gateway admits, the probe settings a gateway's health spec means, and the UDP
// ports every node uses. API-visible facts (condition reasons, labels, tag keys, the defaults
// of the CRD fields) live in api/v1alpha1.
//
// Everything here is a pure function of its arguments or a constant: no I/O, no clock.
package contract

import (
	"net/netip"
	"slices"
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
