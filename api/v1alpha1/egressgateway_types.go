package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// GatewayMode says how the healthy gateways of a group share traffic.
// +kubebuilder:validation:Enum=ActiveActive;ActiveStandby
type GatewayMode string

const (
	// ModeActiveActive: every healthy gateway forwards; new flows hash across them.
	ModeActiveActive GatewayMode = "ActiveActive"
	// ModeActiveStandby: one active gateway per zone; the others are hot standbys.
	ModeActiveStandby GatewayMode = "ActiveStandby"
)

// ZoneAffinity says which zones' gateways a node may send through.
// +kubebuilder:validation:Enum=PreferLocal;LocalOnly;Any
type ZoneAffinity string

const (
	// AffinityPreferLocal: gateways in the node's zone, others only when none is healthy there.
	AffinityPreferLocal ZoneAffinity = "PreferLocal"
	// AffinityLocalOnly: gateways in the node's zone only; no cross-zone traffic ever.
	AffinityLocalOnly ZoneAffinity = "LocalOnly"
	// AffinityAny: all healthy gateways, whatever their zone.
	AffinityAny ZoneAffinity = "Any"
)

// FailbackPolicy says what happens when a gateway recovers.
// +kubebuilder:validation:Enum=Immediate;Never
type FailbackPolicy string

const (
	// FailbackImmediate: a recovered gateway takes back its role and egress IPs at once.
	FailbackImmediate FailbackPolicy = "Immediate"
	// FailbackNever: a recovered gateway joins as a spare; nothing moves back.
	FailbackNever FailbackPolicy = "Never"
)

// IPFamily of egress addresses.
// +kubebuilder:validation:Enum=IPv4;IPv6
type IPFamily string

const (
	IPv4 IPFamily = "IPv4"
	IPv6 IPFamily = "IPv6"
)

// InterfaceMode says where a cloud provider puts egress IPs on a node.
// +kubebuilder:validation:Enum=Primary;Dedicated
type InterfaceMode string

const (
	// InterfacePrimary: secondary addresses on the node's primary interface.
	InterfacePrimary InterfaceMode = "Primary"
	// InterfaceDedicated: a separate interface that egressd creates and attaches (AWS ENI).
	InterfaceDedicated InterfaceMode = "Dedicated"
)

// GatewayState of one gateway node in a group.
// +kubebuilder:validation:Enum=Active;Standby;Draining;Unhealthy
type GatewayState string

const (
	GatewayActive    GatewayState = "Active"
	GatewayStandby   GatewayState = "Standby"
	GatewayDraining  GatewayState = "Draining"
	GatewayUnhealthy GatewayState = "Unhealthy"
)

// EgressGatewaySpec is a group of gateway nodes and the egress IPs it owns.
// +kubebuilder:validation:XValidation:rule="self.mode != 'ActiveStandby' || !has(self.zones) || !has(self.zones.maxGatewaysPerZone) || self.zones.maxGatewaysPerZone >= 2",message="zones.maxGatewaysPerZone must be at least 2 in ActiveStandby mode, or there is no standby"
type EgressGatewaySpec struct {
	// NodeSelector selects the gateway nodes, typically by the label a node pool carries.
	// +required
	NodeSelector metav1.LabelSelector `json:"nodeSelector"`

	// Mode: ActiveActive (default) or ActiveStandby.
	// +kubebuilder:default=ActiveActive
	// +optional
	Mode GatewayMode `json:"mode,omitempty"`

	// Addresses says where the egress IPs come from: exactly one of cloud, static, nodeInterface.
	// +required
	Addresses EgressAddresses `json:"addresses"`

	// Zones controls zone affinity and how many gateways each zone runs.
	// +optional
	Zones *ZoneSpec `json:"zones,omitempty"`

	// Health sets how gateways are probed. The defaults detect a dead gateway in 300 ms.
	// +optional
	Health *HealthSpec `json:"health,omitempty"`

	// Failback: Never (default; a recovered gateway does not take traffic back) or Immediate.
	// +kubebuilder:default=Never
	// +optional
	Failback FailbackPolicy `json:"failback,omitempty"`

	// DrainGracePeriod bounds how long established flows may keep using a draining gateway.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('1h')",message="drainGracePeriod must be at most 1h"
	// +kubebuilder:default="30s"
	// +optional
	DrainGracePeriod *metav1.Duration `json:"drainGracePeriod,omitempty"`

	// AllowedNamespaces limits which namespaces' policies may use this gateway. Unset: all.
	// +optional
	AllowedNamespaces *NamespaceSelection `json:"allowedNamespaces,omitempty"`
}

// EgressAddresses is exactly one address source.
// +kubebuilder:validation:XValidation:rule="[has(self.cloud), has(self.static), has(self.nodeInterface)].filter(x, x).size() == 1",message="addresses: set exactly one of cloud, static or nodeInterface"
type EgressAddresses struct {
	// Cloud: the provider allocates and attaches addresses in each zone.
	// +optional
	Cloud *CloudAddresses `json:"cloud,omitempty"`
	// Static: pre-provisioned addresses per zone, announced by ARP/NDP.
	// +optional
	Static *StaticAddresses `json:"static,omitempty"`
	// NodeInterface: each gateway uses the first address of a named interface (no IP moves).
	// +optional
	NodeInterface *NodeInterfaceAddresses `json:"nodeInterface,omitempty"`
}

// CloudAddresses asks a provider for egress IPs in every zone that has gateway nodes.
// +kubebuilder:validation:XValidation:rule="!(has(self.public) && self.public) || self.family == 'IPv4'",message="cloud.public requires cloud.family IPv4: public egress addresses are IPv4 in every supported cloud"
type CloudAddresses struct {
	// Provider names a provider configured in the controller (aws, gcp, azure, or a plugin).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="cloud.provider must be a lowercase name such as aws, gcp or azure"
	// +required
	Provider string `json:"provider"`

	// IPsPerZone is how many egress IPs each zone gets.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	// +kubebuilder:default=1
	// +optional
	IPsPerZone int32 `json:"ipsPerZone,omitempty"`

	// Public also gives each egress IP a public address (AWS Elastic IP, GCP static external
	// address, Azure public IP) that the traffic leaves with.
	// +optional
	Public bool `json:"public,omitempty"`

	// PrivateCIDRs are the destinations that keep the private egress address where the cloud
	// translates the public IP from another address than the egress address. On GCP an access
	// config translates only the primary internal address of its interface, never an alias IP
	// range: flows to any other destination (public-bound) leave the gateway SNATed to that
	// primary address and reach the internet with the public IP, flows to these keep the
	// egress address. Unset: DefaultPrivateCIDRs, the ranges GCP accepts for VPC subnets; set
	// it when the VPC, a peered network or an on-premises one reached through the VPC uses other
	// ranges (privately used public IPv4). Used only with public; where the cloud translates the
	// egress address itself (AWS, Azure) every flow keeps it.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=18
	// +kubebuilder:validation:XValidation:rule="self.all(c, isCIDR(c) && cidr(c).ip().family() == 4)",message="privateCIDRs: every entry must be an IPv4 CIDR such as 10.0.0.0/8"
	// +kubebuilder:validation:XValidation:rule="self.all(c, !isCIDR(c) || cidr(c) == cidr(c).masked())",message="privateCIDRs: entries must have no host bits set (write 10.0.0.0/8, not 10.1.2.3/8)"
	// +listType=set
	// +optional
	PrivateCIDRs []string `json:"privateCIDRs,omitempty"`

	// Family of the private egress addresses.
	// +kubebuilder:default=IPv4
	// +optional
	Family IPFamily `json:"family,omitempty"`

	// Interface: Primary (default) or Dedicated.
	// +kubebuilder:default=Primary
	// +optional
	Interface InterfaceMode `json:"interface,omitempty"`

	// SubnetSelector picks the subnets egress IPs come from. Unset: the subnet of the node's
	// primary interface.
	// +optional
	SubnetSelector *SubnetSelector `json:"subnetSelector,omitempty"`
}

// SubnetSelector selects cloud subnets by ID or by tags.
// +kubebuilder:validation:XValidation:rule="(has(self.ids) && size(self.ids) > 0) || (has(self.tags) && size(self.tags) > 0)",message="subnetSelector: set ids or tags"
type SubnetSelector struct {
	// IDs of subnets (AWS subnet-..., GCP subnetwork names, Azure subnet resource IDs).
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=512
	// +listType=set
	// +optional
	IDs []string `json:"ids,omitempty"`
	// Tags (labels on GCP) that the subnets must carry.
	// +kubebuilder:validation:MaxProperties=16
	// +optional
	Tags map[string]string `json:"tags,omitempty"`
}

// StaticAddresses are pre-provisioned pools, one or more per zone.
type StaticAddresses struct {
	// Pools of addresses.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +required
	Pools []StaticPool `json:"pools"`
}

// StaticPool is a set of addresses in one zone and subnet.
// +kubebuilder:validation:XValidation:rule="self.ips.all(ip, cidr(self.subnet).containsIP(ip))",message="static.pools[].ips must lie inside the pool's subnet"
type StaticPool struct {
	// Zone the addresses belong to (topology.kubernetes.io/zone of the gateway nodes).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +required
	Zone string `json:"zone"`

	// Subnet the addresses are announced on, such as 192.0.2.0/24 or 2001:db8::/64.
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="static.pools[].subnet must be a CIDR such as 192.0.2.0/24 or 2001:db8::/64"
	// +required
	Subnet string `json:"subnet"`

	// IPs handed to the gateways of the zone.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=39
	// +kubebuilder:validation:XValidation:rule="self.all(ip, isIP(ip))",message="static.pools[].ips must be IP addresses such as 192.0.2.10 or 2001:db8::10"
	// +listType=set
	// +required
	IPs []string `json:"ips"`

	// Interface on the gateway nodes that carries the subnet. Unset: found by route lookup.
	// +kubebuilder:validation:MaxLength=15
	// +optional
	Interface string `json:"interface,omitempty"`
}

// NodeInterfaceAddresses uses an address the node already has.
type NodeInterfaceAddresses struct {
	// Interface whose first address of the family is the egress IP.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-zA-Z0-9_.-]+$')",message="nodeInterface.interface must be a Linux interface name"
	// +required
	Interface string `json:"interface"`
	// Family of the address to take.
	// +kubebuilder:default=IPv4
	// +optional
	Family IPFamily `json:"family,omitempty"`
}

// ZoneSpec controls zone behaviour.
type ZoneSpec struct {
	// Affinity: PreferLocal (default), LocalOnly or Any.
	// +kubebuilder:default=PreferLocal
	// +optional
	Affinity ZoneAffinity `json:"affinity,omitempty"`
	// MaxGatewaysPerZone caps the gateways used per zone. Unset: every selected node.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	// +optional
	MaxGatewaysPerZone *int32 `json:"maxGatewaysPerZone,omitempty"`
}

// HealthSpec sets how gateways are probed, by the agents over the tunnel and by the
// coordinator. A gateway is unhealthy after failureThreshold missed probes in a row.
// +kubebuilder:validation:XValidation:rule="!has(self.timeout) || !has(self.interval) || duration(self.timeout) <= duration(self.interval)",message="health.timeout must not exceed health.interval"
type HealthSpec struct {
	// Interval between probes, from 10ms to 10s.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10ms') && duration(self) <= duration('10s')",message="health.interval must be between 10ms and 10s"
	// +kubebuilder:default="100ms"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
	// Timeout of one probe. Unset: the interval.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('5ms') && duration(self) <= duration('10s')",message="health.timeout must be between 5ms and 10s"
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`
	// FailureThreshold is how many probes in a row must fail, from 1 to 20.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=20
	// +kubebuilder:default=3
	// +optional
	FailureThreshold int32 `json:"failureThreshold,omitempty"`
}

// NamespaceSelection admits namespaces by name or by label.
// +kubebuilder:validation:XValidation:rule="(has(self.names) && size(self.names) > 0) || has(self.selector)",message="allowedNamespaces: set names or selector"
type NamespaceSelection struct {
	// Names of namespaces.
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=63
	// +listType=set
	// +optional
	Names []string `json:"names,omitempty"`
	// Selector on namespace labels.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
}

// EgressGatewayStatus is written by the coordinator.
type EgressGatewayStatus struct {
	// ObservedGeneration is the spec generation the status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready, Degraded, CloudSynced.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// GroupID is the cluster-wide number of the group, assigned by the coordinator (1-65535).
	// It travels in the tunnel's VNI and the packet mark, so every node must agree on it.
	// +optional
	GroupID int32 `json:"groupID,omitempty"`
	// ReadyGateways counts gateways in state Active or Standby.
	// +optional
	ReadyGateways int32 `json:"readyGateways,omitempty"`
	// EgressIPs is the set of egress IPs of the group, private (and public, when any) sorted.
	// It is the set an external firewall allowlists; failover never changes it.
	// +listType=atomic
	// +optional
	EgressIPs []string `json:"egressIPs,omitempty"`
	// Zones: per zone, its gateways and its egress IPs.
	// +listType=map
	// +listMapKey=name
	// +optional
	Zones []ZoneStatus `json:"zones,omitempty"`
}

// ZoneStatus is one zone of a gateway group.
type ZoneStatus struct {
	// Name of the zone.
	Name string `json:"name"`
	// Gateways in the zone.
	// +listType=map
	// +listMapKey=node
	// +optional
	Gateways []GatewayNodeStatus `json:"gateways,omitempty"`
	// EgressIPs of the zone and who holds them.
	// +listType=map
	// +listMapKey=ip
	// +optional
	EgressIPs []EgressIPHolder `json:"egressIPs,omitempty"`
}

// GatewayNodeStatus is one gateway node.
type GatewayNodeStatus struct {
	// Node name.
	Node string `json:"node"`
	// State: Active, Standby, Draining or Unhealthy.
	State GatewayState `json:"state"`
	// UnderlayIP is the node address the tunnels reach it at.
	// +optional
	UnderlayIP string `json:"underlayIP,omitempty"`
	// Since when the gateway is in its state.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
	// Reason for a state other than Active.
	// +optional
	Reason string `json:"reason,omitempty"`
}

// EgressIPHolder is an egress IP and the node holding it.
type EgressIPHolder struct {
	// IP is the private egress address.
	IP string `json:"ip"`
	// PublicIP associated with IP, if any.
	// +optional
	PublicIP string `json:"publicIP,omitempty"`
	// Node holding IP now; empty while it is being moved.
	// +optional
	Node string `json:"node,omitempty"`
}

// EgressGateway is a zone-aware group of gateway nodes and the egress IPs it owns.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=egw,categories=egressd
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Gateways",type=integer,JSONPath=`.status.readyGateways`
// +kubebuilder:printcolumn:name="Egress IPs",type=string,JSONPath=`.status.egressIPs`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type EgressGateway struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   EgressGatewaySpec   `json:"spec"`
	Status EgressGatewayStatus `json:"status,omitempty"`
}

// EgressGatewayList is a list of EgressGateway.
// +kubebuilder:object:root=true
type EgressGatewayList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []EgressGateway `json:"items"`
}

// ListsNode reports whether the status lists the node as one of the group's gateways, in any
// zone.
func (s *EgressGatewayStatus) ListsNode(node string) bool {
	for _, z := range s.Zones {
		for _, g := range z.Gateways {
			if g.Node == node {
				return true
			}
		}
	}
	return false
}
