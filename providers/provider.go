// Package providers owns the contract between the coordinator and the clouds: a small,
// context-first Provider interface, typed errors the coordinator maps to behaviour, decorators
// (metrics, rate limiting) with the same signatures, and the explicit registry of
// constructors. Cloud SDKs live only in providers/<cloud>; this package imports none.
package providers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"
)

// Provider provisions egress IPs in one cloud account (or one static pool set).
//
// Every method is safe to call again after any error, including a timeout whose effect is
// unknown: each states its idempotency rule. Only the coordinator calls a Provider.
type Provider interface {
	// Name is the provider's configured name (the key of its entry in the controller
	// configuration, "aws-prod"), not its type: metric labels, rate limiters and the
	// coordinator's node cache are keyed by it, so two providers of one type stay apart.
	Name() string

	// DiscoverNode describes a node: instance, zone, subnets, interfaces and capacity.
	// Read-only. Returns a NotFound error when the instance does not exist.
	DiscoverNode(ctx context.Context, node NodeRef) (*NodeInfo, error)

	// EnsureIP makes req.IP (and, with req.Public, a public IP) held by req.Node, creating the
	// dedicated interface first when req.Interface is Dedicated. Idempotent: when the node
	// already holds the address it returns the existing Assignment and mutates nothing; a
	// public IP already associated with the address is reused, never a second one allocated.
	// When the address is held by another node of the cluster it returns a Conflict error
	// (use MoveIP). Capacity errors are CapacityExhausted.
	EnsureIP(ctx context.Context, req EnsureRequest) (*Assignment, error)

	// MoveIP moves an address (and its public IP) from the node in from to the node req.To,
	// keeping the address itself. Idempotent: when req.To already holds it, it returns the
	// Assignment without a mutating call. When no node holds the address, it assigns it to
	// req.To. Returns NotFound when the address is not this cluster's.
	MoveIP(ctx context.Context, req MoveRequest) (*Assignment, error)

	// ReleaseIP unassigns the address from whatever node holds it, disassociates and releases
	// its public IP, and deletes a dedicated interface left with no egress address. Releasing
	// an address that no node holds returns nil. Resources not tagged as owned by req.Owner's
	// cluster are never released: such a request returns a Permission error.
	ReleaseIP(ctx context.Context, req ReleaseRequest) error

	// ListOwned lists every resource tagged as owned by cluster: private IPs (on tagged
	// interfaces or recorded by tag), public IPs, dedicated interfaces. Untagged resources and
	// resources of other clusters are never listed. Read-only.
	ListOwned(ctx context.Context, cluster string) ([]OwnedResource, error)

	// ReleaseOwned releases one resource returned by ListOwned (garbage collection).
	// Releasing a resource that no longer exists returns nil.
	ReleaseOwned(ctx context.Context, res OwnedResource) error
}

// NodeRef names a node the way Kubernetes and the cloud both know it.
type NodeRef struct {
	// Name is the Kubernetes node name.
	Name string `json:"name,omitempty"`
	// ProviderID is the node's spec.providerID (aws:///us-east-1a/i-0abc...,
	// gce://project/zone/instance, azure:///subscriptions/.../virtualMachines/vm, static://name).
	ProviderID string `json:"providerID,omitempty"`
	// Zone is the node's topology.kubernetes.io/zone label, when known.
	Zone string `json:"zone,omitempty"`
}

// NodeInfo is what a provider knows of a node.
type NodeInfo struct {
	Ref        NodeRef     `json:"ref"`
	InstanceID string      `json:"instanceID,omitempty"`
	Zone       string      `json:"zone,omitempty"`
	Interfaces []Interface `json:"interfaces,omitempty"`
	// Subnets egress IPs may come from in the node's zone (the primary interface's first).
	Subnets  []Subnet `json:"subnets,omitempty"`
	Capacity Capacity `json:"capacity"`
}

// Interface is one network interface of a node.
type Interface struct {
	// ID is the provider's ID (AWS ENI ID, GCP "nic0", Azure NIC resource ID).
	ID string `json:"id,omitempty"`
	// MAC lets the agent find the interface on the node.
	MAC string `json:"mac,omitempty"`
	// DeviceIndex is the attachment order (0 is the primary interface).
	DeviceIndex int `json:"deviceIndex,omitempty"`
	// Dedicated: created by egressd for egress IPs.
	Dedicated bool       `json:"dedicated,omitempty"`
	SubnetID  string     `json:"subnetID,omitempty"`
	PrimaryIP netip.Addr `json:"primaryIP,omitzero"`
	// SecondaryIPs are the other private addresses the interface holds.
	SecondaryIPs []netip.Addr `json:"secondaryIPs,omitempty"`
}

// Subnet is a cloud subnet.
type Subnet struct {
	ID   string       `json:"id,omitempty"`
	Zone string       `json:"zone,omitempty"`
	CIDR netip.Prefix `json:"cidr,omitzero"`
	// Free is the number of unused addresses the cloud reports, or -1 when unknown.
	Free int `json:"free,omitempty"`
	// Reserved addresses the cloud never hands out (network, router, DNS, broadcast...).
	Reserved []netip.Addr `json:"reserved,omitempty"`
}

// Capacity says how many more egress IPs a node can take.
type Capacity struct {
	// MaxInterfaces the instance type supports; MaxIPsPerInterface includes the primary IP.
	MaxInterfaces      int `json:"maxInterfaces,omitempty"`
	MaxIPsPerInterface int `json:"maxIPsPerInterface,omitempty"`
	// FreeIPSlots is how many more addresses fit on the node's primary interface
	// (InterfacePrimary), bounded by the free addresses of its subnet.
	FreeIPSlots int `json:"freeIPSlots,omitempty"`
	// DedicatedFreeIPSlots is how many more addresses fit on the node's dedicated egress
	// interface (InterfaceDedicated), counting one still to be created when none is attached
	// and the instance has room for it; 0 where the provider has no dedicated interfaces.
	DedicatedFreeIPSlots int `json:"dedicatedFreeIPSlots,omitempty"`
}

// InterfaceMode mirrors the API's cloud.interface.
type InterfaceMode string

const (
	InterfacePrimary   InterfaceMode = "Primary"
	InterfaceDedicated InterfaceMode = "Dedicated"
)

// Owner identifies who a resource is created for; it becomes the egressd.io/cluster and
// egressd.io/owner tags (labels on GCP).
type Owner struct {
	Cluster string `json:"cluster,omitempty"`
	// Gateway is the EgressGateway name.
	Gateway string `json:"gateway,omitempty"`
}

// EnsureRequest asks for an address on a node.
type EnsureRequest struct {
	Owner Owner   `json:"owner"`
	Node  NodeRef `json:"node"`
	// IP is the address to assign, chosen by ipalloc. Required.
	IP netip.Addr `json:"ip,omitzero"`
	// Subnet the address belongs to (provider ID). Empty: the subnet of the interface used.
	Subnet    string        `json:"subnet,omitempty"`
	Public    bool          `json:"public,omitempty"`
	Interface InterfaceMode `json:"interface,omitempty"`
}

// MoveRequest moves an assigned address to another node.
type MoveRequest struct {
	Owner Owner `json:"owner"`
	// Current is the assignment as last recorded (may be stale).
	Current Assignment `json:"current"`
	To      NodeRef    `json:"to"`
	// Interface on the destination node; empty means the mode of Current (its Attachment
	// where the provider records the mode there, else the provider's default).
	Interface InterfaceMode `json:"interface,omitempty"`
}

// ReleaseRequest releases an address and what egressd created for it.
type ReleaseRequest struct {
	Owner Owner `json:"owner"`
	// Current is the assignment as last recorded (may be stale or partly empty).
	Current Assignment `json:"current"`
}

// Assignment is where an address is now.
type Assignment struct {
	IP netip.Addr `json:"ip,omitzero"`
	// Node is the Kubernetes node name holding IP (empty when unassigned).
	Node       string `json:"node,omitempty"`
	InstanceID string `json:"instanceID,omitempty"`
	// InterfaceID is the provider's interface ID; InterfaceMAC lets the agent find it.
	InterfaceID  string `json:"interfaceID,omitempty"`
	InterfaceMAC string `json:"interfaceMAC,omitempty"`
	Subnet       string `json:"subnet,omitempty"`
	// Attachment is provider-specific (Azure ipConfiguration name, GCP alias range).
	Attachment string     `json:"attachment,omitempty"`
	PublicIP   netip.Addr `json:"publicIP,omitzero"`
	// PublicNATSource is the private address the cloud's 1:1 NAT translates to PublicIP when
	// it is not IP (GCP: the primary internal address of the interface holding IP, since an
	// access config never translates alias ranges). Invalid: the cloud translates IP itself.
	// The agent SNATs public-bound flows to it (EgressIP status.publicNATSource).
	PublicNATSource netip.Addr `json:"publicNATSource,omitzero"`
	// PrivateAddressNotHeld: the cloud holds PublicNATSource (an address of its choosing) on
	// the node instead of IP, so private-bound flows must leave with PublicNATSource as well
	// (Azure Uniform scale-set instances; EgressIP status.privateAddressNotHeld).
	PrivateAddressNotHeld bool `json:"privateAddressNotHeld,omitempty"`
	// PublicAllocation and PublicAssociation identify the public IP resources.
	PublicAllocation  string `json:"publicAllocation,omitempty"`
	PublicAssociation string `json:"publicAssociation,omitempty"`
}

// ResourceKind of an owned resource.
type ResourceKind string

const (
	ResourcePrivateIP ResourceKind = "PrivateIP"
	ResourcePublicIP  ResourceKind = "PublicIP"
	ResourceInterface ResourceKind = "Interface"
)

// OwnedResource is a cloud resource tagged as a cluster's.
type OwnedResource struct {
	Kind ResourceKind `json:"kind,omitempty"`
	// ID is the provider's ID of the resource (ENI ID, allocation ID, address name...).
	ID string `json:"id,omitempty"`
	// IP is the address, for private and public IPs.
	IP    netip.Addr `json:"ip,omitzero"`
	Owner Owner      `json:"owner"`
	// Node holding the resource, when attached and known to the provider by its Kubernetes
	// name (static pools); clouds report InstanceID instead.
	Node string `json:"node,omitempty"`
	// InstanceID is the cloud instance the resource is attached to, when attached.
	InstanceID string `json:"instanceID,omitempty"`
	// Created is when the resource was created, zero when the cloud does not say.
	Created time.Time `json:"created,omitzero"`
}

// NodesDiscoverer is implemented by providers that can describe many nodes in a few calls
// (EC2: one DescribeInstances per 200 instances and one DescribeSubnets per zone, instead of
// two calls per node). The result is index-aligned with nodes: a node has either an info or
// an error. Same idempotency as DiscoverNode: read only.
type NodesDiscoverer interface {
	DiscoverNodes(ctx context.Context, nodes []NodeRef) ([]*NodeInfo, []error)
}

// DiscoverNodes describes nodes with p's batched discovery when it has one (decorators pass it
// through), else one DiscoverNode per node.
func DiscoverNodes(ctx context.Context, p Provider, nodes []NodeRef) ([]*NodeInfo, []error) {
	if b, ok := p.(NodesDiscoverer); ok {
		return b.DiscoverNodes(ctx, nodes)
	}
	return discoverEach(ctx, p, nodes)
}

func discoverEach(ctx context.Context, p Provider, nodes []NodeRef) ([]*NodeInfo, []error) {
	infos, errs := make([]*NodeInfo, len(nodes)), make([]error, len(nodes))
	for i, n := range nodes {
		infos[i], errs[i] = p.DiscoverNode(ctx, n)
	}
	return infos, errs
}

// Constructor builds a provider of one type from its raw configuration (the provider's own
// JSON object in the controller configuration). name is the provider's configured name, the
// key of its entry in the controller configuration, which EgressGateways name in
// spec.addresses.cloud.provider: the provider's identity, which Name returns. Two providers of
// one type (two AWS accounts) have two names.
type Constructor func(ctx context.Context, name string, config json.RawMessage) (Provider, error)

// Registry maps provider types ("aws", "gcp", ...) to constructors. The controller's
// composition root builds it explicitly; nothing registers itself.
type Registry map[string]Constructor

// New builds a provider of type typ under the configured name.
func (r Registry) New(ctx context.Context, typ, name string, config json.RawMessage) (Provider, error) {
	c, ok := r[typ]
	if !ok {
		return nil, &Error{Kind: KindNotFound, Op: "new provider " + name + " of type " + typ, Err: errUnknownProvider}
	}
	return c(ctx, name, config)
}

// CheckName returns an error when name cannot be a provider's identity. Every provider's New
// calls it: metrics, rate limits and the coordinator's caches are keyed by Name.
func CheckName(typ, name string) error {
	if name == "" {
		return fmt.Errorf("new %s provider: a name is required (the key of its entry in the controller configuration)", typ)
	}
	return nil
}
