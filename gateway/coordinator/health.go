package coordinator

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"

	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/egressd/egressd/gateway/probe"
)

// ProbeHealth is the coordinator's own view of gateway agents, from UDP probes. It implements
// Health and turns every up/down transition into a reconcile of the groups that list the node.
type ProbeHealth struct {
	prober *probe.Prober
	port   uint16
	// Changes receives one event per transition; the gateway controller watches it.
	Changes chan event.GenericEvent

	mu   sync.Mutex
	down map[netip.Addr]bool
}

// NewProbeHealth probes from conn (an unconnected UDP socket). Run must be called.
func NewProbeHealth(conn net.PacketConn, port int) *ProbeHealth {
	h := &ProbeHealth{port: uint16(port), Changes: make(chan event.GenericEvent, 1024), down: map[netip.Addr]bool{}}
	h.prober = probe.NewProber(conn, probe.Options{OnChange: h.onChange})
	return h
}

// Run probes until ctx ends.
func (h *ProbeHealth) Run(ctx context.Context) error { return h.prober.Run(ctx) }

// Up implements Health.
func (h *ProbeHealth) Up(addr netip.Addr) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.down[addr]
}

// SetTargets implements Health.
func (h *ProbeHealth) SetTargets(targets []probe.Target) { h.prober.SetTargets(targets) }

func (h *ProbeHealth) onChange(s probe.Status) {
	h.mu.Lock()
	h.down[s.Addr.Addr()] = !s.Up
	h.mu.Unlock()
	select {
	case h.Changes <- event.GenericEvent{}:
	default: // a reconcile of every group is already queued
	}
}

// probeSet is what the gateway controller hands the prober: the probe targets of every group,
// merged so that a node in several groups is probed with the most demanding settings.
type probeSet struct {
	health Health

	mu      sync.Mutex
	byGroup map[string][]probe.Target
}

// set records a group's targets (none: the group is gone) and hands the union to the prober.
func (s *probeSet) set(gateway string, targets []probe.Target) {
	if s.health == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(targets) == 0 {
		delete(s.byGroup, gateway)
	} else {
		s.byGroup[gateway] = targets
	}
	union := map[netip.AddrPort]probe.Target{}
	for _, ts := range s.byGroup {
		for _, t := range ts {
			u, ok := union[t.Addr]
			if !ok || t.Interval < u.Interval || (t.Interval == u.Interval && t.FailureThreshold < u.FailureThreshold) {
				union[t.Addr] = t
			}
		}
	}
	all := make([]probe.Target, 0, len(union))
	for _, t := range union {
		all = append(all, t)
	}
	slices.SortFunc(all, func(a, b probe.Target) int { return a.Addr.Compare(b.Addr) })
	s.health.SetTargets(all)
}
