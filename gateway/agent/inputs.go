package agent

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
)

// ReadInputs reads through r the API objects ComputeState decides from for a node: the node
// (nil when it does not exist), its pods, and every namespace, policy, gateway and egress IP.
// podOpts narrow the pod list (egressctl asks the API server for the node's pods by field
// selector; the agent's cache holds only its node's pods already); pods of other nodes are
// left out either way. The fields that are not API objects (Health, ProbeDraining,
// Interfaces, SetIDs, ProbePort) are the caller's.
//
// The agent reads its cache with it, and egressctl explain the API server, so that both
// compute from the same objects.
func ReadInputs(ctx context.Context, r client.Reader, node string, podOpts ...client.ListOption) (Inputs, error) {
	var in Inputs
	n := &corev1.Node{}
	if err := r.Get(ctx, client.ObjectKey{Name: node}, n); err != nil {
		if !apierrors.IsNotFound(err) {
			return in, fmt.Errorf("reading node %s: %w", node, err)
		}
	} else {
		in.Node = n
	}
	var pods corev1.PodList
	if err := r.List(ctx, &pods, podOpts...); err != nil {
		return in, fmt.Errorf("listing pods of node %s: %w", node, err)
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName == node {
			in.Pods = append(in.Pods, p)
		}
	}
	var (
		nss   corev1.NamespaceList
		pols  egressv1.EgressPolicyList
		cpols egressv1.ClusterEgressPolicyList
		gws   egressv1.EgressGatewayList
		eips  egressv1.EgressIPList
	)
	for _, l := range []struct {
		what string
		list client.ObjectList
	}{{"Namespaces", &nss}, {"EgressPolicies", &pols}, {"ClusterEgressPolicies", &cpols}, {"EgressGateways", &gws}, {"EgressIPs", &eips}} {
		if err := r.List(ctx, l.list); err != nil {
			return in, fmt.Errorf("listing %s: %w", l.what, err)
		}
	}
	in.Namespaces, in.Policies, in.ClusterPolicies, in.Gateways, in.EgressIPs = nss.Items, pols.Items, cpols.Items, gws.Items, eips.Items
	return in, nil
}
