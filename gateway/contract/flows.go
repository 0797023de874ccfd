package contract

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// The agent's flow stream (egressctl observe): GET FlowsPath on the agent's metrics port
// answers newline-delimited JSON FlowRecords until the client goes away. Query parameters
// filter on the agent: FlowsPodParam (namespace/name, or a pod IP), FlowsNamespaceParam,
// FlowsDropsParam ("true": drops only); FlowsSampleParam asks the datapath for 1 in N packets
// (the agent takes the smallest N its watchers ask for; default DefaultFlowSample).
const (
	FlowsPath           = "/flows"
	FlowsPodParam       = "pod"
	FlowsNamespaceParam = "namespace"
	FlowsDropsParam     = "drops"
	FlowsSampleParam    = "sample"
	// DefaultFlowSample is every packet: what a user debugging one pod expects. Watching a
	// busy gateway, ask for a sample.
	DefaultFlowSample = 1
)

// Verdicts of a FlowRecord.
const (
	FlowSteered   = "STEERED"   // a source node sent it to a gateway node through the tunnel
	FlowLocal     = "SNAT"      // a pod on a gateway node: SNATed on this node
	FlowAdmitted  = "ADMITTED"  // a gateway admitted a tunnelled frame; nftables SNATs it
	FlowDelivered = "DELIVERED" // a source node handed a reply from the gateway to the pod
	FlowDropped   = "DROPPED"   // Reason says why (the egressd_datapath_drops_total reasons)
)

// FlowRecord is one observed packet as the agent streams it.
type FlowRecord struct {
	Time time.Time `json:"time"`
	// Node is the node whose datapath saw the packet.
	Node string `json:"node"`
	// Point is where: "pod" (the classifier on a pod's interface), "tunnel-ingress" (a
	// gateway), "deliver" (a reply reaching a source node), "tunnel-egress".
	Point string `json:"point"`
	// Pod is namespace/name of the pod when it runs on Node.
	Pod string `json:"pod,omitempty"`
	// Source and Destination in the direction the packet went (a reply: from the destination
	// to the pod). Ports are 0 for ICMP.
	Source      netip.AddrPort `json:"source"`
	Destination netip.AddrPort `json:"destination"`
	Protocol    string         `json:"protocol"`
	// Group is the EgressGateway, Gateway the gateway node the flow is pinned to ("" when
	// none was chosen).
	Group   string `json:"group,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	// FromNode is the underlay address of the node that tunnelled the packet (on a gateway)
	// or of the gateway it is tunnelled to (on a source node).
	FromNode netip.Addr `json:"underlay,omitzero"`
	// EgressIP and EgressPort are the address the flow leaves with. A source node knows the
	// IP its gateway SNATs the group to; the port is chosen by the gateway's conntrack, so it
	// is known (from a conntrack lookup) only where the SNAT happens, 0 elsewhere.
	EgressIP   netip.Addr `json:"egressIP,omitzero"`
	EgressPort uint16     `json:"egressPort,omitempty"`
	Verdict    string     `json:"verdict"`
	Reason     string     `json:"reason,omitempty"`
	Bytes      int        `json:"bytes"`
}

// PodAddr returns the pod's side of the record: the source, or the destination of a reply.
func (r FlowRecord) PodAddr() netip.Addr {
	if r.Point == "deliver" {
		return r.Destination.Addr()
	}
	return r.Source.Addr()
}

func hostPort(ap netip.AddrPort) string {
	if ap.Port() == 0 {
		return ap.Addr().String()
	}
	return ap.String()
}

// Line is the record as egressctl observe prints it:
//
//	TIME NODE POINT [POD] SRC -> DST PROTO [group=G] [gateway=N] [egress=IP:PORT] VERDICT [reason=R]
//
// An egress port not known where the packet was seen is "-".
func (r FlowRecord) Line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s", r.Time.Format("15:04:05.000"), r.Node, r.Point)
	if r.Pod != "" {
		fmt.Fprintf(&b, " %s", r.Pod)
	}
	fmt.Fprintf(&b, " %s -> %s %s", hostPort(r.Source), hostPort(r.Destination), r.Protocol)
	if r.Group != "" {
		fmt.Fprintf(&b, " group=%s", r.Group)
	}
	if r.Gateway != "" {
		fmt.Fprintf(&b, " gateway=%s", r.Gateway)
	}
	if r.FromNode.IsValid() {
		fmt.Fprintf(&b, " underlay=%s", r.FromNode)
	}
	if r.EgressIP.IsValid() {
		port := "-"
		if r.EgressPort != 0 {
			port = fmt.Sprint(r.EgressPort)
		}
		ip := r.EgressIP.String()
		if r.EgressIP.Is6() {
			ip = "[" + ip + "]"
		}
		fmt.Fprintf(&b, " egress=%s:%s", ip, port)
	}
	fmt.Fprintf(&b, " %s", r.Verdict)
	if r.Reason != "" {
		fmt.Fprintf(&b, " reason=%s", r.Reason)
	}
	return b.String()
}
