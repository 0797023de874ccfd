package agent

import (
	"fmt"
	"net/http"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/gateway/internal/cachetrim"
)

// ManagerOptions are the agent manager's endpoints.
type ManagerOptions struct {
	// NodeName limits the pod and node caches to this node.
	NodeName string
	// MetricsBindAddress and HealthProbeBindAddress: "0" disables the endpoint.
	MetricsBindAddress, HealthProbeBindAddress string
	// Flows, when set, is served at contract.FlowsPath on the metrics server (egressctl observe).
	Flows http.Handler
}

// NewScheme returns the scheme the agent reads and writes with.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, coordinationv1.AddToScheme, egressv1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// NewManager returns a controller-runtime manager for the agent: no leader election, pods
// cached for this node only (field selector spec.nodeName) and the node by name, both trimmed
// to the fields the agent reads (trimPod, trimNode), managed fields stripped from everything
// else cached, the metrics and health endpoints.
func NewManager(cfg *rest.Config, opts ManagerOptions) (manager.Manager, error) {
	scheme, err := NewScheme()
	if err != nil {
		return nil, err
	}
	metrics := metricsserver.Options{BindAddress: opts.MetricsBindAddress}
	if opts.Flows != nil {
		metrics.ExtraHandlers = map[string]http.Handler{contract.FlowsPath: opts.Flows}
	}
	mgr, err := manager.New(cfg, manager.Options{
		Scheme: scheme,
		Cache: cache.Options{
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject: map[client.Object]cache.ByObject{
				&corev1.Pod{}:  {Field: fields.OneTermEqualSelector("spec.nodeName", opts.NodeName), Transform: cachetrim.Transform(trimPod)},
				&corev1.Node{}: {Field: fields.OneTermEqualSelector("metadata.name", opts.NodeName), Transform: cachetrim.Transform(trimNode)},
			},
		},
		Client: client.Options{Cache: &client.CacheOptions{
			// The agent may get and update its own Lease but not list Leases.
			DisableFor: []client.Object{&coordinationv1.Lease{}},
		}},
		Metrics:                metrics,
		HealthProbeBindAddress: opts.HealthProbeBindAddress,
	})
	if err != nil {
		return nil, fmt.Errorf("creating the agent manager: %w", err)
	}
	return mgr, nil
}

// trimPod keeps what the agent reads of a pod (ReadInputs, ComputeState, contract.Steerable):
// the labels, the namespace, the deletion timestamp, spec.nodeName, spec.hostNetwork, the
// phase and the pod IPs. Containers, their statuses, volumes and the rest stay out of the cache; a field read
// that is not kept here reads as its zero value (TestTrimKeepsWhatIsRead).
func trimPod(p *corev1.Pod) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   p.TypeMeta,
		ObjectMeta: cachetrim.Meta(&p.ObjectMeta),
		Spec:       corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status:     corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}
}

// trimNode keeps what the agent reads of its node (sync, ComputeState, contract.UnderlayIP): the
// labels (the zone), the deletion timestamp, spec.unschedulable and the addresses. The node's
// images, conditions and system info stay out of the cache.
func trimNode(n *corev1.Node) *corev1.Node {
	return &corev1.Node{
		TypeMeta:   n.TypeMeta,
		ObjectMeta: cachetrim.Meta(&n.ObjectMeta),
		Spec:       corev1.NodeSpec{Unschedulable: n.Spec.Unschedulable},
		Status:     corev1.NodeStatus{Addresses: n.Status.Addresses},
	}
}

// NewClusterCache returns the cache of every pod and node of the cluster, trimmed as in the
// manager's cache, that a gateway node's agent reads to admit tunnelled traffic. It is not
// started.
func NewClusterCache(mgr manager.Manager) (cache.Cache, error) {
	return cache.New(mgr.GetConfig(), cache.Options{
		Scheme:           mgr.GetScheme(),
		Mapper:           mgr.GetRESTMapper(),
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:  {Transform: cachetrim.Transform(trimPod)},
			&corev1.Node{}: {Transform: cachetrim.Transform(trimNode)},
		},
	})
}

// Setup builds the agent on mgr's cache and client (and, for its gateway role, the cluster view
// of NewClusterCache) and adds it, its readiness check ("the
// last Apply succeeded") and a liveness ping to mgr.
func Setup(mgr manager.Manager, cfg Config) (*Agent, error) {
	if cfg.ClusterCache == nil {
		cfg.ClusterCache = func() (cache.Cache, error) { return NewClusterCache(mgr) }
	}
	a, err := New(cfg, mgr.GetCache(), mgr.GetClient(), mgr.GetAPIReader())
	if err != nil {
		return nil, err
	}
	if err := mgr.Add(a); err != nil {
		return nil, err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("datapath", func(*http.Request) error { return a.Ready() }); err != nil {
		return nil, err
	}
	return a, nil
}
