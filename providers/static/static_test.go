package static_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/conformance"
	"github.com/egressd/egressd/providers/static"
)

type harness struct{}

func (harness) Features() []conformance.Feature {
	return []conformance.Feature{conformance.FeatureForeign}
}

func (harness) Setup(t *testing.T, topo conformance.Topology) conformance.World {
	cfg := static.Config{MaxIPsPerNode: topo.IPsPerNode}
	w := &world{nodes: map[string][]providers.NodeRef{}, next: map[string]netip.Addr{}}
	for i, z := range topo.Zones {
		cfg.Pools = append(cfg.Pools, static.Pool{Zone: z, Addresses: []string{fmt.Sprintf("192.0.2.%d/28", 16*(i+1)), fmt.Sprintf("198.51.100.%d", i+1)},
			Interface: "eth0", Subnet: fmt.Sprintf("192.0.2.%d/28", 16*(i+1))})
		w.next[z] = netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", 16*(i+1)))
		for n := range topo.NodesPerZone {
			name := fmt.Sprintf("node-%s-%d", z, n)
			w.nodes[z] = append(w.nodes[z], providers.NodeRef{Name: name, ProviderID: "static://" + name, Zone: z})
		}
	}
	p, err := static.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.p = p
	return w
}

type world struct {
	p     *static.Provider
	nodes map[string][]providers.NodeRef
	next  map[string]netip.Addr
}

func (w *world) Provider() providers.Provider          { return w.p }
func (w *world) Cluster() string                       { return "c1" }
func (w *world) Nodes(zone string) []providers.NodeRef { return w.nodes[zone] }
func (w *world) FreeAddress(zone string) netip.Addr {
	a := w.next[zone]
	w.next[zone] = a.Next()
	return a
}
func (w *world) Holder(ip netip.Addr) (string, netip.Addr, bool) {
	n, ok := w.p.Holder(ip)
	return n, netip.Addr{}, ok
}
func (w *world) Addresses(node string) []netip.Addr { return w.p.Addresses(node) }
func (w *world) PublicIPs() int                     { return 0 }
func (w *world) Interfaces(string) int              { return 1 }
func (w *world) MutatingCalls() int                 { return 0 }
func (w *world) Calls() map[string]int              { return nil }
func (w *world) ResetCalls()                        {}
func (w *world) Throttle(int)                       {}
func (w *world) FailMutationsAfterApply()           {}
func (w *world) SetDescribeLag(time.Duration)       {}
func (w *world) ClearFaults()                       {}
func (w *world) AddForeign(node providers.NodeRef) []netip.Addr {
	a := w.FreeAddress(node.Zone)
	if _, err := w.p.EnsureIP(context.Background(), providers.EnsureRequest{Owner: providers.Owner{Cluster: "other"}, Node: node, IP: a}); err != nil {
		panic(err)
	}
	return []netip.Addr{a}
}

func TestConformance(t *testing.T) { conformance.Run(t, harness{}) }

func TestConfig(t *testing.T) {
	for name, pools := range map[string][]static.Pool{
		"not an address": {{Zone: "a", Addresses: []string{"nope"}}},
		"no zone":        {{Addresses: []string{"192.0.2.1"}}},
		"overlapping":    {{Zone: "a", Addresses: []string{"192.0.2.0/24"}}, {Zone: "b", Addresses: []string{"192.0.2.7"}}},
	} {
		if _, err := static.New(static.Config{Pools: pools}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	p, err := static.New(static.Config{Pools: []static.Pool{{Zone: "a", Addresses: []string{"192.0.2.1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.EnsureIP(context.Background(), providers.EnsureRequest{Owner: providers.Owner{Cluster: "c"}, Node: providers.NodeRef{Name: "n", Zone: "a"},
		IP: netip.MustParseAddr("203.0.113.1")})
	if !providers.IsPermission(err) {
		t.Errorf("address outside every pool: want Permission, got %v", err)
	}
}

// Each static group gives the one provider its pools; an address belongs to one group, and a
// rejected SetPools changes nothing.
func TestSetPools(t *testing.T) {
	ctx := context.Background()
	p, err := static.New(static.Config{})
	if err != nil {
		t.Fatal(err)
	}
	owner := providers.Owner{Cluster: "c"}
	node := providers.NodeRef{Name: "n1", Zone: "a"}
	ip := netip.MustParseAddr("192.0.2.10")
	if _, err := p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: node, IP: ip}); !providers.IsPermission(err) {
		t.Fatalf("before any pool: want Permission, got %v", err)
	}
	if err := p.SetPools("g1", []static.Pool{{Zone: "a", Subnet: "192.0.2.0/24", Addresses: []string{"192.0.2.10", "192.0.2.11"}}}); err != nil {
		t.Fatal(err)
	}
	err = p.SetPools("g2", []static.Pool{{Zone: "a", Subnet: "192.0.2.0/24", Addresses: []string{"192.0.2.11"}}})
	if err == nil || !strings.Contains(err.Error(), "g1") {
		t.Fatalf("g2 claiming g1's 192.0.2.11: %v, want an overlap error naming g1", err)
	}
	// g1 may redefine its own pools, which the overlap check does not hold against it.
	if err := p.SetPools("g1", []static.Pool{{Zone: "a", Subnet: "192.0.2.0/24", Addresses: []string{"192.0.2.10"}}}); err != nil {
		t.Fatal(err)
	}
	if err := p.SetPools("g2", []static.Pool{{Zone: "a", Subnet: "192.0.2.0/24", Addresses: []string{"192.0.2.11"}}}); err != nil {
		t.Fatalf("192.0.2.11 is free again: %v", err)
	}
	a, err := p.EnsureIP(ctx, providers.EnsureRequest{Owner: owner, Node: node, IP: ip})
	if err != nil || a.Node != "n1" {
		t.Fatalf("EnsureIP: %+v, %v", a, err)
	}
	// The group goes away: its held address is still released.
	if err := p.SetPools("g1", nil); err != nil {
		t.Fatal(err)
	}
	if err := p.ReleaseIP(ctx, providers.ReleaseRequest{Owner: owner, Current: *a}); err != nil {
		t.Fatal(err)
	}
	if n, held := p.Holder(ip); held {
		t.Fatalf("%s still held by %s after release", ip, n)
	}
}
