package coordinator

import (
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/egressd/egressd/gateway/internal/cachetrim"
)

// cacheOptions is what the coordinator's informers hold: only the agents' Leases, Pods and
// Nodes trimmed to the fields the coordinator reads, and no managed fields. It caches every
// Pod and Node of the cluster, and in full (container specs and statuses, node images, managed
// fields) they were most of its heap: trimming took BenchmarkScale's live heap from 186 MB to
// 26 MB. A field read from a cached Pod or Node that trimPod or trimNode does not keep reads as
// its zero value: add it there, and to TestTrimKeepsWhatIsRead.
func cacheOptions(namespace string) cache.Options {
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			// Only the agents' Leases, not every Lease of the cluster.
			&coordinationv1.Lease{}: {Namespaces: map[string]cache.Config{namespace: {}}},
			&corev1.Pod{}:           {Transform: cachetrim.Transform(trimPod)},
			&corev1.Node{}:          {Transform: cachetrim.Transform(trimNode)},
		},
	}
}

// trimPod keeps what the policy watches (policiesOf, podIPChanged) and the policy reconciler's
// pod count (counted, contract.Steerable) read: the labels, the namespace, spec.hostNetwork,
// the phase, the pod IPs and the deletion timestamp.
func trimPod(p *corev1.Pod) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   p.TypeMeta,
		ObjectMeta: cachetrim.Meta(&p.ObjectMeta),
		Spec:       corev1.PodSpec{HostNetwork: p.Spec.HostNetwork},
		Status:     corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}
}

// trimNode keeps what gateway planning (nodeViews, nodeRef) and the node watch (nodeChanged)
// read: the labels (node selectors, the zone), the deletion timestamp, spec.unschedulable,
// spec.providerID, the addresses (the underlay IP) and the Ready condition.
func trimNode(n *corev1.Node) *corev1.Node {
	t := &corev1.Node{
		TypeMeta:   n.TypeMeta,
		ObjectMeta: cachetrim.Meta(&n.ObjectMeta),
		Spec:       corev1.NodeSpec{ProviderID: n.Spec.ProviderID, Unschedulable: n.Spec.Unschedulable},
		Status:     corev1.NodeStatus{Addresses: n.Status.Addresses},
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			t.Status.Conditions = append(t.Status.Conditions, c)
		}
	}
	return t
}
