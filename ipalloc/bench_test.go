package ipalloc

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// The benchmark workload: 10 zones of 10 AWS /22 subnets (100 subnets), 1k gateway nodes (10
// per subnet, primary IPs scattered), 50 addresses per subnet reported in use by the cloud
// (pods of a VPC CNI), a /28 excluded per zone; then 10k allocations round-robin over the
// subnets and the placement of each zone's 1k addresses on its 100 nodes. The naive benchmark
// runs the same workload on naiveAlloc and naivePlace, so the two figures are a ratio.

const (
	benchZones          = 10
	benchSubnetsPerZone = 10
	benchNodesPerSubnet = 10
	benchInUsePerSubnet = 50
	benchAllocations    = 10_000
	benchFreeSlots      = 15
)

type benchSubnet struct {
	zone, id string
	prefix   netip.Prefix
	inUse    []netip.Addr
}

type benchWorld struct {
	subnets []benchSubnet
	nodeIPs []netip.Addr
	excl    []netip.Prefix
	nodes   map[string][]Node // by zone
}

func newBenchWorld() *benchWorld {
	r := rand.New(rand.NewPCG(42, 42))
	w := &benchWorld{nodes: map[string][]Node{}}
	for z := range benchZones {
		zone := fmt.Sprintf("zone-%d", z)
		w.excl = append(w.excl, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(z), 0, 32}), 28))
		for s := range benchSubnetsPerZone {
			base := netip.AddrFrom4([4]byte{10, byte(z), byte(s * 4), 0})
			sub := benchSubnet{zone: zone, id: fmt.Sprintf("subnet-%d-%d", z, s), prefix: netip.PrefixFrom(base, 22)}
			at := func() netip.Addr { return toAddr(fromAddr(base).addN(4+uint64(r.IntN(1019))), true) }
			for range benchInUsePerSubnet {
				sub.inUse = append(sub.inUse, at())
			}
			for n := range benchNodesPerSubnet {
				w.nodeIPs = append(w.nodeIPs, at())
				w.nodes[zone] = append(w.nodes[zone], Node{Name: fmt.Sprintf("node-%d-%d-%d", z, s, n), Free: benchFreeSlots})
			}
			w.subnets = append(w.subnets, sub)
		}
	}
	return w
}

func (w *benchWorld) allocator(b *testing.B) *Allocator {
	a := New()
	for _, s := range w.subnets {
		if err := a.AddSubnet(s.zone, s.id, s.prefix, ReserveAWS); err != nil {
			b.Fatal(err)
		}
		if err := a.SetInUse(s.zone, s.id, s.inUse); err != nil {
			b.Fatal(err)
		}
	}
	a.SetNodeIPs(w.nodeIPs)
	if err := a.SetExcluded(w.excl); err != nil {
		b.Fatal(err)
	}
	return a
}

func (w *benchWorld) naive() *naiveAlloc {
	n := newNaive()
	for _, s := range w.subnets {
		n.addSubnet(s.zone, s.id, s.prefix, ReserveAWS)
		for _, ip := range s.inUse {
			n.pool(s.zone, s.id).inUse[ip] = true
		}
	}
	for _, ip := range w.nodeIPs {
		n.nodeIPs[ip] = true
	}
	n.excl = w.excl
	return n
}

func BenchmarkAllocate10kAcross100Subnets1kNodes(b *testing.B) {
	w := newBenchWorld()
	byZone := map[string][]netip.Addr{}
	for b.Loop() {
		b.StopTimer()
		a := w.allocator(b)
		clear(byZone)
		b.StartTimer()
		for i := range benchAllocations {
			s := &w.subnets[i%len(w.subnets)]
			ip, err := a.Allocate(s.zone, s.id, "gw")
			if err != nil {
				b.Fatal(err)
			}
			byZone[s.zone] = append(byZone[s.zone], ip)
		}
		for zone, ips := range byZone {
			if _, err := a.Place(zone, ips, w.nodes[zone]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkAllocate10kAcross100Subnets1kNodesNaive is the baseline: the same workload on the
// linear-scan allocator and the scan-every-node placement of naive_test.go.
func BenchmarkAllocate10kAcross100Subnets1kNodesNaive(b *testing.B) {
	w := newBenchWorld()
	byZone := map[string][]netip.Addr{}
	for b.Loop() {
		b.StopTimer()
		n := w.naive()
		clear(byZone)
		b.StartTimer()
		for i := range benchAllocations {
			s := &w.subnets[i%len(w.subnets)]
			ip, err := n.allocate(s.zone, s.id, "gw")
			if err != nil {
				b.Fatal(err)
			}
			byZone[s.zone] = append(byZone[s.zone], ip)
		}
		for zone, ips := range byZone {
			if _, unplaced := naivePlace(ips, nil, w.nodes[zone]); len(unplaced) > 0 {
				b.Fatal("unplaced")
			}
		}
	}
}

// The same two, allocation only (no placement), to show where the time goes.
func BenchmarkAllocateOnly10kAcross100Subnets(b *testing.B) {
	w := newBenchWorld()
	for b.Loop() {
		b.StopTimer()
		a := w.allocator(b)
		b.StartTimer()
		for i := range benchAllocations {
			s := &w.subnets[i%len(w.subnets)]
			if _, err := a.Allocate(s.zone, s.id, "gw"); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkAllocateOnly10kAcross100SubnetsNaive(b *testing.B) {
	w := newBenchWorld()
	for b.Loop() {
		b.StopTimer()
		n := w.naive()
		b.StartTimer()
		for i := range benchAllocations {
			s := &w.subnets[i%len(w.subnets)]
			if _, err := n.allocate(s.zone, s.id, "gw"); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkAllocateIPv6Slash64 allocates from a /64 with half of it excluded: the cost must
// not depend on the subnet's size.
func BenchmarkAllocateIPv6Slash64(b *testing.B) {
	a := New()
	if err := a.AddSubnet("z", "v6", netip.MustParsePrefix("2001:db8::/64"), ReserveAWS); err != nil {
		b.Fatal(err)
	}
	if err := a.Exclude(netip.MustParsePrefix("2001:db8::/65")); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := a.Allocate("z", "v6", "gw"); err != nil {
			b.Fatal(err)
		}
	}
}
