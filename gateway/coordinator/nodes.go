package coordinator

import (
	"context"
	"net/netip"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/contract"
	"github.com/egressd/egressd/gateway/probe"
	"github.com/egressd/egressd/providers"
)

// ZoneLabel is the well-known label carrying a node's zone.
const ZoneLabel = corev1.LabelTopologyZone

// Health answers whether the coordinator's own probes reach a node's agent.
type Health interface {
	// Up reports the probe verdict for a node's underlay address. Addresses not probed yet are
	// up: a new gateway is not failed before its first probe (Node Ready and the agent Lease
	// still gate it).
	Up(addr netip.Addr) bool
	// SetTargets replaces the set of probed targets.
	SetTargets(targets []probe.Target)
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func leaseFresh(l *coordinationv1.Lease, now time.Time, timeout time.Duration) bool {
	if l == nil || l.Spec.RenewTime == nil {
		return false
	}
	return now.Sub(l.Spec.RenewTime.Time) <= timeout
}

// leaseDelivered reads the delivery proofs of an agent's Lease (contract.DeliveredAnnotation):
// nil when the agent does not prove delivery. An annotation that does not parse proves nothing
// (an empty set): the node stays Standby for its cloud addresses rather than taking new flows
// on a claim nobody can read.
func leaseDelivered(l *coordinationv1.Lease) contract.Delivered {
	if l == nil {
		return nil
	}
	v, ok := l.Annotations[contract.DeliveredAnnotation]
	if !ok {
		return nil
	}
	d, err := contract.ParseDelivered(v)
	if err != nil {
		return contract.Delivered{}
	}
	return d
}

func nodeRef(n *corev1.Node) providers.NodeRef {
	return providers.NodeRef{Name: n.Name, ProviderID: n.Spec.ProviderID, Zone: n.Labels[ZoneLabel]}
}

// nodeViews builds the planner's view of the nodes relevant to gw. capacity, when set, is
// asked once for the free IP slots of every selected, Ready node, so that it can describe them
// in one batch.
func (c *Coordinator) nodeViews(gw *egressv1.EgressGateway, nodes []corev1.Node, leases map[string]*coordinationv1.Lease, capacity func([]*corev1.Node) []int) ([]NodeView, error) {
	sel, err := c.gatewaySelector(gw)
	if err != nil {
		return nil, err
	}
	listed := map[string]bool{}
	for _, z := range gw.Status.Zones {
		for _, g := range z.Gateways {
			listed[g.Node] = true
		}
	}
	now := c.clock.Now()
	var views []NodeView
	var asked []*corev1.Node // selected and Ready: their capacity counts
	var askedViews []int     // their index in views
	for i := range nodes {
		n := &nodes[i]
		selected := sel.Matches(labels.Set(n.Labels))
		if !selected && !listed[n.Name] {
			continue
		}
		v := NodeView{
			Name:       n.Name,
			Zone:       n.Labels[ZoneLabel],
			UnderlayIP: contract.UnderlayIP(n),
			Selected:   selected && n.DeletionTimestamp == nil,
			Ready:      nodeReady(n),
			Cordoned:   n.Spec.Unschedulable,
			AgentAlive: leaseFresh(leases[n.Name], now, c.cfg.AgentLeaseTimeout.Duration),
			Free:       -1,
			Delivered:  leaseDelivered(leases[n.Name]),
		}
		v.ProbeUp = !v.UnderlayIP.IsValid() || c.health.Up(v.UnderlayIP)
		if v.Selected && v.Ready {
			asked, askedViews = append(asked, n), append(askedViews, len(views))
		}
		views = append(views, v)
	}
	if capacity != nil && len(asked) > 0 {
		for i, free := range capacity(asked) {
			views[askedViews[i]].Free = free
		}
	}
	return views, nil
}

// nodeCache remembers what providers said of nodes, for CapacityTTL.
type nodeCache struct {
	mu      sync.Mutex
	entries map[string]nodeCacheEntry
}

type nodeCacheEntry struct {
	info    *providers.NodeInfo
	fetched time.Time
}

func (nc *nodeCache) get(key string, now time.Time, ttl time.Duration) *providers.NodeInfo {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	e, ok := nc.entries[key]
	if !ok || now.Sub(e.fetched) > ttl {
		return nil
	}
	return e.info
}

func (nc *nodeCache) put(key string, info *providers.NodeInfo, now time.Time) {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	if nc.entries == nil {
		nc.entries = map[string]nodeCacheEntry{}
	}
	nc.entries[key] = nodeCacheEntry{info: info, fetched: now}
}

func (nc *nodeCache) forget(key string) {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	delete(nc.entries, key)
}

// prefetch puts the provider's view of those of nodes it has no fresh view of into the cache,
// with the provider's batched discovery when it has one: at 100 gateway nodes EC2 takes a
// handful of calls instead of two per node. Errors are left to discover, which retries the node
// alone and reports it.
func (c *Coordinator) prefetch(ctx context.Context, p providers.Provider, nodes []*corev1.Node) {
	now := c.clock.Now()
	var refs []providers.NodeRef
	for _, n := range nodes {
		if c.nodes.get(p.Name()+"/"+n.Name, now, c.cfg.CapacityTTL.Duration) == nil {
			refs = append(refs, nodeRef(n))
		}
	}
	if len(refs) < 2 {
		return // discover asks for a single node itself
	}
	infos, errs := providers.DiscoverNodes(ctx, p, refs)
	for i, ref := range refs {
		if errs[i] == nil && infos[i] != nil {
			c.nodes.put(p.Name()+"/"+ref.Name, infos[i], c.clock.Now())
		}
	}
}

// discover returns the provider's view of a node, from the cache when fresh.
func (c *Coordinator) discover(ctx context.Context, p providers.Provider, n *corev1.Node) (*providers.NodeInfo, error) {
	key := p.Name() + "/" + n.Name
	if info := c.nodes.get(key, c.clock.Now(), c.cfg.CapacityTTL.Duration); info != nil {
		return info, nil
	}
	info, err := p.DiscoverNode(ctx, nodeRef(n))
	if err != nil {
		return nil, err
	}
	c.nodes.put(key, info, c.clock.Now())
	return info, nil
}
