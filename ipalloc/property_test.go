package ipalloc

import (
	"errors"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// The property and fuzz tests drive the allocator and the naive oracle with the same sequence
// of operations, decoded from bytes, and after every step check that they agree (same address,
// same error kind, same records, same free count) and that the allocator's own invariants hold
// (see checkInvariants). Because the oracle never hands out a reserved, excluded, in-use, node
// or leased address and its records are a map, agreement shows: no duplicates, no reserved
// address, never over capacity. Rebuild round trips and release-then-allocate are operations
// of the sequence.

type harnessPool struct {
	zone, id    string
	prefix      string // empty: a static range
	first, last string
	res         Reservation
	size        uint64 // addresses the picker chooses among
	big         bool   // too big for the oracle to count
}

var harnessPools = []harnessPool{
	{zone: "a", id: "s4", prefix: "10.0.0.0/27", res: ReserveAWS, size: 32},
	{zone: "a", id: "g4", prefix: "10.0.1.0/28", res: ReserveGCP, size: 16},
	{zone: "b", id: "s6", prefix: "2001:db8::/123", res: ReserveAzure, size: 32},
	{zone: "b", id: "big", prefix: "2001:db8:1::/64", res: ReserveAWS, size: 300, big: true},
	{zone: "b", id: "r", first: "192.168.0.10", last: "192.168.0.19", res: ReserveNone, size: 10},
}

var harnessExclusions = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.8/29"),
	netip.MustParsePrefix("10.0.0.0/26"), // all of s4
	netip.MustParsePrefix("10.0.1.5/32"),
	netip.MustParsePrefix("10.0.0.30/31"), // s4's last usable and reserved addresses
	netip.MustParsePrefix("2001:db8::10/124"),
	netip.MustParsePrefix("2001:db8:1::/120"),
	netip.MustParsePrefix("192.168.0.12/31"),
	netip.MustParsePrefix("192.168.0.0/24"),
}

var harnessOutside = addrs("172.16.0.1", "2001:db8:2::1", "10.0.2.0")

type harness struct {
	t     testing.TB
	a     *Allocator
	m     *naiveAlloc
	data  []byte
	steps int
}

func newHarness(t testing.TB, data []byte) *harness {
	h := &harness{t: t, a: New(), m: newNaive(), data: data}
	configure(t, h.a)
	for _, p := range harnessPools {
		if p.prefix != "" {
			h.m.addSubnet(p.zone, p.id, netip.MustParsePrefix(p.prefix), p.res)
		} else {
			h.m.addPool(p.zone, p.id, netip.MustParseAddr(p.first), netip.MustParseAddr(p.last), p.res)
		}
	}
	return h
}

func configure(t testing.TB, a *Allocator) {
	for _, p := range harnessPools {
		var err error
		if p.prefix != "" {
			err = a.AddSubnet(p.zone, p.id, netip.MustParsePrefix(p.prefix), p.res)
		} else {
			err = a.AddRange(p.zone, p.id, netip.MustParseAddr(p.first), netip.MustParseAddr(p.last))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func (h *harness) byte() byte {
	if len(h.data) == 0 {
		return 0
	}
	b := h.data[0]
	h.data = h.data[1:]
	return b
}

func (h *harness) pool() harnessPool { return harnessPools[int(h.byte())%len(harnessPools)] }

// addr picks an address in a pool (reserved ones included) or, now and then, outside all.
func (h *harness) addr() netip.Addr {
	b := h.byte()
	if b%16 == 15 {
		return harnessOutside[int(h.byte())%len(harnessOutside)]
	}
	p := harnessPools[int(b)%len(harnessPools)]
	var first netip.Addr
	if p.prefix != "" {
		first = netip.MustParsePrefix(p.prefix).Masked().Addr()
	} else {
		first = netip.MustParseAddr(p.first)
	}
	off := (uint64(h.byte())<<8 | uint64(h.byte())) % p.size
	return toAddr(fromAddr(first).addN(off), first.Is4())
}

func class(err error) string {
	for _, e := range []error{ErrConflict, ErrExhausted, ErrUnknownSubnet, ErrNotAllocated, ErrReserved,
		ErrOutsideSubnet, ErrInvalid, ErrNoCapacity, ErrOverlap, ErrSubnetInUse} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	if err != nil {
		return "unexpected: " + err.Error()
	}
	return "ok"
}

func (h *harness) agree(op string, got, want error) {
	h.t.Helper()
	if class(got) != class(want) {
		h.t.Fatalf("step %d %s: allocator %v, oracle %v", h.steps, op, got, want)
	}
}

func (h *harness) run() {
	for len(h.data) > 0 {
		h.steps++
		switch op := h.byte() % 12; op {
		case 0, 1, 2: // allocate
			p := h.pool()
			owner := []string{"g0", "g1", "g2"}[h.byte()%3]
			ip, err := h.a.Allocate(p.zone, p.id, owner)
			mip, merr := h.m.allocate(p.zone, p.id, owner)
			h.agree("allocate", err, merr)
			if ip != mip {
				h.t.Fatalf("step %d allocate in %s/%s: %s, oracle %s", h.steps, p.zone, p.id, ip, mip)
			}
		case 3: // release a lease, or any address
			var ip netip.Addr
			recs := h.m.records()
			if b := h.byte(); b%4 != 0 && len(recs) > 0 {
				ip = recs[int(b)%len(recs)].IP
			} else {
				ip = h.addr()
			}
			h.agree("release", h.a.Release(ip), h.m.release(ip))
		case 4, 5: // cloud in use: add, or replace
			p := h.pool()
			var ips []netip.Addr
			for range h.byte() % 4 {
				ips = append(ips, h.addr())
			}
			var err error
			if op == 4 {
				err = h.a.MarkInUse(p.zone, p.id, ips...)
			} else {
				err = h.a.SetInUse(p.zone, p.id, ips)
			}
			h.agree("in use", err, h.m.inUse(p.zone, p.id, ips, op == 5))
		case 6: // node primary IPs
			var ips []netip.Addr
			for range h.byte() % 5 {
				ips = append(ips, h.addr())
			}
			h.a.SetNodeIPs(ips)
			h.m.nodeIPs = map[netip.Addr]bool{}
			for _, ip := range ips {
				h.m.nodeIPs[ip] = true
			}
		case 7: // exclusions: add one, or replace by a subset
			b := h.byte()
			if b%2 == 0 {
				e := harnessExclusions[int(b/2)%len(harnessExclusions)]
				h.agree("exclude", h.a.Exclude(e), nil)
				h.m.excl = append(h.m.excl, e)
			} else {
				var es []netip.Prefix
				mask := h.byte()
				for i, e := range harnessExclusions {
					if mask&(1<<i) != 0 {
						es = append(es, e)
					}
				}
				h.agree("set excluded", h.a.SetExcluded(es), nil)
				h.m.excl = es
			}
		case 8: // claim an existing assignment
			r := Record{IP: h.addr(), Owner: []string{"g0", "g1", "g2"}[h.byte()%3]}
			b := h.byte()
			p := harnessPools[int(b)%len(harnessPools)]
			r.Zone = p.zone
			switch b / 8 % 3 {
			case 1:
				r.Subnet = p.id
			case 2:
				r.Subnet = "elsewhere"
			}
			h.agree("claim", h.a.Claim(r), h.m.claim(r))
		case 9: // rebuild from the ledger on a new allocator, which then carries on
			h.rebuild()
		case 10, 11: // place a zone's addresses and record the decisions
			h.place()
		}
		h.check()
	}
}

func (m *naiveAlloc) inUse(zone, id string, ips []netip.Addr, replace bool) error {
	p := m.pool(zone, id)
	if p == nil {
		return ErrUnknownSubnet
	}
	for _, ip := range ips {
		if ip.Is4() != p.netFirst.Is4() || ip.Less(p.netFirst) || p.netLast.Less(ip) {
			return ErrOutsideSubnet
		}
	}
	if replace {
		p.inUse = map[netip.Addr]bool{}
	}
	for _, ip := range ips {
		p.inUse[ip] = true
	}
	return nil
}

func (h *harness) check() {
	h.t.Helper()
	checkInvariants(h.t, h.a)
	got, want := h.a.Records(), h.m.records()
	if !slices.Equal(got, want) {
		h.t.Fatalf("step %d: records differ\nallocator %v\noracle    %v", h.steps, got, want)
	}
	for _, p := range harnessPools {
		if p.big {
			continue
		}
		n, err := h.a.Available(p.zone, p.id)
		if want := h.m.available(h.m.pool(p.zone, p.id)); err != nil || n != want {
			h.t.Fatalf("step %d: %s/%s available %d (%v), oracle %d", h.steps, p.zone, p.id, n, err, want)
		}
	}
}

func (h *harness) rebuild() {
	recs := h.a.Records()
	b := New()
	if err := b.Rebuild(reversed(recs)); err != nil { // ledger first, in any order
		h.t.Fatalf("step %d: rebuild: %v", h.steps, err)
	}
	configure(h.t, b)
	var nodes []netip.Addr
	for ip := range h.m.nodeIPs {
		nodes = append(nodes, ip)
	}
	b.SetNodeIPs(nodes)
	for _, p := range h.m.pools {
		if err := b.SetInUse(p.zone, p.id, slices.Collect(maps.Keys(p.inUse))); err != nil {
			h.t.Fatal(err)
		}
	}
	if err := b.SetExcluded(h.m.excl); err != nil {
		h.t.Fatal(err)
	}
	if got := b.Records(); !slices.Equal(got, recs) {
		h.t.Fatalf("step %d: rebuild(state) != state\n%v\n%v", h.steps, got, recs)
	}
	// Rebuilding the rebuilt allocator from its own records changes nothing either.
	if err := b.Rebuild(b.Records()); err != nil || !slices.Equal(b.Records(), recs) {
		h.t.Fatalf("step %d: second rebuild: %v", h.steps, err)
	}
	h.a = b
}

func reversed(rs []Record) []Record {
	out := slices.Clone(rs)
	slices.Reverse(out)
	return out
}

func (h *harness) place() {
	zone := []string{"a", "b"}[h.byte()%2]
	var ips []netip.Addr
	current := map[netip.Addr]string{}
	for _, r := range h.m.records() {
		if r.Zone == zone {
			ips = append(ips, r.IP)
			current[r.IP] = r.Node
		}
	}
	var nodes []Node
	for i := range h.byte() % 5 {
		nodes = append(nodes, Node{Name: string(rune('p' + i)), Free: int(h.byte()%4) - 1})
	}
	got, err := h.a.Place(zone, ips, nodes)
	want, unplaced := naivePlace(ips, current, nodes)
	if !maps.Equal(got, want) || (err == nil) != (len(unplaced) == 0) {
		h.t.Fatalf("step %d: place %v on %v: %v (%v), oracle %v (%v)", h.steps, ips, nodes, got, err, want, unplaced)
	}
	var ce *CapacityError
	if err != nil && (!errors.As(err, &ce) || !slices.Equal(ce.Unplaced, unplaced)) {
		h.t.Fatalf("step %d: place: %v, oracle unplaced %v", h.steps, err, unplaced)
	}
	// Never over capacity; addresses on a candidate stay there.
	added := map[string]int{}
	for ip, n := range got {
		if current[ip] != n {
			added[n]++
		}
	}
	for _, n := range nodes {
		if added[n.Name] > max(n.Free, 0) {
			h.t.Fatalf("step %d: %d addresses on %s, free %d", h.steps, added[n.Name], n.Name, n.Free)
		}
	}
	for ip, n := range got {
		if err := h.a.SetNode(ip, n); err != nil {
			h.t.Fatal(err)
		}
		r := h.m.leases[ip]
		r.Node = n
		h.m.leases[ip] = r
	}
}

func TestPropertiesAgainstOracle(t *testing.T) {
	rounds := 400
	if testing.Short() {
		rounds = 50
	}
	for seed := range uint64(rounds) {
		r := rand.New(rand.NewPCG(seed, 0x1ca110c))
		data := make([]byte, 64+r.IntN(512))
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		h := newHarness(t, data)
		h.run()
	}
}

func FuzzAllocator(f *testing.F) {
	// Hand-written seeds: fill and exhaust s4; release and allocate again; rebuild; place.
	f.Add([]byte{0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0, 0, 1, 0, 0, 2})
	f.Add([]byte{0, 2, 1, 0, 2, 1, 3, 1, 0, 2, 1, 9, 0, 2, 1, 10, 1, 3, 5, 2, 1})
	f.Add([]byte{7, 2, 0, 0, 0, 6, 3, 0, 0, 4, 1, 0, 5, 0, 0, 1, 0, 4, 0, 9, 0, 0, 0})
	f.Add([]byte{8, 4, 0, 0, 5, 1, 8, 4, 0, 0, 5, 2, 9, 0, 3, 3, 11, 1, 3, 3, 1, 0})
	for seed := range uint64(8) {
		r := rand.New(rand.NewPCG(seed, 0xf022))
		data := make([]byte, 256)
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4096 {
			data = data[:4096]
		}
		newHarness(t, data).run()
	})
}
