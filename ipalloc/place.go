package ipalloc

import (
	"cmp"
	"container/heap"
	"fmt"
	"net/netip"
	"slices"
)

// Node is a gateway node candidate for Place.
type Node struct {
	Name string
	// Free is how many more addresses the node can take (the provider's FreeIPSlots), not
	// counting the addresses it already holds.
	Free int
}

// Place decides which node of the zone holds each of ips (all leased in zone). It does not
// change the allocator: record the decisions with SetNode. The map holds every address placed;
// if some could not be (not enough free slots) the error is a *CapacityError listing them.
func (a *Allocator) Place(zone string, ips []netip.Addr, nodes []Node) (map[netip.Addr]string, error) {
	a.mu.Lock()
	current := make([]string, len(ips))
	sorted := make([]netip.Addr, len(ips))
	for i, ip := range ips {
		ip = canon(ip)
		sorted[i] = ip
		l, ok := a.leases[ip]
		if !ok {
			a.mu.Unlock()
			return nil, &SubnetError{Op: "place", Zone: zone, Addr: ip, Err: ErrNotAllocated}
		}
		if l.rec.Zone != zone {
			a.mu.Unlock()
			return nil, &SubnetError{Op: "place", Zone: zone, Subnet: l.rec.Subnet, Addr: ip,
				Err: fmt.Errorf("leased in zone %q: %w", l.rec.Zone, ErrOutsideSubnet)}
		}
	}
	slices.SortFunc(sorted, netip.Addr.Compare)
	if i := duplicate(sorted); i >= 0 {
		a.mu.Unlock()
		return nil, fmt.Errorf("ipalloc: place: zone %q: address %s listed twice: %w", zone, sorted[i], ErrInvalid)
	}
	for i, ip := range sorted {
		current[i] = a.leases[ip].rec.Node
	}
	a.mu.Unlock()

	out, unplaced, err := place(sorted, current, nodes)
	if err != nil {
		return nil, fmt.Errorf("ipalloc: place: zone %q: %w", zone, err)
	}
	if len(unplaced) > 0 {
		return out, &CapacityError{Zone: zone, Unplaced: unplaced}
	}
	return out, nil
}

func duplicate(sorted []netip.Addr) int {
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			return i
		}
	}
	return -1
}

type slot struct {
	name string
	rank int // position by name, so the heap compares ints
	held int // addresses of this placement on the node
	free int
}

// place is the pure decision: ips sorted and unique, current[i] the node ips[i] is on.
func place(ips []netip.Addr, current []string, nodes []Node) (map[netip.Addr]string, []netip.Addr, error) {
	slots := make([]*slot, len(nodes))
	byName := make(map[string]*slot, len(nodes))
	for i, n := range nodes {
		if n.Name == "" {
			return nil, nil, fmt.Errorf("node with an empty name: %w", ErrInvalid)
		}
		if _, dup := byName[n.Name]; dup {
			return nil, nil, fmt.Errorf("node %q listed twice: %w", n.Name, ErrInvalid)
		}
		s := &slot{name: n.Name, free: max(n.Free, 0)}
		slots[i], byName[n.Name] = s, s
	}
	out := make(map[netip.Addr]string, len(ips))
	var pending []netip.Addr
	for i, ip := range ips {
		if s, ok := byName[current[i]]; ok {
			out[ip] = s.name
			s.held++
			continue
		}
		pending = append(pending, ip)
	}
	slices.SortFunc(slots, func(x, y *slot) int { return cmp.Compare(x.name, y.name) })
	h := make(slotHeap, 0, len(slots))
	for i, s := range slots {
		s.rank = i
		if s.free > 0 {
			h = append(h, s)
		}
	}
	heap.Init(&h)
	for i, ip := range pending {
		if len(h) == 0 {
			return out, pending[i:], nil
		}
		s := h[0]
		out[ip] = s.name
		s.held++
		s.free--
		if s.free == 0 {
			heap.Pop(&h)
		} else {
			heap.Fix(&h, 0)
		}
	}
	return out, nil, nil
}

// slotHeap orders nodes by fewest addresses held, then most free slots, then name.
type slotHeap []*slot

func (h slotHeap) Len() int { return len(h) }
func (h slotHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	return cmp.Or(cmp.Compare(a.held, b.held), cmp.Compare(b.free, a.free), cmp.Compare(a.rank, b.rank)) < 0
}
func (h slotHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *slotHeap) Push(x any)   { *h = append(*h, x.(*slot)) }
func (h *slotHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	*h = old[:len(old)-1]
	return s
}
