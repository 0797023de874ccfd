package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/static"
)

// RunOptions configure the controller binary.
type RunOptions struct {
	Config                 Config
	RestConfig             *rest.Config
	Registry               providers.Registry
	LeaderElect            bool
	MetricsBindAddress     string
	HealthProbeBindAddress string
	// ListenPacket opens the probe socket; nil means net.ListenPacket. Tests open it in the
	// network namespace the gateways' underlay addresses are reachable from.
	ListenPacket func(network, address string) (net.PacketConn, error)
	// Registerer takes the coordinator's and the providers' metrics; nil means
	// controller-runtime's registry, which the metrics endpoint serves. A collector registers
	// once per registry, so tests running several coordinators in one process give each its own.
	Registerer prometheus.Registerer
	// SkipControllerNameValidation turns off controller-runtime's check that controller names
	// are unique in the process (they name its global controller metrics): for tests that run
	// several coordinators in one process.
	SkipControllerNameValidation bool
}

// Run builds the manager, the providers and the controllers, and runs until ctx ends.
func Run(ctx context.Context, o RunOptions) error {
	scheme, err := newScheme()
	if err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(o.RestConfig, manager.Options{
		Scheme:                  scheme,
		LeaderElection:          o.LeaderElect,
		LeaderElectionID:        "egressd-controller",
		LeaderElectionNamespace: o.Config.Namespace,
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsBindAddress},
		HealthProbeBindAddress:  o.HealthProbeBindAddress,
		Cache:                   cacheOptions(o.Config.Namespace),
		Controller:              ctrlconfig.Controller{SkipNameValidation: &o.SkipControllerNameValidation},
	})
	if err != nil {
		return fmt.Errorf("building the manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	var reg prometheus.Registerer = ctrlmetrics.Registry
	if o.Registerer != nil {
		reg = o.Registerer
	}
	provs, err := BuildProviders(ctx, o.Config, o.Registry, reg)
	if err != nil {
		return err
	}
	metrics, err := NewMetrics(reg)
	if err != nil {
		return err
	}
	listen := o.ListenPacket
	if listen == nil {
		listen = net.ListenPacket
	}
	conn, err := listen("udp4", ":0")
	if err != nil {
		return fmt.Errorf("opening the probe socket: %w", err)
	}
	health := NewProbeHealth(conn, o.Config.ProbePort)
	c := New(Options{
		Config: o.Config, Client: mgr.GetClient(), Reader: mgr.GetAPIReader(),
		Recorder: mgr.GetEventRecorder("egressd-coordinator"), Providers: provs, Health: health, Metrics: metrics,
	})
	if err := mgr.Add(manager.RunnableFunc(health.Run)); err != nil {
		return err
	}
	if err := Setup(mgr, c, health.Changes); err != nil {
		return err
	}
	if err := mgr.Add(NewGC(c)); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, coordinationv1.AddToScheme, egressv1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// BuildProviders constructs every configured provider from the registry, wrapped with metrics
// and client-side rate limiting. A provider whose implementation is not in the registry is an
// error naming it and what exists.
func BuildProviders(ctx context.Context, cfg Config, reg providers.Registry, registerer prometheus.Registerer) (map[string]providers.Provider, error) {
	m, err := providers.NewMetrics(registerer)
	if err != nil {
		return nil, err
	}
	limits := providers.DefaultRateLimits
	if cfg.RateLimits != nil {
		limits = *cfg.RateLimits
	}
	out := map[string]providers.Provider{}
	for name, raw := range cfg.Providers {
		typ, err := ProviderType(name, raw)
		if err != nil {
			return nil, err
		}
		if name == egressv1.ProviderStatic || typ == static.Name {
			// The static source is configured per group and its EgressIPs are named by it.
			return nil, fmt.Errorf("config: provider %q: static pools are not configured here but in each EgressGateway's spec.addresses.static, and %q is no provider name", name, egressv1.ProviderStatic)
		}
		construct, ok := reg[typ]
		if !ok {
			known := make([]string, 0, len(reg))
			for k := range reg {
				known = append(known, k)
			}
			slices.Sort(known)
			return nil, fmt.Errorf("config: provider %q has type %q, which is not one of %v", name, typ, known)
		}
		p, err := construct(ctx, name, withClusterName(raw, cfg.ClusterName))
		if err != nil {
			return nil, fmt.Errorf("config: provider %q: %w", name, err)
		}
		out[name] = providers.WithRateLimit(m.Wrap(p), limits)
	}
	return out, nil
}

// withClusterName adds clusterName to a provider's config unless it sets its own.
func withClusterName(raw json.RawMessage, cluster string) json.RawMessage {
	obj := map[string]any{}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &obj); err != nil {
			return raw
		}
	}
	if _, ok := obj["clusterName"]; !ok {
		obj["clusterName"] = cluster
	}
	delete(obj, "type")
	out, err := json.Marshal(obj)
	if err != nil {
		return raw
	}
	return out
}

// Setup registers the coordinator's controllers with mgr. healthChanges (may be nil) triggers
// a reconcile of every group when a probe verdict changes.
func Setup(mgr manager.Manager, c *Coordinator, healthChanges <-chan event.GenericEvent) error {
	allGateways := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		var list egressv1.EgressGatewayList
		if err := c.client.List(ctx, &list); err != nil {
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(list.Items))
		for _, g := range list.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: g.Name}})
		}
		return reqs
	})
	// A node's and its agent Lease's events go to the gateways that select or list the node
	// (gatewaysOfNode), not to every gateway. The list is read-only: no deep copies.
	gatewaysOf := func(ctx context.Context, n *corev1.Node) []reconcile.Request {
		var list egressv1.EgressGatewayList
		if err := c.client.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
			return nil
		}
		return gatewaysOfNode(list.Items, n, c.gatewaySelector)
	}
	nodeGateways := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		n, ok := o.(*corev1.Node)
		if !ok {
			return nil
		}
		return gatewaysOf(ctx, n)
	})
	leaseGateways := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		l, ok := o.(*coordinationv1.Lease)
		if !ok || l.Spec.HolderIdentity == nil || contract.AgentLeaseName(*l.Spec.HolderIdentity) != l.Name {
			return nil // not an agent's: listInputs ignores it too
		}
		n := &corev1.Node{}
		if err := c.client.Get(ctx, client.ObjectKey{Name: *l.Spec.HolderIdentity}, n); err != nil {
			// No such node (yet): only a gateway listing it can care.
			n = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: *l.Spec.HolderIdentity}}
		}
		return gatewaysOf(ctx, n)
	})
	b := ctrl.NewControllerManagedBy(mgr).Named("egressgateway").
		For(&egressv1.EgressGateway{}).
		Watches(&corev1.Node{}, nodeGateways, builder.WithPredicates(nodeChanged())).
		Watches(&coordinationv1.Lease{}, leaseGateways, builder.WithPredicates(leaseChanged(c))).
		Watches(&egressv1.EgressIP{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if g := o.GetLabels()[egressv1.LabelGateway]; g != "" {
				return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: g}}}
			}
			return nil
		})).
		// One reconcile at a time: allocation and placement stay deterministic, and a group's
		// plan never races another's for the same node's capacity.
		WithOptions(controller.Options{MaxConcurrentReconciles: 1})
	if healthChanges != nil {
		b = b.WatchesRawSource(source.Channel(healthChanges, allGateways))
	}
	if err := b.Complete(NewGatewayReconciler(c)); err != nil {
		return err
	}
	// The EgressIP controller acts on the cloud, one address per reconcile; the work queue
	// never hands it one EgressIP twice at once, and its in-flight set guards the rest.
	if err := ctrl.NewControllerManagedBy(mgr).Named("egressip").For(&egressv1.EgressIP{}).
		Complete(NewEgressIPReconciler(c)); err != nil {
		return err
	}
	// policiesOf maps an event to the policies it can change: a gateway to the policies naming
	// it, a pod to the policies whose selectors match it (old and new labels: the handler maps
	// both objects of an update), a namespace to the policies of or selecting it. Enqueueing
	// every policy of the namespace and every cluster policy for each pod event (and every
	// policy for each gateway status write) cost 10k pods × 59 reconciles at start-up in
	// BenchmarkScale. The lists are read-only and skip the cache's deep copies.
	policiesOf := func(cluster bool) handler.EventHandler {
		return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			_, isGateway := o.(*egressv1.EgressGateway)
			pod, _ := o.(*corev1.Pod)
			var nsLabels map[string]string
			if pod != nil {
				ns := &corev1.Namespace{}
				if err := c.client.Get(ctx, client.ObjectKey{Name: pod.Namespace}, ns); err == nil {
					nsLabels = ns.Labels
				}
			}
			// relevant reports whether the policy's rule (and namespace selector, of a
			// ClusterEgressPolicy) can count the event's object; the selectors come parsed
			// from c.selectors.
			relevant := func(kind string, name types.NamespacedName, rule *egressv1.EgressPolicyRule, nsSel *metav1.LabelSelector) bool {
				switch {
				case isGateway:
					return rule.Gateway == o.GetName()
				case pod != nil:
					sel, err := c.selectors.get(selectorKey{kind: kind, name: name, field: fieldPodSelector}, &rule.PodSelector)
					if !matches(sel, err, pod.Labels) {
						return false
					}
					if nsSel == nil || nsLabels == nil {
						return true
					}
					sel, err = c.selectors.get(selectorKey{kind: kind, name: name, field: fieldNamespaceSelector}, nsSel)
					return matches(sel, err, nsLabels)
				}
				return true
			}
			var reqs []reconcile.Request
			if cluster {
				var list egressv1.ClusterEgressPolicyList
				if err := c.client.List(ctx, &list, client.UnsafeDisableDeepCopy); err == nil {
					for i := range list.Items {
						p := &list.Items[i]
						if key := (types.NamespacedName{Name: p.Name}); relevant(kindClusterEgressPolicy, key, &p.Spec.EgressPolicyRule, &p.Spec.NamespaceSelector) {
							reqs = append(reqs, reconcile.Request{NamespacedName: key})
						}
					}
				}
				return reqs
			}
			var list egressv1.EgressPolicyList
			opts := []client.ListOption{client.UnsafeDisableDeepCopy}
			if ns := o.GetNamespace(); ns != "" {
				opts = append(opts, client.InNamespace(ns))
			} else if _, isNS := o.(*corev1.Namespace); isNS {
				opts = append(opts, client.InNamespace(o.GetName()))
			}
			if err := c.client.List(ctx, &list, opts...); err == nil {
				for i := range list.Items {
					p := &list.Items[i]
					if key := (types.NamespacedName{Namespace: p.Namespace, Name: p.Name}); relevant(kindEgressPolicy, key, &p.Spec, nil) {
						reqs = append(reqs, reconcile.Request{NamespacedName: key})
					}
				}
			}
			return reqs
		})
	}
	for _, cluster := range []bool{false, true} {
		var obj client.Object = &egressv1.EgressPolicy{}
		name := "egresspolicy"
		if cluster {
			obj, name = &egressv1.ClusterEgressPolicy{}, "clusteregresspolicy"
		}
		if err := ctrl.NewControllerManagedBy(mgr).Named(name).For(obj).
			Watches(&egressv1.EgressGateway{}, policiesOf(cluster)).
			Watches(&corev1.Pod{}, policiesOf(cluster), builder.WithPredicates(podIPChanged())).
			Watches(&corev1.Namespace{}, policiesOf(cluster)).
			// A policy created, deleted or resized changes which of its namespace's (for a
			// ClusterEgressPolicy, the cluster's) fit their prefix budget.
			Watches(obj, policiesOf(cluster), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
			WithOptions(controller.Options{MaxConcurrentReconciles: policyWorkers}).
			Complete(PolicyReconciler{Coordinator: c, Cluster: cluster}); err != nil {
			return err
		}
	}
	return nil
}

// policyWorkers is how many policies of a kind reconcile at once. A policy reconcile writes
// only its own status from what the cache holds, so they are independent; most of one is the
// status write's round trip to the API server, and one at a time took BenchmarkScale's 5,050
// policy statuses at 5,000 nodes 39 s to write (10,000 reconciles, 28 s of them in Reconcile).
const policyWorkers = 4

// nodeChanged passes node events that can change a gateway group: labels, cordon, readiness,
// addresses. Kubelet heartbeats do not.
func nodeChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		a, okA := e.ObjectOld.(*corev1.Node)
		b, okB := e.ObjectNew.(*corev1.Node)
		if !okA || !okB {
			return true
		}
		return !mapsEqual(a.Labels, b.Labels) || a.Spec.Unschedulable != b.Spec.Unschedulable ||
			nodeReady(a) != nodeReady(b) || contract.UnderlayIP(a) != contract.UnderlayIP(b) || a.Spec.ProviderID != b.Spec.ProviderID
	}}
}

// leaseChanged passes Lease updates that bring a stale agent back (a renewal after a gap) or
// change its delivery proofs (contract.DeliveredAnnotation: a node may now turn Active);
// routine renewals are dropped. Expiry has no event: the gateway reconcile requeues within
// AgentLeaseTimeout to notice it.
func leaseChanged(c *Coordinator) predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		old, ok := e.ObjectOld.(*coordinationv1.Lease)
		cur, ok2 := e.ObjectNew.(*coordinationv1.Lease)
		if !ok || !ok2 {
			return true
		}
		ov, oset := old.Annotations[contract.DeliveredAnnotation]
		nv, nset := cur.Annotations[contract.DeliveredAnnotation]
		return ov != nv || oset != nset || !leaseFresh(old, c.clock.Now(), c.cfg.AgentLeaseTimeout.Duration/2)
	}}
}

// podIPChanged passes pod events that change a policy's matched-pod count.
func podIPChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		a, okA := e.ObjectOld.(*corev1.Pod)
		b, okB := e.ObjectNew.(*corev1.Pod)
		if !okA || !okB {
			return true
		}
		return a.Status.PodIP != b.Status.PodIP || a.Status.Phase != b.Status.Phase || !mapsEqual(a.Labels, b.Labels) ||
			(a.DeletionTimestamp == nil) != (b.DeletionTimestamp == nil)
	}}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
