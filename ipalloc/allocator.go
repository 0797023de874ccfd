package ipalloc

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
)

// Record is one assignment: an EgressIP ledger entry as plain values.
type Record struct {
	IP netip.Addr
	// Zone and Subnet name the pool. Subnet may be empty in input; the pool that contains IP
	// fills it in.
	Zone   string
	Subnet string
	// Owner is the caller's key for who holds the address (e.g. the EgressGateway name).
	Owner string
	// Node is the gateway node that holds or should hold the address; empty when unplaced.
	Node string
}

// Why an address of a pool is taken (bits of pool.taken).
const (
	takenLease uint8 = 1 << iota
	takenInUse
	takenNode
)

type poolKey struct{ zone, subnet string }

// pool is one subnet or static range. It stores only taken addresses; counts let Allocate
// answer "exhausted" in O(1) and bound the scan otherwise.
type pool struct {
	// zone is the first zone that added the pool, for messages; zones are all that did. A
	// regional subnet (one GCE subnetwork, one Azure subnet) serves every zone of its region:
	// each zone adds it under the same subnet ID and the same range, and they share this pool,
	// so no address is handed out twice across zones.
	zone, subnet string
	zones        map[string]bool
	is4          bool
	netFirst     u128 // whole range, reserved addresses included
	netLast      u128
	first, last  u128 // usable range; empty when first > last
	reservation  Reservation

	taken    map[u128]uint8 // usable addresses taken, with why (taken* bits)
	excl     []span         // user exclusions clipped to [first, last], sorted, merged
	exclN    u128           // addresses in excl
	takenOut int            // keys of taken outside excl
	leases   int            // leases attached to this pool

	// hint is at most the lowest address that may be handed out: everything that frees an
	// address lowers it, so Allocate can scan upward from it and still return the lowest.
	hint u128
}

func (p *pool) usable() bool { return !p.last.less(p.first) }

func (p *pool) contains(x u128) bool { return !x.less(p.netFirst) && !p.netLast.less(x) }

func (p *pool) reserved(x u128) bool { return x.less(p.first) || p.last.less(x) }

// free is how many addresses may still be handed out.
func (p *pool) free() u128 {
	if !p.usable() {
		return u128{}
	}
	n := p.last.sub(p.first).addN(1) // cannot overflow: ::/0 is refused
	return n.sub(p.exclN).subN(uint64(p.takenOut))
}

// exclAt returns the index of the first exclusion span that ends at or after x.
func (p *pool) exclAt(x u128) int {
	i, _ := slices.BinarySearchFunc(p.excl, x, func(s span, x u128) int { return s.last.cmp(x) })
	return i
}

func (p *pool) excluded(x u128) bool {
	i := p.exclAt(x)
	return i < len(p.excl) && !x.less(p.excl[i].first)
}

func (p *pool) set(x u128, bit uint8) {
	if p.reserved(x) {
		return
	}
	old := p.taken[x]
	if old == 0 && !p.excluded(x) {
		p.takenOut++
	}
	p.taken[x] = old | bit
}

func (p *pool) clear(x u128, bit uint8) {
	old, ok := p.taken[x]
	if !ok || old&bit == 0 {
		return
	}
	if n := old &^ bit; n != 0 {
		p.taken[x] = n
		return
	}
	delete(p.taken, x)
	if !p.excluded(x) {
		p.takenOut--
	}
	if x.less(p.hint) {
		p.hint = x
	}
}

// clearAll clears bit on every address of the pool.
func (p *pool) clearAll(bit uint8) {
	for x := range p.taken {
		p.clear(x, bit)
	}
}

// next returns the lowest address at or above the hint that may be handed out.
func (p *pool) next() (u128, bool) {
	if p.free().isZero() {
		return u128{}, false
	}
	x := p.hint
	if x.less(p.first) {
		x = p.first
	}
	i := p.exclAt(x)
	for !p.last.less(x) {
		if i < len(p.excl) && !x.less(p.excl[i].first) {
			if p.excl[i].last == p.last {
				break
			}
			x = p.excl[i].last.addN(1)
			i++
			continue
		}
		if _, ok := p.taken[x]; !ok {
			return x, true
		}
		if x == p.last {
			break
		}
		x = x.addN(1)
	}
	return u128{}, false // unreachable while the counts are right; the tests check them
}

// setExclusions clips and merges the user's exclusions onto the pool.
func (p *pool) setExclusions(all []netip.Prefix) {
	p.excl = p.excl[:0]
	if p.usable() {
		for _, e := range all {
			if e.Addr().Is4() != p.is4 {
				continue
			}
			f, l := prefixRange(e)
			if l.less(p.first) || p.last.less(f) {
				continue
			}
			f, l = maxU(f, p.first), minU(l, p.last)
			p.excl = append(p.excl, span{f, l})
		}
	}
	slices.SortFunc(p.excl, func(a, b span) int { return a.first.cmp(b.first) })
	merged := p.excl[:0]
	for _, s := range p.excl {
		if n := len(merged); n > 0 && (!merged[n-1].last.addN(1).less(s.first) || merged[n-1].last.addN(1).isZero()) {
			merged[n-1].last = maxU(merged[n-1].last, s.last)
			continue
		}
		merged = append(merged, s)
	}
	p.excl = merged
	p.exclN = u128{}
	for _, s := range p.excl {
		p.exclN = p.exclN.add(s.last.sub(s.first).addN(1))
	}
	p.takenOut = 0
	for x := range p.taken {
		if !p.excluded(x) {
			p.takenOut++
		}
	}
	p.hint = p.first
}

func maxU(a, b u128) u128 {
	if a.less(b) {
		return b
	}
	return a
}

func minU(a, b u128) u128 {
	if a.less(b) {
		return a
	}
	return b
}

type lease struct {
	rec  Record
	pool *pool // nil until the record's subnet is added
}

// Allocator hands out egress addresses from pools. The zero value is not usable; call New.
type Allocator struct {
	mu       sync.Mutex
	pools    map[poolKey]*pool
	byFamily [2][]*pool              // [0] v4, [1] v6, sorted by netFirst; pools never overlap
	leases   map[netip.Addr]lease    // by value: one heap object less per allocation
	orphans  map[netip.Addr]struct{} // leases whose pool is not known yet
	nodeIPs  map[netip.Addr]struct{}
	excluded []netip.Prefix
}

// New returns an empty Allocator.
func New() *Allocator {
	return &Allocator{
		pools:   map[poolKey]*pool{},
		leases:  map[netip.Addr]lease{},
		orphans: map[netip.Addr]struct{}{},
		nodeIPs: map[netip.Addr]struct{}{},
	}
}

func family(is4 bool) int {
	if is4 {
		return 0
	}
	return 1
}

// canon strips what makes two spellings of one address differ (IPv4-mapped form, v6 zone).
func canon(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

// poolOf returns the pool whose range contains a, or nil.
func (a *Allocator) poolOf(ip netip.Addr) *pool {
	x := fromAddr(ip)
	ps := a.byFamily[family(ip.Is4())]
	i, found := slices.BinarySearchFunc(ps, x, func(p *pool, x u128) int { return p.netFirst.cmp(x) })
	if found {
		return ps[i]
	}
	if i > 0 && ps[i-1].contains(x) {
		return ps[i-1]
	}
	return nil
}

// AddSubnet adds a pool for a subnet of a zone, reserving its first and last addresses as the
// profile says. Leases already held for it (from Rebuild or Claim) are attached; if one does
// not fit (outside the prefix, on a reserved address, another zone) nothing is added. Adding
// the same pool again with the same prefix and profile is a no-op.
func (a *Allocator) AddSubnet(zone, subnetID string, prefix netip.Prefix, r Reservation) error {
	if !prefix.IsValid() || (prefix.Addr().Is6() && prefix.Bits() == 0) || prefix.Addr().Is4In6() || prefix.Addr().Zone() != "" {
		return &SubnetError{Op: "add subnet", Zone: zone, Subnet: subnetID, Err: fmt.Errorf("prefix %s: %w", prefix, ErrInvalid)}
	}
	first, last := prefixRange(prefix)
	return a.add(zone, subnetID, prefix.Addr().Is4(), first, last, r)
}

// AddRange adds a pool for a static range of addresses, first to last inclusive, with no
// reserved address.
func (a *Allocator) AddRange(zone, rangeID string, first, last netip.Addr) error {
	first, last = canon(first), canon(last)
	if !first.IsValid() || !last.IsValid() || first.Is4() != last.Is4() || last.Less(first) {
		return &SubnetError{Op: "add range", Zone: zone, Subnet: rangeID, Err: fmt.Errorf("range %s-%s: %w", first, last, ErrInvalid)}
	}
	return a.add(zone, rangeID, first.Is4(), fromAddr(first), fromAddr(last), ReserveNone)
}

func (a *Allocator) add(zone, id string, is4 bool, first, last u128, r Reservation) error {
	fail := func(err error) error { return &SubnetError{Op: "add subnet", Zone: zone, Subnet: id, Err: err} }
	if zone == "" || id == "" || r.First < 0 || r.Last < 0 {
		return fail(fmt.Errorf("empty zone or subnet ID, or negative reservation: %w", ErrInvalid))
	}
	p := &pool{zone: zone, subnet: id, zones: map[string]bool{zone: true}, is4: is4, netFirst: first, netLast: last, reservation: r, taken: map[u128]uint8{}}
	size := last.sub(first) // size - 1
	if res := uint64(r.First) + uint64(r.Last); size.hi == 0 && size.lo < res {
		p.first, p.last = last.addN(1), last // empty
	} else {
		p.first, p.last = first.addN(uint64(r.First)), last.subN(uint64(r.Last))
	}
	p.hint = p.first

	a.mu.Lock()
	defer a.mu.Unlock()
	key := poolKey{zone, id}
	if old, ok := a.pools[key]; ok {
		if old.is4 == is4 && old.netFirst == first && old.netLast == last && old.reservation == r {
			return nil
		}
		return fail(fmt.Errorf("already added with another range or reservation: %w", ErrInvalid))
	}
	fam := family(is4)
	for _, o := range a.byFamily[fam] {
		if !o.netLast.less(first) && !last.less(o.netFirst) {
			if o.subnet == id && o.is4 == is4 && o.netFirst == first && o.netLast == last && o.reservation == r {
				// The same subnet added by another zone: a regional subnet.
				return a.share(o, zone)
			}
			return fail(fmt.Errorf("zone %q subnet %q: %w", o.zone, o.subnet, ErrOverlap))
		}
	}
	var attach []lease
	for ip := range a.orphans {
		l := a.leases[ip]
		x := fromAddr(ip)
		in := ip.Is4() == is4 && p.contains(x)
		mine := l.rec.Zone == zone && l.rec.Subnet == id
		switch {
		case !in && !mine:
			continue
		case !in:
			return &SubnetError{Op: "add subnet", Zone: zone, Subnet: id, Addr: ip, Err: fmt.Errorf("leased to owner %q: %w", l.rec.Owner, ErrOutsideSubnet)}
		case l.rec.Subnet == id:
			// This subnet's, in any zone: a regional subnet's other zones add it later.
		case l.rec.Zone != zone || l.rec.Subnet != "":
			return &SubnetError{Op: "add subnet", Zone: zone, Subnet: id, Addr: ip, Err: fmt.Errorf("leased to owner %q in zone %q subnet %q: %w", l.rec.Owner, l.rec.Zone, l.rec.Subnet, ErrOutsideSubnet)}
		case p.reserved(x):
			return &SubnetError{Op: "add subnet", Zone: zone, Subnet: id, Addr: ip, Err: fmt.Errorf("leased to owner %q: %w", l.rec.Owner, ErrReserved)}
		}
		attach = append(attach, l)
	}
	p.setExclusions(a.excluded)
	for _, l := range attach {
		delete(a.orphans, l.rec.IP)
		l.rec.Subnet = id
		l.pool = p
		a.leases[l.rec.IP] = l
		p.leases++
		p.set(fromAddr(l.rec.IP), takenLease)
	}
	for ip := range a.nodeIPs {
		if ip.Is4() == is4 && p.contains(fromAddr(ip)) {
			p.set(fromAddr(ip), takenNode)
		}
	}
	a.pools[key] = p
	ps := append(a.byFamily[fam], p)
	slices.SortFunc(ps, func(x, y *pool) int { return x.netFirst.cmp(y.netFirst) })
	a.byFamily[fam] = ps
	return nil
}

// share adds zone to a pool another zone added with the same subnet ID and range (a regional
// subnet), and attaches the zone's orphaned leases in it.
func (a *Allocator) share(p *pool, zone string) error {
	for ip := range a.orphans {
		l := a.leases[ip]
		if l.rec.Zone != zone || !p.contains(fromAddr(ip)) || ip.Is4() != p.is4 || (l.rec.Subnet != "" && l.rec.Subnet != p.subnet) {
			continue
		}
		if p.reserved(fromAddr(ip)) {
			return &SubnetError{Op: "add subnet", Zone: zone, Subnet: p.subnet, Addr: ip, Err: fmt.Errorf("leased to owner %q: %w", l.rec.Owner, ErrReserved)}
		}
	}
	for ip := range a.orphans {
		l := a.leases[ip]
		if l.rec.Zone != zone || !p.contains(fromAddr(ip)) || ip.Is4() != p.is4 || (l.rec.Subnet != "" && l.rec.Subnet != p.subnet) {
			continue
		}
		delete(a.orphans, ip)
		l.rec.Subnet = p.subnet
		l.pool = p
		a.leases[ip] = l
		p.leases++
		p.set(fromAddr(ip), takenLease)
	}
	p.zones[zone] = true
	a.pools[poolKey{zone, p.subnet}] = p
	return nil
}

// RemoveSubnet removes a pool that has no lease left. Removing an unknown pool returns nil. A
// regional subnet's pool stays for its other zones; the zone that removes it must hold no
// lease in it.
func (a *Allocator) RemoveSubnet(zone, subnetID string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.pools[poolKey{zone, subnetID}]
	if !ok {
		return nil
	}
	n := p.leases
	if len(p.zones) > 1 {
		n = 0
		for _, l := range a.leases {
			if l.pool == p && l.rec.Zone == zone {
				n++
			}
		}
	}
	if n > 0 {
		return &SubnetError{Op: "remove subnet", Zone: zone, Subnet: subnetID, Err: fmt.Errorf("%d lease(s): %w", n, ErrSubnetInUse)}
	}
	delete(a.pools, poolKey{zone, subnetID})
	delete(p.zones, zone)
	if len(p.zones) > 0 {
		if p.zone == zone {
			for z := range p.zones {
				if p.zone == zone || z < p.zone {
					p.zone = z
				}
			}
		}
		return nil
	}
	fam := family(p.is4)
	a.byFamily[fam] = slices.DeleteFunc(a.byFamily[fam], func(o *pool) bool { return o == p })
	return nil
}

func (a *Allocator) pool(op, zone, subnetID string) (*pool, error) {
	p, ok := a.pools[poolKey{zone, subnetID}]
	if !ok {
		return nil, &SubnetError{Op: op, Zone: zone, Subnet: subnetID, Err: ErrUnknownSubnet}
	}
	return p, nil
}

// MarkInUse records addresses the cloud reports in use in a pool, in addition to those already
// recorded. Addresses outside the subnet are refused (nothing is recorded); reserved ones are
// ignored.
func (a *Allocator) MarkInUse(zone, subnetID string, addrs ...netip.Addr) error {
	return a.inUse("mark in use", zone, subnetID, addrs, false)
}

// SetInUse replaces the addresses the cloud reports in use in a pool by a new snapshot.
func (a *Allocator) SetInUse(zone, subnetID string, addrs []netip.Addr) error {
	return a.inUse("set in use", zone, subnetID, addrs, true)
}

func (a *Allocator) inUse(op, zone, subnetID string, addrs []netip.Addr, replace bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, err := a.pool(op, zone, subnetID)
	if err != nil {
		return err
	}
	for _, ip := range addrs {
		ip = canon(ip)
		if !ip.IsValid() || ip.Is4() != p.is4 || !p.contains(fromAddr(ip)) {
			return &SubnetError{Op: op, Zone: zone, Subnet: subnetID, Addr: ip, Err: ErrOutsideSubnet}
		}
	}
	if replace {
		p.clearAll(takenInUse)
	}
	for _, ip := range addrs {
		p.set(fromAddr(canon(ip)), takenInUse)
	}
	return nil
}

// SetNodeIPs replaces the set of node primary IPs, which are never handed out. It applies to
// every pool, present and future. Invalid addresses are ignored.
func (a *Allocator) SetNodeIPs(addrs []netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	next := make(map[netip.Addr]struct{}, len(addrs))
	for _, ip := range addrs {
		if ip = canon(ip); ip.IsValid() {
			next[ip] = struct{}{}
		}
	}
	for ip := range a.nodeIPs {
		if _, ok := next[ip]; !ok {
			if p := a.poolOf(ip); p != nil {
				p.clear(fromAddr(ip), takenNode)
			}
		}
	}
	for ip := range next {
		if p := a.poolOf(ip); p != nil {
			p.set(fromAddr(ip), takenNode)
		}
	}
	a.nodeIPs = next
}

// Exclude adds prefixes the user excluded; they are never handed out, in any pool.
func (a *Allocator) Exclude(prefixes ...netip.Prefix) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.setExcluded(append(slices.Clone(a.excluded), prefixes...))
}

// SetExcluded replaces the prefixes the user excluded.
func (a *Allocator) SetExcluded(prefixes []netip.Prefix) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.setExcluded(slices.Clone(prefixes))
}

func (a *Allocator) setExcluded(ps []netip.Prefix) error {
	for i, p := range ps {
		if !p.IsValid() || p.Addr().Zone() != "" {
			return fmt.Errorf("ipalloc: exclude %s: %w", p, ErrInvalid)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		ps[i] = p.Masked()
	}
	a.excluded = ps
	for _, p := range a.pools {
		p.setExclusions(ps)
	}
	return nil
}

// Allocate leases the lowest address of the pool that may be handed out to owner.
// It fails with ErrUnknownSubnet or ErrExhausted, wrapped in a *SubnetError.
func (a *Allocator) Allocate(zone, subnetID, owner string) (netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, err := a.pool("allocate", zone, subnetID)
	if err != nil {
		return netip.Addr{}, err
	}
	if owner == "" {
		return netip.Addr{}, &SubnetError{Op: "allocate", Zone: zone, Subnet: subnetID, Err: fmt.Errorf("empty owner: %w", ErrInvalid)}
	}
	x, ok := p.next()
	if !ok {
		return netip.Addr{}, &SubnetError{Op: "allocate", Zone: zone, Subnet: subnetID, Err: ErrExhausted}
	}
	ip := toAddr(x, p.is4)
	a.leases[ip] = lease{rec: Record{IP: ip, Zone: zone, Subnet: subnetID, Owner: owner}, pool: p}
	p.leases++
	p.set(x, takenLease)
	p.hint = x.addN(1)
	if x == p.last { // keep hint inside the range without wrapping
		p.hint = x
	}
	return ip, nil
}

// Release ends the lease of an address, which may then be handed out again (unless the cloud
// still reports it in use). Releasing an address without a lease is ErrNotAllocated.
func (a *Allocator) Release(ip netip.Addr) error {
	ip = canon(ip)
	a.mu.Lock()
	defer a.mu.Unlock()
	l, ok := a.leases[ip]
	if !ok {
		err := &SubnetError{Op: "release", Addr: ip, Err: ErrNotAllocated}
		if p := a.poolOf(ip); p != nil {
			err.Zone, err.Subnet = p.zone, p.subnet
		}
		return err
	}
	a.drop(l)
	return nil
}

func (a *Allocator) drop(l lease) {
	delete(a.leases, l.rec.IP)
	if l.pool == nil {
		delete(a.orphans, l.rec.IP)
		return
	}
	l.pool.leases--
	l.pool.clear(fromAddr(l.rec.IP), takenLease)
}

// Claim records an existing assignment, as Rebuild does for each record. Claiming an address
// again with an identical record is a no-op; with a different one it is a *ConflictError.
func (a *Allocator) Claim(r Record) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.claim(r)
}

func (a *Allocator) claim(r Record) error {
	r.IP = canon(r.IP)
	fail := func(err error) error {
		return &SubnetError{Op: "claim", Zone: r.Zone, Subnet: r.Subnet, Addr: r.IP, Err: err}
	}
	if !r.IP.IsValid() || r.Zone == "" || r.Owner == "" {
		return fail(fmt.Errorf("record needs an address, a zone and an owner: %w", ErrInvalid))
	}
	p := a.poolOf(r.IP)
	if p != nil {
		if !p.zones[r.Zone] || (r.Subnet != "" && r.Subnet != p.subnet) {
			return fail(fmt.Errorf("address is in zone %q subnet %q: %w", p.zone, p.subnet, ErrOutsideSubnet))
		}
		if p.reserved(fromAddr(r.IP)) {
			return fail(fmt.Errorf("%s profile: %w", p.reservation, ErrReserved))
		}
		r.Subnet = p.subnet
	} else if r.Subnet != "" {
		if _, ok := a.pools[poolKey{r.Zone, r.Subnet}]; ok {
			return fail(ErrOutsideSubnet)
		}
	}
	if l, ok := a.leases[r.IP]; ok {
		if l.rec == r {
			return nil
		}
		return &ConflictError{Addr: r.IP, Held: l.rec, Claim: r}
	}
	a.leases[r.IP] = lease{rec: r, pool: p}
	if p == nil {
		a.orphans[r.IP] = struct{}{}
		return nil
	}
	p.leases++
	p.set(fromAddr(r.IP), takenLease)
	return nil
}

// Rebuild replaces every lease by the ledger's records; pools, in-use addresses, node IPs and
// exclusions are kept. Records are taken in (IP, zone, subnet, owner, node) order; every record
// that can be claimed is, and the error joins one error per record that could not (a
// *ConflictError for a second claimant of an address, a *SubnetError otherwise).
func (a *Allocator) Rebuild(records []Record) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, l := range a.leases {
		a.drop(l)
	}
	rs := slices.Clone(records)
	for i := range rs {
		rs[i].IP = canon(rs[i].IP)
	}
	slices.SortFunc(rs, compareRecords)
	var errs []error
	for _, r := range rs {
		if err := a.claim(r); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func compareRecords(x, y Record) int {
	return cmp.Or(x.IP.Compare(y.IP), cmp.Compare(x.Zone, y.Zone), cmp.Compare(x.Subnet, y.Subnet),
		cmp.Compare(x.Owner, y.Owner), cmp.Compare(x.Node, y.Node))
}

// Records returns every lease, sorted by address: the state Rebuild takes back.
func (a *Allocator) Records() []Record {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Record, 0, len(a.leases))
	for _, l := range a.leases {
		out = append(out, l.rec)
	}
	slices.SortFunc(out, compareRecords)
	return out
}

// Lookup returns the lease of an address.
func (a *Allocator) Lookup(ip netip.Addr) (Record, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	l, ok := a.leases[canon(ip)]
	if !ok {
		return Record{}, false
	}
	return l.rec, true
}

// SetNode records the node that holds a leased address (what Place decided, or what the cloud
// reports); Place keeps an address on its node while that node is a candidate.
func (a *Allocator) SetNode(ip netip.Addr, node string) error {
	ip = canon(ip)
	a.mu.Lock()
	defer a.mu.Unlock()
	l, ok := a.leases[ip]
	if !ok {
		return &SubnetError{Op: "set node", Addr: ip, Err: ErrNotAllocated}
	}
	l.rec.Node = node
	a.leases[ip] = l
	return nil
}

// Available returns how many addresses the pool may still hand out (saturated at the largest
// uint64 for large IPv6 subnets).
func (a *Allocator) Available(zone, subnetID string) (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, err := a.pool("available", zone, subnetID)
	if err != nil {
		return 0, err
	}
	return p.free().saturate(), nil
}
