package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/gateway/probe"
	"github.com/egressd/egressd/ipalloc"
	"github.com/egressd/egressd/providers"
)

// Coordinator holds what the reconcilers share: clients, providers, the allocator rebuilt from
// the EgressIP ledger, probe health, and the operations in flight.
type Coordinator struct {
	cfg Config
	// client reads from the informer cache; reader goes to the API server, for the ledger,
	// where a stale cache could hand out an address twice.
	client    client.Client
	reader    client.Reader
	recorder  events.EventRecorder
	providers map[string]providers.Provider
	health    Health
	metrics   *Metrics
	clock     clock.PassiveClock

	alloc *ipalloc.Allocator
	nodes nodeCache

	mu sync.Mutex
	// ledgerLoaded: alloc was rebuilt from every EgressIP.
	ledgerLoaded bool
	// subnets registered with alloc, by zone/subnet.
	subnets map[string]bool
	// inflight cloud operations by EgressIP name, so that two reconcilers (or a stale cache)
	// never act twice on one address.
	inflight map[string]string
	// targets probed, by gateway group.
	targets map[string][]probe.Target
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
	return &Coordinator{
		cfg: o.Config, client: o.Client, reader: o.Reader, recorder: o.Recorder,
		providers: o.Providers, health: o.Health, metrics: o.Metrics, clock: o.Clock,
		alloc: ipalloc.New(), subnets: map[string]bool{}, inflight: map[string]string{}, targets: map[string][]probe.Target{},
	}
}

// loadLedger rebuilds the allocator from every EgressIP, once, before anything is allocated.
// Records claiming one address twice are reported and left to the operator: nothing is
// resolved silently.
func (c *Coordinator) loadLedger(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ledgerLoaded {
		return nil
	}
	var list egressv1.EgressIPList
	if err := c.reader.List(ctx, &list); err != nil {
		return fmt.Errorf("listing the EgressIP ledger: %w", err)
	}
	records := make([]ipalloc.Record, 0, len(list.Items))
	for _, e := range list.Items {
		ip, err := netip.ParseAddr(e.Spec.IP)
		if err != nil {
			continue // the schema makes this impossible; nothing to reclaim
		}
		records = append(records, ipalloc.Record{IP: ip, Zone: e.Spec.Zone, Subnet: e.Spec.Subnet, Owner: e.Spec.Gateway, Node: e.Spec.Node})
	}
	if err := c.alloc.Rebuild(records); err != nil {
		var conflict *ipalloc.ConflictError
		if !errors.As(err, &conflict) {
			return fmt.Errorf("rebuilding the allocator from %d EgressIPs: %w", len(records), err)
		}
		// Conflicts are reported on the objects' gateways by the reconcile that meets them;
		// the allocator keeps the first claimant.
	}
	c.ledgerLoaded = true
	return nil
}

// registerSubnets tells the allocator about a node's subnets and the addresses its interfaces
// already hold.
func (c *Coordinator) registerSubnets(providerType string, info *providers.NodeInfo) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	res, err := ipalloc.ReservationByName(providerType)
	if err != nil {
		res = ipalloc.ReserveNone
	}
	var errs []error
	for _, s := range info.Subnets {
		zone := s.Zone
		if zone == "" {
			zone = info.Zone
		}
		key := zone + "/" + s.ID
		if !c.subnets[key] {
			if err := c.alloc.AddSubnet(zone, s.ID, s.CIDR, res); err != nil {
				errs = append(errs, err)
				continue
			}
			c.subnets[key] = true
		}
		if len(s.Reserved) > 0 {
			errs = append(errs, c.alloc.MarkInUse(zone, s.ID, s.Reserved...))
		}
	}
	for _, itf := range info.Interfaces {
		for _, ip := range append([]netip.Addr{itf.PrimaryIP}, itf.SecondaryIPs...) {
			if !ip.IsValid() {
				continue
			}
			if _, leased := c.alloc.Lookup(ip); leased {
				continue
			}
			if c.subnets[info.Zone+"/"+itf.SubnetID] {
				errs = append(errs, c.alloc.MarkInUse(info.Zone, itf.SubnetID, ip))
			}
		}
	}
	return errors.Join(errs...)
}

// begin marks an operation on an EgressIP in flight; false when one already is.
func (c *Coordinator) begin(name, op string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, busy := c.inflight[name]; busy {
		return false
	}
	c.inflight[name] = op
	return true
}

func (c *Coordinator) end(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.inflight, name)
}

// listInputs reads nodes and agent leases from the cache.
func (c *Coordinator) listInputs(ctx context.Context) ([]corev1.Node, map[string]*coordinationv1.Lease, error) {
	var nodes corev1.NodeList
	// Read-only views of the cache: copying every Node per reconcile dominated its CPU at 1k nodes.
	if err := c.client.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		return nil, nil, fmt.Errorf("listing nodes: %w", err)
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

// setProbeTargets records a group's probe targets and hands the union over every group to the
// prober; a node in several groups is probed with the most demanding settings.
func (c *Coordinator) setProbeTargets(gateway string, targets []probe.Target) {
	if c.health == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(targets) == 0 {
		delete(c.targets, gateway)
	} else {
		c.targets[gateway] = targets
	}
	union := map[netip.AddrPort]probe.Target{}
	for _, ts := range c.targets {
		for _, t := range ts {
			u, ok := union[t.Addr]
			if !ok || t.Interval < u.Interval || (t.Interval == u.Interval && t.FailureThreshold < u.FailureThreshold) {
				union[t.Addr] = t
			}
		}
	}
	all := make([]probe.Target, 0, len(union))
	for _, t := range union {
		all = append(all, t)
	}
	slices.SortFunc(all, func(a, b probe.Target) int { return a.Addr.Compare(b.Addr) })
	c.health.SetTargets(all)
}
