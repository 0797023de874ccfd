package ipalloc

import (
	"testing"
)

// checkInvariants recomputes what the allocator keeps incrementally and fails on any
// difference: the counts behind "exhausted", the taken bits, the hint, and that no lease sits
// on a reserved address or in another pool.
func checkInvariants(t testing.TB, a *Allocator) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	for fam, ps := range a.byFamily {
		for i, p := range ps {
			if (fam == 0) != p.is4 || a.pools[poolKey{p.zone, p.subnet}] != p {
				t.Fatalf("pool %s/%s misfiled", p.zone, p.subnet)
			}
			if i > 0 && !ps[i-1].netLast.less(p.netFirst) {
				t.Fatalf("pools %s and %s overlap or are unsorted", ps[i-1].subnet, p.subnet)
			}
		}
	}
	leases := map[*pool]int{}
	for ip, l := range a.leases {
		if l.rec.IP != ip {
			t.Fatalf("lease %s keyed as %s", l.rec.IP, ip)
		}
		p := a.poolOf(ip)
		if p != l.pool {
			t.Fatalf("lease %s attached to the wrong pool", ip)
		}
		if p == nil {
			if _, ok := a.orphans[ip]; !ok {
				t.Fatalf("lease %s without pool is not pending", ip)
			}
			continue
		}
		if p.reserved(fromAddr(ip)) {
			t.Fatalf("lease %s on a reserved address of %s/%s", ip, p.zone, p.subnet)
		}
		if l.rec.Zone != p.zone || l.rec.Subnet != p.subnet {
			t.Fatalf("lease %s says %s/%s, pool is %s/%s", ip, l.rec.Zone, l.rec.Subnet, p.zone, p.subnet)
		}
		if p.taken[fromAddr(ip)]&takenLease == 0 {
			t.Fatalf("lease %s not marked taken", ip)
		}
		leases[p]++
	}
	for ip := range a.orphans {
		if _, ok := a.leases[ip]; !ok {
			t.Fatalf("pending %s has no lease", ip)
		}
	}
	for _, p := range a.pools {
		if p.leases != leases[p] {
			t.Fatalf("%s/%s counts %d leases, has %d", p.zone, p.subnet, p.leases, leases[p])
		}
		out := 0
		for x, bits := range p.taken {
			ip := toAddr(x, p.is4)
			if bits == 0 || p.reserved(x) {
				t.Fatalf("%s/%s: taken entry %s bits %b", p.zone, p.subnet, ip, bits)
			}
			if _, leased := a.leases[ip]; (bits&takenLease != 0) != leased {
				t.Fatalf("%s/%s: lease bit of %s wrong", p.zone, p.subnet, ip)
			}
			if _, node := a.nodeIPs[ip]; (bits&takenNode != 0) != node {
				t.Fatalf("%s/%s: node bit of %s wrong", p.zone, p.subnet, ip)
			}
			if !p.excluded(x) {
				out++
			}
		}
		for ip := range a.nodeIPs {
			if ip.Is4() == p.is4 && p.contains(fromAddr(ip)) && !p.reserved(fromAddr(ip)) && p.taken[fromAddr(ip)]&takenNode == 0 {
				t.Fatalf("%s/%s: node IP %s not taken", p.zone, p.subnet, ip)
			}
		}
		if out != p.takenOut {
			t.Fatalf("%s/%s: takenOut %d, recount %d", p.zone, p.subnet, p.takenOut, out)
		}
		var excl u128
		for i, s := range p.excl {
			if s.last.less(s.first) || s.first.less(p.first) || p.last.less(s.last) {
				t.Fatalf("%s/%s: exclusion span %d out of range", p.zone, p.subnet, i)
			}
			if i > 0 && !p.excl[i-1].last.addN(1).less(s.first) {
				t.Fatalf("%s/%s: exclusion spans %d and %d not merged", p.zone, p.subnet, i-1, i)
			}
			excl = excl.add(s.last.sub(s.first).addN(1))
		}
		if excl != p.exclN {
			t.Fatalf("%s/%s: exclN wrong", p.zone, p.subnet)
		}
		// The hint is at most the lowest free address (walk small ranges only).
		if p.usable() && p.last.sub(p.first).saturate() < 1<<12 {
			for x := p.first; x.less(p.hint); x = x.addN(1) {
				if _, ok := p.taken[x]; !ok && !p.excluded(x) {
					t.Fatalf("%s/%s: free %s below hint %s", p.zone, p.subnet, toAddr(x, p.is4), toAddr(p.hint, p.is4))
				}
			}
		}
	}
}
