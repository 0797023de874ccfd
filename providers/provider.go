// Package providers owns the contract between the coordinator and the clouds: a small,
// context-first Provider interface, typed errors the coordinator maps to behaviour, decorators
// (metrics, rate limiting) with the same signatures, and the explicit registry of
// constructors. Cloud SDKs live only in providers/<cloud>; this package imports none.
package providers

import (
	"context"
	"encoding/json"
	"net/netip"
	"time"
)

// Provider provisions egress IPs in one cloud account (or one static pool set).
//
// Every method is safe to call again after any error, including a timeout whose effect is
// unknown: each states its idempotency rule. Only the coordinator calls a Provider.
type Provider interface {
	// Name is the name the provider is registered under ("aws", "gcp", "azure", "static", ...).
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
	Name string
	// ProviderID is the node's spec.providerID (aws:///us-east-1a/i-0abc...,
	// gce://project/zone/instance, azure:///subscriptions/.../virtualMachines/vm, static://name).
	ProviderID string
	// Zone is the node's topology.kubernetes.io/zone label, when known.
	Zone string
}

// NodeInfo is what a provider knows of a node.
type NodeInfo struct {
	Ref        NodeRef
	InstanceID string
	Zone       string
	Interfaces []Interface
	// Subnets egress IPs may come from in the node's zone (the primary interface's first).
	Subnets  []Subnet
	Capacity Capacity
}

// Interface is one network interface of a node.
type Interface struct {
	// ID is the provider's ID (AWS ENI ID, GCP "nic0", Azure NIC resource ID).
	ID string
	// MAC lets the agent find the interface on the node.
	MAC string
	// DeviceIndex is the attachment order (0 is the primary interface).
	DeviceIndex int
	// Dedicated: created by egressd for egress IPs.
	Dedicated bool
	SubnetID  string
	PrimaryIP netip.Addr
	// SecondaryIPs are the other private addresses the interface holds.
	SecondaryIPs []netip.Addr
}

// Subnet is a cloud subnet.
type Subnet struct {
	ID   string
	Zone string
	CIDR netip.Prefix
	// Free is the number of unused addresses the cloud reports, or -1 when unknown.
	Free int
	// Reserved addresses the cloud never hands out (network, router, DNS, broadcast...).
	Reserved []netip.Addr
}

// Capacity says how many more egress IPs a node can take.
type Capacity struct {
	// MaxInterfaces the instance type supports; MaxIPsPerInterface includes the primary IP.
	MaxInterfaces      int
	MaxIPsPerInterface int
	// FreeIPSlots is how many more addresses fit on the node's primary interface
	// (InterfacePrimary), bounded by the free addresses of its subnet.
	FreeIPSlots int
	// DedicatedFreeIPSlots is how many more addresses fit on the node's dedicated egress
	// interface (InterfaceDedicated), counting one still to be created when none is attached
	// and the instance has room for it; 0 where the provider has no dedicated interfaces.
	DedicatedFreeIPSlots int
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
	Cluster string
	// Gateway is the EgressGateway name.
	Gateway string
}

// EnsureRequest asks for an address on a node.
type EnsureRequest struct {
	Owner Owner
	Node  NodeRef
	// IP is the address to assign, chosen by ipalloc. Required.
	IP netip.Addr
	// Subnet the address belongs to (provider ID). Empty: the subnet of the interface used.
	Subnet    string
	Public    bool
	Interface InterfaceMode
}

// MoveRequest moves an assigned address to another node.
type MoveRequest struct {
	Owner Owner
	// Current is the assignment as last recorded (may be stale).
	Current Assignment
	To      NodeRef
	// Interface on the destination node; empty means the mode of Current (its Attachment
	// where the provider records the mode there, else the provider's default).
	Interface InterfaceMode
}

// ReleaseRequest releases an address and what egressd created for it.
type ReleaseRequest struct {
	Owner Owner
	// Current is the assignment as last recorded (may be stale or partly empty).
	Current Assignment
}

// Assignment is where an address is now.
type Assignment struct {
	IP netip.Addr
	// Node is the Kubernetes node name holding IP (empty when unassigned).
	Node       string
	InstanceID string
	// InterfaceID is the provider's interface ID; InterfaceMAC lets the agent find it.
	InterfaceID  string
	InterfaceMAC string
	Subnet       string
	// Attachment is provider-specific (Azure ipConfiguration name, GCP alias range).
	Attachment string
	PublicIP   netip.Addr
	// PublicAllocation and PublicAssociation identify the public IP resources.
	PublicAllocation  string
	PublicAssociation string
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
	Kind ResourceKind
	// ID is the provider's ID of the resource (ENI ID, allocation ID, address name...).
	ID string
	// IP is the address, for private and public IPs.
	IP    netip.Addr
	Owner Owner
	// Node holding the resource, when attached and known to the provider by its Kubernetes
	// name (static pools); clouds report InstanceID instead.
	Node string
	// InstanceID is the cloud instance the resource is attached to, when attached.
	InstanceID string
	// Created is when the resource was created, zero when the cloud does not say.
	Created time.Time
}

// Constructor builds a provider from its raw configuration (the provider's own JSON object in
// the controller configuration).
type Constructor func(ctx context.Context, config json.RawMessage) (Provider, error)

// Registry maps provider names to constructors. The controller's composition root builds it
// explicitly; nothing registers itself.
type Registry map[string]Constructor

// New builds the named provider.
func (r Registry) New(ctx context.Context, name string, config json.RawMessage) (Provider, error) {
	c, ok := r[name]
	if !ok {
		return nil, &Error{Kind: KindNotFound, Op: "new provider " + name, Err: errUnknownProvider}
	}
	return c(ctx, config)
}
