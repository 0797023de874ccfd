// Package v1alpha1 holds the egressd.io/v1alpha1 API: EgressGateway, EgressPolicy,
// ClusterEgressPolicy and EgressIP. Validation that needs no cluster state lives in the CRD
// schema (OpenAPI and CEL, tested against a real API server in test/envtest); what needs
// cluster state is reported by the controllers as status conditions.
//
// +kubebuilder:object:generate=true
// +groupName=egressd.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of every egressd kind.
var GroupVersion = schema.GroupVersion{Group: "egressd.io", Version: "v1alpha1"}

// AddToScheme registers the egressd kinds with s. It is called explicitly by each composition
// root; there is no init-time registration.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&EgressGateway{}, &EgressGatewayList{},
		&EgressPolicy{}, &EgressPolicyList{},
		&ClusterEgressPolicy{}, &ClusterEgressPolicyList{},
		&EgressIP{}, &EgressIPList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
