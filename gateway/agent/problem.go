package agent

import (
	"fmt"
	"slices"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
)

// ProblemKind says what is wrong with an object ComputeState skipped or used only in part.
type ProblemKind string

const (
	// ProblemNoGroupID: an EgressGateway the coordinator has not numbered yet.
	ProblemNoGroupID ProblemKind = "NoGroupID"
	// ProblemGroupIDTooLarge: an EgressGateway's group id is past what this node's packet
	// mark layout carries (--mark-mask); the node neither steers to it nor serves it.
	// The coordinator's Ready=False reason, when it is given the same mask.
	ProblemGroupIDTooLarge ProblemKind = egressv1.ReasonGroupIDTooLarge
	// ProblemGatewayNotFound: a policy names an EgressGateway that does not exist or has no
	// group id yet (Related names it).
	ProblemGatewayNotFound ProblemKind = "GatewayNotFound"
	// ProblemInvalidSelector: a policy's podSelector or namespaceSelector does not parse.
	ProblemInvalidSelector ProblemKind = "InvalidSelector"
	// ProblemInvalidCIDR: a policy's destination or excluded CIDR does not parse.
	ProblemInvalidCIDR ProblemKind = "InvalidCIDR"
	// ProblemNoUnderlayIP: a gateway node listed Active or Draining has no IPv4 underlay IP
	// (Related names the node).
	ProblemNoUnderlayIP ProblemKind = "NoUnderlayIP"
	// ProblemTooManyGateways: a group has more usable gateways than the datapath holds.
	ProblemTooManyGateways ProblemKind = "TooManyGateways"
	// ProblemInvalidIP: an EgressIP's spec.ip does not parse.
	ProblemInvalidIP ProblemKind = "InvalidIP"
	// ProblemNoInterface: this node lacks the interface an egress IP or a nodeInterface
	// group needs, or the interface lacks an address of the family.
	ProblemNoInterface ProblemKind = "NoInterface"
	// ProblemNoClusterView: this node serves a group but has not read the cluster's pods and
	// nodes yet, so its gateway admits only the tunnelled traffic its datapath admitted
	// before (a restarted agent's predecessor's sources; none on a node booted afresh).
	ProblemNoClusterView ProblemKind = "NoClusterView"
	// ProblemPrefixBudgetExceeded: a policy does not fit the prefix budget of its namespace
	// (of the cluster, for a ClusterEgressPolicy) after the policies created before it; it is
	// skipped whole, and its Accepted condition says so too.
	ProblemPrefixBudgetExceeded ProblemKind = egressv1.ReasonPrefixBudgetExceeded
)

// ObjectRef names an API object.
type ObjectRef struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// String is "Kind name" or "Kind namespace/name".
func (r ObjectRef) String() string {
	if r.Namespace == "" {
		return r.Kind + " " + r.Name
	}
	return r.Kind + " " + r.Namespace + "/" + r.Name
}

// Problem is an object ComputeState skipped, or used only in part, and why. The agent logs
// them; egressctl explain shows those about the objects it considers, chosen by Object and
// Related.
type Problem struct {
	Kind ProblemKind `json:"kind"`
	// Object is the object skipped or used in part.
	Object ObjectRef `json:"object"`
	// Related are the other objects it involves (the gateway a policy names, a gateway node).
	Related []ObjectRef `json:"related,omitempty"`
	// Message says what is wrong, for people; it does not repeat Object.
	Message string `json:"message"`
}

// String is the problem for a log line or a terminal: "EgressPolicy ns/p: message".
func (p Problem) String() string { return p.Object.String() + ": " + p.Message }

// Involves reports whether the problem is about ref, as its object or a related one.
func (p Problem) Involves(ref ObjectRef) bool {
	return p.Object == ref || slices.Contains(p.Related, ref)
}

func problemf(kind ProblemKind, obj ObjectRef, related []ObjectRef, format string, args ...any) Problem {
	return Problem{Kind: kind, Object: obj, Related: related, Message: fmt.Sprintf(format, args...)}
}

// Refs of the kinds ComputeState reads.
func gatewayRef(name string) ObjectRef  { return ObjectRef{Kind: "EgressGateway", Name: name} }
func egressIPRef(name string) ObjectRef { return ObjectRef{Kind: "EgressIP", Name: name} }
func nodeRef(name string) ObjectRef     { return ObjectRef{Kind: "Node", Name: name} }
