package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// EgressPolicyRule is what an EgressPolicy and a ClusterEgressPolicy have in common: which pods,
// to which destinations, through which gateway. Overlapping policies resolve by the longest
// destination prefix, then the highest priority, then the name.
// +kubebuilder:validation:XValidation:rule="!has(self.excludedCIDRs) || self.excludedCIDRs.all(e, self.destinationCIDRs.exists(d, cidr(d).containsCIDR(e)))",message="excludedCIDRs: every entry must lie inside one of destinationCIDRs"
type EgressPolicyRule struct {
	// PodSelector selects the pods whose traffic the policy steers. {} selects every pod.
	// +required
	PodSelector metav1.LabelSelector `json:"podSelector"`

	// DestinationCIDRs the traffic goes to, IPv4 or IPv6, such as 203.0.113.0/24 or 0.0.0.0/0.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="self.all(c, isCIDR(c))",message="destinationCIDRs: every entry must be a CIDR such as 203.0.113.0/24 or 2001:db8::/32"
	// +kubebuilder:validation:XValidation:rule="self.all(c, !isCIDR(c) || cidr(c) == cidr(c).masked())",message="destinationCIDRs: entries must have no host bits set (write 10.0.0.0/8, not 10.1.2.3/8)"
	// +listType=set
	// +required
	DestinationCIDRs []string `json:"destinationCIDRs"`

	// ExcludedCIDRs inside the destinations that keep the node's own address.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="self.all(c, isCIDR(c))",message="excludedCIDRs: every entry must be a CIDR such as 203.0.113.0/28 or 2001:db8::/64"
	// +kubebuilder:validation:XValidation:rule="self.all(c, !isCIDR(c) || cidr(c) == cidr(c).masked())",message="excludedCIDRs: entries must have no host bits set"
	// +listType=set
	// +optional
	ExcludedCIDRs []string `json:"excludedCIDRs,omitempty"`

	// Gateway is the name of the EgressGateway to leave through.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="gateway must be the name of an EgressGateway (lowercase letters, digits, '-' and '.')"
	// +required
	Gateway string `json:"gateway"`

	// Priority breaks ties between policies with the same destination prefix; higher wins.
	// +kubebuilder:validation:Minimum=-1000
	// +kubebuilder:validation:Maximum=1000
	// +optional
	Priority int32 `json:"priority,omitempty"`
}

// EgressPolicyStatus is written by the coordinator.
type EgressPolicyStatus struct {
	// ObservedGeneration is the spec generation the status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Accepted, Ready.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// MatchedPods counts the running pods the policy selects.
	// +optional
	MatchedPods int32 `json:"matchedPods,omitempty"`
	// EgressIPs the selected traffic leaves with.
	// +listType=atomic
	// +optional
	EgressIPs []string `json:"egressIPs,omitempty"`
}

// EgressPolicy steers selected pods of its namespace through an EgressGateway.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=egp,categories=egressd
// +kubebuilder:printcolumn:name="Gateway",type=string,JSONPath=`.spec.gateway`
// +kubebuilder:printcolumn:name="Pods",type=integer,JSONPath=`.status.matchedPods`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Egress IPs",type=string,JSONPath=`.status.egressIPs`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type EgressPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   EgressPolicyRule   `json:"spec"`
	Status EgressPolicyStatus `json:"status,omitempty"`
}

// EgressPolicyList is a list of EgressPolicy.
// +kubebuilder:object:root=true
type EgressPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []EgressPolicy `json:"items"`
}

// ClusterEgressPolicySpec is an EgressPolicyRule over the namespaces a selector picks. The
// rule's own validations (excludedCIDRs inside destinationCIDRs) come with the inlined type;
// repeating them here would list them twice, which server-side apply rejects.
type ClusterEgressPolicySpec struct {
	// NamespaceSelector selects the namespaces whose pods podSelector applies to.
	// {} selects every namespace.
	// +required
	NamespaceSelector metav1.LabelSelector `json:"namespaceSelector"`

	EgressPolicyRule `json:",inline"`
}

// ClusterEgressPolicy steers selected pods of selected namespaces through an EgressGateway.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cegpol,categories=egressd
// +kubebuilder:printcolumn:name="Gateway",type=string,JSONPath=`.spec.gateway`
// +kubebuilder:printcolumn:name="Pods",type=integer,JSONPath=`.status.matchedPods`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Egress IPs",type=string,JSONPath=`.status.egressIPs`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ClusterEgressPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ClusterEgressPolicySpec `json:"spec"`
	Status EgressPolicyStatus      `json:"status,omitempty"`
}

// ClusterEgressPolicyList is a list of ClusterEgressPolicy.
// +kubebuilder:object:root=true
type ClusterEgressPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterEgressPolicy `json:"items"`
}
