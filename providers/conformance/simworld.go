package conformance

import (
	"net/netip"
	"sync"
	"testing"

	"github.com/egressd/egressd/providers"
)

// SimCounters is what SimWorld reads from a simulator: its per-method request counters
// (test/cloudsim/simkit.Counters).
type SimCounters interface {
	CallCounts() map[string]int
	ResetCalls()
}

// SimWorld is the part of a World that a simulator harness keeps the same way for every
// cloud: the provider under test, the nodes by zone, free addresses handed out in order from
// a range no node uses, one interface a node, and the simulator's counters. A harness embeds
// it and adds what reads or faults its own simulator.
type SimWorld struct {
	sim      SimCounters
	mutating []string
	prov     providers.Provider
	nodes    map[string][]providers.NodeRef

	mu   sync.Mutex
	free netip.Addr
}

// NewSimWorld returns a SimWorld on sim whose mutating methods are mutating and whose free
// addresses follow after.
func NewSimWorld(sim SimCounters, mutating []string, after netip.Addr) *SimWorld {
	return &SimWorld{sim: sim, mutating: mutating, nodes: map[string][]providers.NodeRef{}, free: after}
}

// AddNode records a node of the world.
func (w *SimWorld) AddNode(n providers.NodeRef) { w.nodes[n.Zone] = append(w.nodes[n.Zone], n) }

// SetProvider makes p the provider under test, wrapped by wrap when it is set.
func (w *SimWorld) SetProvider(t *testing.T, p providers.Provider, wrap func(*testing.T, providers.Provider) providers.Provider) {
	w.prov = p
	if wrap != nil {
		w.prov = wrap(t, p)
	}
}

// Provider, Cluster, Nodes, Interfaces, Calls and ResetCalls implement World.
func (w *SimWorld) Provider() providers.Provider          { return w.prov }
func (w *SimWorld) Cluster() string                       { return "conformance" }
func (w *SimWorld) Nodes(zone string) []providers.NodeRef { return w.nodes[zone] }
func (w *SimWorld) Interfaces(string) int                 { return 1 }
func (w *SimWorld) Calls() map[string]int                 { return w.sim.CallCounts() }
func (w *SimWorld) ResetCalls()                           { w.sim.ResetCalls() }

// FreeAddress returns the next address of the free range.
func (w *SimWorld) FreeAddress(string) netip.Addr {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.free = w.free.Next()
	return w.free
}

// MutatingCalls sums the counters of the mutating methods.
func (w *SimWorld) MutatingCalls() int {
	c := w.sim.CallCounts()
	n := 0
	for _, m := range w.mutating {
		n += c[m]
	}
	return n
}

// FailEachMutation makes the next call of every mutating method fail with status after the
// simulator applied it; fail is the simulator's FailNext.
func (w *SimWorld) FailEachMutation(fail func(method string, n, status int, afterApply bool), status int) {
	for _, m := range w.mutating {
		fail(m, 1, status, true)
	}
}
