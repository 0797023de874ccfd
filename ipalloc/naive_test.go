package ipalloc

import (
	"cmp"
	"net/netip"
	"slices"
)

// naiveAlloc is the obvious implementation: walk the subnet address by address from the
// start and test every rule with plain lookups and a linear scan of the exclusions. It is the
// oracle of the property and fuzz tests (same rules, same "lowest free address" answer) and
// the baseline of the benchmarks.
type naiveAlloc struct {
	pools   []*naivePool
	leases  map[netip.Addr]Record
	nodeIPs map[netip.Addr]bool
	excl    []netip.Prefix
}

type naivePool struct {
	zone, id          string
	netFirst, netLast netip.Addr
	first, last       netip.Addr // usable; invalid when none
	res               Reservation
	inUse             map[netip.Addr]bool
}

func newNaive() *naiveAlloc {
	return &naiveAlloc{leases: map[netip.Addr]Record{}, nodeIPs: map[netip.Addr]bool{}}
}

func (n *naiveAlloc) addPool(zone, id string, netFirst, netLast netip.Addr, r Reservation) {
	p := &naivePool{zone: zone, id: id, netFirst: netFirst, netLast: netLast, res: r, inUse: map[netip.Addr]bool{}}
	first, last := netFirst, netLast
	ok := true
	for range r.First {
		if first == netLast {
			ok = false
			break
		}
		first = first.Next()
	}
	for range r.Last {
		if !ok || last == netFirst {
			ok = false
			break
		}
		last = last.Prev()
	}
	if ok && !last.Less(first) {
		p.first, p.last = first, last
	}
	n.pools = append(n.pools, p)
}

func (n *naiveAlloc) addSubnet(zone, id string, pfx netip.Prefix, r Reservation) {
	pfx = pfx.Masked()
	n.addPool(zone, id, pfx.Addr(), lastOf(pfx), r)
}

// lastOf is the last address of pfx, walked bit by bit so as not to reuse prefixRange.
func lastOf(pfx netip.Prefix) netip.Addr {
	b := pfx.Addr().AsSlice()
	for i := pfx.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func (n *naiveAlloc) pool(zone, id string) *naivePool {
	for _, p := range n.pools {
		if p.zone == zone && p.id == id {
			return p
		}
	}
	return nil
}

func (n *naiveAlloc) poolOf(ip netip.Addr) *naivePool {
	for _, p := range n.pools {
		if ip.Is4() == p.netFirst.Is4() && !ip.Less(p.netFirst) && !p.netLast.Less(ip) {
			return p
		}
	}
	return nil
}

func (p *naivePool) reserved(ip netip.Addr) bool {
	return !p.first.IsValid() || ip.Less(p.first) || p.last.Less(ip)
}

func (n *naiveAlloc) free(p *naivePool, ip netip.Addr) bool {
	if _, ok := n.leases[ip]; ok || p.inUse[ip] || n.nodeIPs[ip] {
		return false
	}
	for _, e := range n.excl {
		if e.Contains(ip) {
			return false
		}
	}
	return true
}

func (n *naiveAlloc) allocate(zone, id, owner string) (netip.Addr, error) {
	p := n.pool(zone, id)
	if p == nil {
		return netip.Addr{}, ErrUnknownSubnet
	}
	if p.first.IsValid() {
		for ip := p.first; ; ip = ip.Next() {
			if n.free(p, ip) {
				n.leases[ip] = Record{IP: ip, Zone: zone, Subnet: id, Owner: owner}
				return ip, nil
			}
			if ip == p.last {
				break
			}
		}
	}
	return netip.Addr{}, ErrExhausted
}

// available counts free addresses; only for small pools.
func (n *naiveAlloc) available(p *naivePool) uint64 {
	var c uint64
	if p.first.IsValid() {
		for ip := p.first; ; ip = ip.Next() {
			if n.free(p, ip) {
				c++
			}
			if ip == p.last {
				break
			}
		}
	}
	return c
}

func (n *naiveAlloc) release(ip netip.Addr) error {
	if _, ok := n.leases[ip]; !ok {
		return ErrNotAllocated
	}
	delete(n.leases, ip)
	return nil
}

func (n *naiveAlloc) claim(r Record) error {
	p := n.poolOf(r.IP)
	if p != nil {
		if p.zone != r.Zone || (r.Subnet != "" && r.Subnet != p.id) {
			return ErrOutsideSubnet
		}
		if p.reserved(r.IP) {
			return ErrReserved
		}
		r.Subnet = p.id
	} else if r.Subnet != "" && n.pool(r.Zone, r.Subnet) != nil {
		return ErrOutsideSubnet
	}
	if old, ok := n.leases[r.IP]; ok {
		if old == r {
			return nil
		}
		return ErrConflict
	}
	n.leases[r.IP] = r
	return nil
}

func (n *naiveAlloc) records() []Record {
	out := make([]Record, 0, len(n.leases))
	for _, r := range n.leases {
		out = append(out, r)
	}
	slices.SortFunc(out, compareRecords)
	return out
}

// naivePlace applies Place's rule by scanning every node for every address.
func naivePlace(ips []netip.Addr, current map[netip.Addr]string, nodes []Node) (map[netip.Addr]string, []netip.Addr) {
	ips = slices.Clone(ips)
	slices.SortFunc(ips, netip.Addr.Compare)
	held := map[string]int{}
	free := map[string]int{}
	for _, nd := range nodes {
		free[nd.Name] = max(nd.Free, 0)
		held[nd.Name] = 0
	}
	out := map[netip.Addr]string{}
	var pending, unplaced []netip.Addr
	for _, ip := range ips {
		if _, ok := free[current[ip]]; ok {
			out[ip] = current[ip]
			held[current[ip]]++
			continue
		}
		pending = append(pending, ip)
	}
	for _, ip := range pending {
		best := ""
		for _, nd := range nodes {
			if free[nd.Name] == 0 {
				continue
			}
			if best == "" || cmp.Or(cmp.Compare(held[nd.Name], held[best]), cmp.Compare(free[best], free[nd.Name]), cmp.Compare(nd.Name, best)) < 0 {
				best = nd.Name
			}
		}
		if best == "" {
			unplaced = append(unplaced, ip)
			continue
		}
		out[ip] = best
		held[best]++
		free[best]--
	}
	return out, unplaced
}
