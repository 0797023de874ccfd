package coordinator

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/static"
)

// Coordinator holds what the reconcilers share: clients, providers, the allocator rebuilt from
// the EgressIP ledger, probe health and the providers' view of nodes. What only one reconciler
// uses lives in that reconciler: the operations in flight in EgressIPReconciler, the probe
// targets in GatewayReconciler.
type Coordinator struct {
	cfg Config
	// client reads from the informer cache; reader goes to the API server, for the ledger,
	// where a stale cache could hand out an address twice or move it twice.
	client   client.Client
	reader   client.Reader
	recorder events.EventRecorder
	// providers by configured name, each wrapped to log its mutations (logged).
	providers map[string]providers.Provider
	// static is the provider of the static pools, fed by the gateway controller (SetPools).
	static  *static.Provider
	health  Health
	metrics *Metrics
	clock   clock.PassiveClock

	alloc *ledgerAlloc
	nodes nodeCache
	// selectors are the parsed label selectors of policies and gateways (selectorCache).
	selectors selectorCache
}

// Options wires a Coordinator.
type Options struct {
	Config    Config
	Client    client.Client
	Reader    client.Reader
	Recorder  events.EventRecorder
	Providers map[string]providers.Provider
	Health    Health
	Metrics   *Metrics
	Clock     clock.PassiveClock
}

// New builds a Coordinator. It starts nothing.
func New(o Options) *Coordinator {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	sp, _ := static.New(static.Config{}) // no pools: nothing to reject
	provs := make(map[string]providers.Provider, len(o.Providers)+1)
	for name, p := range o.Providers {
		provs[name] = logged{Provider: p, name: name}
	}
	return &Coordinator{
		cfg: o.Config, client: o.Client, reader: o.Reader, recorder: o.Recorder,
		providers: provs, static: sp, health: o.Health, metrics: o.Metrics, clock: o.Clock,
		alloc: newLedgerAlloc(),
	}
}

// providerOf is the provider an EgressIP's spec.provider names: the static pools' own, or a
// configured one.
func (c *Coordinator) providerOf(name string) (providers.Provider, bool) {
	if name == egressv1.ProviderStatic {
		return logged{Provider: c.static, name: name}, true
	}
	p, ok := c.providers[name]
	return p, ok
}

// listInputs reads from the cache the nodes gw can involve, those its node selector matches
// and those its status lists (the ones leaving the group), and the agent leases. Reading only
// these keeps a gateway reconcile proportional to the group, not to the cluster: listing every
// Node took 6 MB and most of a 32 ms reconcile at 5,000 nodes (BenchmarkScale), and every
// gateway is reconciled on each node event.
func (c *Coordinator) listInputs(ctx context.Context, gw *egressv1.EgressGateway) ([]corev1.Node, map[string]*coordinationv1.Lease, error) {
	sel, err := c.gatewaySelector(gw)
	if err != nil {
		return nil, nil, fmt.Errorf("spec.nodeSelector: %w", err)
	}
	var nodes corev1.NodeList
	// Read-only views of the cache: copying every Node per reconcile dominated its CPU at 1k nodes.
	if err := c.client.List(ctx, &nodes, client.MatchingLabelsSelector{Selector: sel}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, nil, fmt.Errorf("listing nodes: %w", err)
	}
	have := make(map[string]bool, len(nodes.Items))
	for i := range nodes.Items {
		have[nodes.Items[i].Name] = true
	}
	for _, z := range gw.Status.Zones {
		for _, g := range z.Gateways {
			if have[g.Node] {
				continue
			}
			have[g.Node] = true
			n := corev1.Node{}
			if err := c.client.Get(ctx, client.ObjectKey{Name: g.Node}, &n); err != nil {
				if apierrors.IsNotFound(err) {
					continue // deleted: the plan drops it
				}
				return nil, nil, fmt.Errorf("reading node %s: %w", g.Node, err)
			}
			nodes.Items = append(nodes.Items, n)
		}
	}
	var leaseList coordinationv1.LeaseList
	if err := c.client.List(ctx, &leaseList, client.InNamespace(c.cfg.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, nil, fmt.Errorf("listing agent leases: %w", err)
	}
	leases := map[string]*coordinationv1.Lease{}
	for i := range leaseList.Items {
		l := &leaseList.Items[i]
		if l.Spec.HolderIdentity != nil && contract.AgentLeaseName(*l.Spec.HolderIdentity) == l.Name {
			leases[*l.Spec.HolderIdentity] = l
		}
	}
	return nodes.Items, leases, nil
}

// ledger lists a group's EgressIPs from the API server, sorted by address.
func (c *Coordinator) ledger(ctx context.Context, gateway string) ([]egressv1.EgressIP, error) {
	var list egressv1.EgressIPList
	if err := c.reader.List(ctx, &list, client.MatchingLabels{egressv1.LabelGateway: gateway}); err != nil {
		return nil, fmt.Errorf("listing EgressIPs of %s: %w", gateway, err)
	}
	items := list.Items
	slices.SortFunc(items, func(a, b egressv1.EgressIP) int {
		x, _ := netip.ParseAddr(a.Spec.IP)
		y, _ := netip.ParseAddr(b.Spec.IP)
		return x.Compare(y)
	})
	return items, nil
}
