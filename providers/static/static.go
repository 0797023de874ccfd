// Package static is the provider behind the static address source (EgressGateway
// spec.addresses.static): pools of addresses per zone that the operator owns, announced by the
// agent with gratuitous ARP / unsolicited NA on the node that holds them. The coordinator builds
// one Provider and gives it each static group's pools (SetPools); it is not configured in the
// controller's providers map. It makes no cloud call; which node holds which address lives in
// memory (the coordinator's EgressIP ledger rebuilds it after a restart: MoveIP assigns an
// address no node holds). Nothing outside the pools is ever touched or listed.
package static

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/egressd/egressd/providers"
)

// Name is the provider's name, and the spec.provider of every EgressIP it places
// (egressv1.ProviderStatic).
const Name = "static"

// Config is the provider's configuration: pools that belong to no group (tests and
// the conformance suite; the coordinator starts empty and calls SetPools).
type Config struct {
	Pools []Pool `json:"pools"`
	// MaxIPsPerNode bounds the addresses one node holds (0: unbounded).
	MaxIPsPerNode int `json:"maxIPsPerNode,omitempty"`
}

// Pool is a zone's pre-provisioned addresses.
type Pool struct {
	Zone string `json:"zone"`
	// Addresses are single addresses ("192.0.2.10") or prefixes ("192.0.2.16/28"), every
	// address of which is usable: the operator lists what is free on the segment.
	Addresses []string `json:"addresses"`
	// Interface the agent mounts and announces the addresses on ("eth0").
	Interface string `json:"interface,omitempty"`
	// Subnet is the segment's prefix, for the agent's routes; informational here.
	Subnet string `json:"subnet,omitempty"`
}

type pool struct {
	Pool
	// owner is the group the pool belongs to ("" for Config's pools).
	owner    string
	prefixes []netip.Prefix
}

type holding struct {
	node  string
	owner providers.Owner
}

// Provider implements providers.Provider on static pools.
type Provider struct {
	max int

	mu    sync.Mutex
	pools []pool
	holds map[netip.Addr]holding
}

var _ providers.Provider = (*Provider)(nil)

// New validates cfg and builds the provider.
func New(cfg Config) (*Provider, error) {
	p := &Provider{max: cfg.MaxIPsPerNode, holds: map[netip.Addr]holding{}}
	if err := p.SetPools("", cfg.Pools); err != nil {
		return nil, err
	}
	return p, nil
}

// SetPools replaces the pools of one owner (a static group). Its pools may overlap neither
// each other nor another owner's: an address belongs to one group. On error nothing changes.
// Addresses held from a pool that goes away stay held until released.
func (p *Provider) SetPools(owner string, pools []Pool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	others := slices.DeleteFunc(slices.Clone(p.pools), func(pl pool) bool { return pl.owner == owner })
	mine := make([]pool, 0, len(pools))
	for _, pl := range pools {
		if pl.Zone == "" {
			return fmt.Errorf("static pool without a zone")
		}
		c := pool{Pool: pl, owner: owner}
		for _, a := range pl.Addresses {
			pr, err := netip.ParsePrefix(a)
			if err != nil {
				ad, err2 := netip.ParseAddr(a)
				if err2 != nil {
					return fmt.Errorf("static pool %s: %q is neither an address nor a prefix", pl.Zone, a)
				}
				pr = netip.PrefixFrom(ad, ad.BitLen())
			}
			for _, o := range append(others, mine...) {
				for _, op := range o.prefixes {
					if op.Overlaps(pr) {
						return fmt.Errorf("static pools %s and %s overlap at %s%s", o.label(), c.label(), pr, ownedBy(o.owner))
					}
				}
			}
			c.prefixes = append(c.prefixes, pr.Masked())
		}
		mine = append(mine, c)
	}
	p.pools = append(others, mine...)
	return nil
}

func (pl pool) label() string {
	if pl.Subnet != "" {
		return pl.Zone + "/" + pl.Subnet
	}
	return pl.Zone
}

func ownedBy(owner string) string {
	if owner == "" {
		return ""
	}
	return " (the first is " + owner + "'s)"
}

// Name implements providers.Provider.
func (p *Provider) Name() string { return Name }

// poolOf is the pool of a; p.mu must be held.
func (p *Provider) poolOf(a netip.Addr) *pool {
	for i := range p.pools {
		for _, pr := range p.pools[i].prefixes {
			if pr.Contains(a) {
				return &p.pools[i]
			}
		}
	}
	return nil
}

func (p *Provider) zoneHasPool(zone string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.ContainsFunc(p.pools, func(pl pool) bool { return pl.Zone == zone })
}

func (p *Provider) countLocked(node string) int {
	n := 0
	for _, h := range p.holds {
		if h.node == node {
			n++
		}
	}
	return n
}

// DiscoverNode implements providers.Provider. A node is known when its zone has a pool.
func (p *Provider) DiscoverNode(_ context.Context, node providers.NodeRef) (*providers.NodeInfo, error) {
	if !p.zoneHasPool(node.Zone) {
		return nil, &providers.Error{Kind: providers.KindNotFound, Op: "discovering node " + node.Name,
			Err: fmt.Errorf("no static pool for zone %q", node.Zone)}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	info := &providers.NodeInfo{Ref: node, InstanceID: node.Name, Zone: node.Zone}
	free := 0
	for _, pl := range p.pools {
		if pl.Zone != node.Zone {
			continue
		}
		ifc := providers.Interface{ID: pl.Interface, SubnetID: pl.Subnet}
		for a, h := range p.holds {
			if h.node == node.Name && p.poolOf(a) != nil && p.poolOf(a).Zone == pl.Zone {
				ifc.SecondaryIPs = append(ifc.SecondaryIPs, a)
			}
		}
		slices.SortFunc(ifc.SecondaryIPs, netip.Addr.Compare)
		if !slices.ContainsFunc(info.Interfaces, func(i providers.Interface) bool { return i.ID == ifc.ID }) {
			info.Interfaces = append(info.Interfaces, ifc)
		}
		for _, pr := range pl.prefixes {
			size := 1 << min(pr.Addr().BitLen()-pr.Bits(), 20)
			sub := providers.Subnet{ID: pl.Subnet, Zone: pl.Zone, CIDR: pr, Free: size}
			for a := range p.holds {
				if pr.Contains(a) {
					sub.Free--
				}
			}
			free += sub.Free
			info.Subnets = append(info.Subnets, sub)
		}
	}
	info.Capacity.FreeIPSlots = free
	if p.max > 0 {
		info.Capacity.MaxIPsPerInterface = p.max
		info.Capacity.FreeIPSlots = min(free, p.max-p.countLocked(node.Name))
	}
	info.Capacity.MaxInterfaces = len(info.Interfaces)
	return info, nil
}

func (p *Provider) assignment(a netip.Addr, node string, pl *pool) *providers.Assignment {
	return &providers.Assignment{IP: a, Node: node, InstanceID: node, InterfaceID: pl.Interface, Subnet: pl.Subnet, Attachment: Name}
}

// EnsureIP implements providers.Provider: the address must be in the pool of the node's zone.
func (p *Provider) EnsureIP(_ context.Context, req providers.EnsureRequest) (*providers.Assignment, error) {
	op := fmt.Sprintf("ensuring %s on %s", req.IP, req.Node.Name)
	p.mu.Lock()
	defer p.mu.Unlock()
	pl := p.poolOf(req.IP)
	if pl == nil {
		return nil, &providers.Error{Kind: providers.KindPermission, Op: op, Err: fmt.Errorf("%s is in no static pool", req.IP)}
	}
	if pl.Zone != req.Node.Zone {
		return nil, &providers.Error{Kind: providers.KindConflict, Op: op, Err: fmt.Errorf("%s belongs to zone %s, node is in %q", req.IP, pl.Zone, req.Node.Zone)}
	}
	if req.Public {
		return nil, &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Err: fmt.Errorf("static pools have no public IPs")}
	}
	if h, ok := p.holds[req.IP]; ok {
		if h.node == req.Node.Name && h.owner.Cluster == req.Owner.Cluster {
			return p.assignment(req.IP, h.node, pl), nil
		}
		return nil, &providers.Error{Kind: providers.KindConflict, Op: op, Err: fmt.Errorf("%s is held by %s", req.IP, h.node)}
	}
	if p.max > 0 && p.countLocked(req.Node.Name) >= p.max {
		return nil, &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Err: fmt.Errorf("%s holds %d addresses, the maximum", req.Node.Name, p.max)}
	}
	p.holds[req.IP] = holding{node: req.Node.Name, owner: req.Owner}
	return p.assignment(req.IP, req.Node.Name, pl), nil
}

// MoveIP implements providers.Provider; the agents announce the move (GARP/NA).
func (p *Provider) MoveIP(_ context.Context, req providers.MoveRequest) (*providers.Assignment, error) {
	a := req.Current.IP
	op := fmt.Sprintf("moving %s to %s", a, req.To.Name)
	p.mu.Lock()
	defer p.mu.Unlock()
	pl := p.poolOf(a)
	if pl == nil {
		return nil, &providers.Error{Kind: providers.KindNotFound, Op: op, Err: fmt.Errorf("%s is in no static pool", a)}
	}
	if pl.Zone != req.To.Zone {
		return nil, &providers.Error{Kind: providers.KindConflict, Op: op, Err: fmt.Errorf("%s belongs to zone %s, node is in %q", a, pl.Zone, req.To.Zone)}
	}
	h, held := p.holds[a]
	if held && h.owner.Cluster != req.Owner.Cluster {
		return nil, &providers.Error{Kind: providers.KindNotFound, Op: op, Err: fmt.Errorf("%s is not cluster %s's", a, req.Owner.Cluster)}
	}
	if held && h.node == req.To.Name {
		return p.assignment(a, h.node, pl), nil
	}
	if p.max > 0 && p.countLocked(req.To.Name) >= p.max {
		return nil, &providers.Error{Kind: providers.KindCapacityExhausted, Op: op, Err: fmt.Errorf("%s holds %d addresses, the maximum", req.To.Name, p.max)}
	}
	p.holds[a] = holding{node: req.To.Name, owner: req.Owner}
	return p.assignment(a, req.To.Name, pl), nil
}

// ReleaseIP implements providers.Provider.
func (p *Provider) ReleaseIP(_ context.Context, req providers.ReleaseRequest) error {
	a := req.Current.IP
	p.mu.Lock()
	defer p.mu.Unlock()
	h, ok := p.holds[a]
	if !ok {
		return nil
	}
	if h.owner.Cluster != req.Owner.Cluster {
		return &providers.Error{Kind: providers.KindPermission, Op: "releasing " + a.String(), Err: fmt.Errorf("held for cluster %s", h.owner.Cluster)}
	}
	delete(p.holds, a)
	return nil
}

// ListOwned implements providers.Provider: the pool addresses held for cluster.
func (p *Provider) ListOwned(_ context.Context, cluster string) ([]providers.OwnedResource, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []providers.OwnedResource
	for a, h := range p.holds {
		if h.owner.Cluster == cluster && p.poolOf(a) != nil {
			out = append(out, providers.OwnedResource{Kind: providers.ResourcePrivateIP, ID: a.String(), IP: a, Owner: h.owner, Node: h.node})
		}
	}
	slices.SortFunc(out, func(x, y providers.OwnedResource) int { return x.IP.Compare(y.IP) })
	return out, nil
}

// ReleaseOwned implements providers.Provider.
func (p *Provider) ReleaseOwned(ctx context.Context, res providers.OwnedResource) error {
	p.mu.Lock()
	inPool := p.poolOf(res.IP) != nil
	p.mu.Unlock()
	if res.Kind != providers.ResourcePrivateIP || !inPool {
		return &providers.Error{Kind: providers.KindPermission, Op: fmt.Sprintf("releasing %s %s", res.Kind, res.ID),
			Err: fmt.Errorf("not an address of a static pool")}
	}
	return p.ReleaseIP(ctx, providers.ReleaseRequest{Owner: res.Owner, Current: providers.Assignment{IP: res.IP}})
}

// Holder returns the node holding a, for tests and the lab.
func (p *Provider) Holder(a netip.Addr) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h, ok := p.holds[a]
	return h.node, ok
}

// Addresses returns the addresses node holds.
func (p *Provider) Addresses(node string) []netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []netip.Addr
	for a, h := range p.holds {
		if h.node == node {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
