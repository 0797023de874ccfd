package v1alpha1

import (
	"net/netip"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// EgressIPSpec is what the coordinator wants for one provisioned address.
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.ip) || self.ip == oldSelf.ip",message="ip is immutable: an EgressIP is named after its address"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.gateway) || self.gateway == oldSelf.gateway",message="gateway is immutable: release the address and allocate a new one"
type EgressIPSpec struct {
	// IP is the private egress address.
	// +kubebuilder:validation:MaxLength=39
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="ip must be an IP address such as 10.0.1.20 or 2001:db8::20"
	// +required
	IP string `json:"ip"`
	// Gateway is the EgressGateway that owns the address.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	Gateway string `json:"gateway"`
	// Zone of the address.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +required
	Zone string `json:"zone"`
	// Provider that provisioned the address.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +required
	Provider string `json:"provider"`
	// Subnet the address belongs to (provider's ID).
	// +optional
	Subnet string `json:"subnet,omitempty"`
	// Public: the address also has a public IP.
	// +optional
	Public bool `json:"public,omitempty"`
	// Node that should hold the address. Empty: unplaced.
	// +optional
	Node string `json:"node,omitempty"`
}

// ProviderHandle records the cloud resources behind an address, so the coordinator can act on
// them after a restart without searching.
type ProviderHandle struct {
	// Interface holding the address: AWS ENI ID, GCP instance/nic, Azure NIC resource ID.
	// +optional
	Interface string `json:"interface,omitempty"`
	// Attachment: Azure ipConfiguration name, GCP alias range; empty on AWS.
	// +optional
	Attachment string `json:"attachment,omitempty"`
	// PublicAllocation: AWS Elastic IP allocation ID, GCP address name, Azure public IP ID.
	// +optional
	PublicAllocation string `json:"publicAllocation,omitempty"`
	// PublicAssociation: AWS association ID, GCP access config name.
	// +optional
	PublicAssociation string `json:"publicAssociation,omitempty"`
}

// EgressIPStatus is what the cloud holds.
type EgressIPStatus struct {
	// Conditions: Assigned.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Node holding the address in the cloud now.
	// +optional
	Node string `json:"node,omitempty"`
	// InterfaceMAC of the interface holding the address; the agent mounts the address on the
	// interface with this MAC, or on the node's primary interface when none matches.
	// +optional
	InterfaceMAC string `json:"interfaceMAC,omitempty"`
	// PublicIP associated with the address.
	// +optional
	PublicIP string `json:"publicIP,omitempty"`
	// PublicNATSource is the private address the cloud's 1:1 NAT translates to PublicIP when
	// that is not the egress address itself. On GCP an access config translates only the
	// primary internal address of its network interface, never an alias IP range, so the
	// provider sets it to that interface's primary address, and the gateway holding the address
	// SNATs the group's public-bound flows to it (the egress address keeps the private-bound
	// ones). Empty: the cloud translates the egress address itself (AWS, Azure).
	// +kubebuilder:validation:MaxLength=39
	// +optional
	PublicNATSource string `json:"publicNATSource,omitempty"`
	// PrivateAddressNotHeld says the cloud does not hold the egress address itself on
	// status.node: it holds PublicNATSource, a private address of its own choosing, and
	// translates it to PublicIP. Set on Azure Uniform scale-set instances, whose
	// ipConfigurations take only Dynamic private addresses. The gateway then SNATs every flow
	// of the group, private-bound ones too, to PublicNATSource: replies to the egress address
	// would not be delivered to it. Partners allowlist the public IP prefix.
	// +optional
	PrivateAddressNotHeld bool `json:"privateAddressNotHeld,omitempty"`
	// Handle of the cloud resources.
	// +optional
	Handle ProviderHandle `json:"handle,omitempty"`
}

// EgressIP is the ledger entry of one address egressd provisioned. The coordinator writes it
// before any cloud call and its finalizer releases the cloud side.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=eip,categories=egressd
// +kubebuilder:printcolumn:name="IP",type=string,JSONPath=`.spec.ip`
// +kubebuilder:printcolumn:name="Gateway",type=string,JSONPath=`.spec.gateway`
// +kubebuilder:printcolumn:name="Zone",type=string,JSONPath=`.spec.zone`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.status.node`
// +kubebuilder:printcolumn:name="Public IP",type=string,JSONPath=`.status.publicIP`
// +kubebuilder:printcolumn:name="Assigned",type=string,JSONPath=`.status.conditions[?(@.type=="Assigned")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type EgressIP struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   EgressIPSpec   `json:"spec"`
	Status EgressIPStatus `json:"status,omitempty"`
}

// EgressIPList is a list of EgressIP.
// +kubebuilder:object:root=true
type EgressIPList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []EgressIP `json:"items"`
}

// EgressIPName is the object name of the EgressIP for addr: the address itself for IPv4, and
// with ':' replaced by '-' for IPv6, since object names cannot hold colons.
func EgressIPName(addr netip.Addr) string {
	return strings.ReplaceAll(addr.Unmap().String(), ":", "-")
}
