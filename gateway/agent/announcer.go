package agent

import (
	"context"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/egressd/egressd/gateway/agent/dataplane"
)

// A static egress IP newly mounted here is announced announceCount times, announceInterval
// apart (as arping -U -c 3 does): one lost frame does not leave a neighbour on the old holder.
const (
	announceCount    = 3
	announceInterval = 100 * time.Millisecond
)

// queueAnnouncements hands the static addresses of a state just applied that the previous
// applied state did not have (on this interface) to the announcer. The first Apply after a
// start announces them all: the agent cannot know who held them while it was away.
func (a *Agent) queueAnnouncements(addrs []dataplane.EgressAddress) {
	a.mu.Lock()
	held := make(map[dataplane.EgressAddress]bool, len(addrs))
	queued := false
	for _, addr := range addrs {
		held[addr] = true
		if !a.announced[addr] {
			a.toAnnounce = append(a.toAnnounce, addr)
			queued = true
		}
	}
	a.announced = held
	a.mu.Unlock()
	if queued {
		select {
		case a.announceKick <- struct{}{}:
		default:
		}
	}
}

// stillHeld reports whether the last applied state still mounts addr here.
func (a *Agent) stillHeld(addr dataplane.EgressAddress) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.announced[addr]
}

// runAnnouncer sends the queued announcements until ctx ends. A failed send is logged and that
// address is not retried: a missing interface does not come back within the series, and the
// next move announces again. An address that left this node in the meantime is not announced
// any more: a late frame from the old holder would pull the neighbours back from the new one.
func (a *Agent) runAnnouncer(ctx context.Context) {
	logger := log.FromContext(ctx)
	pending := map[dataplane.EgressAddress]int{} // sends left
	tick := time.NewTicker(announceInterval)
	tick.Stop()
	defer tick.Stop()
	send := func(addr dataplane.EgressAddress, left int) {
		if !a.stillHeld(addr) {
			delete(pending, addr)
			return
		}
		if err := a.cfg.Announce(addr.Interface, addr.IP); err != nil {
			logger.Error(err, "announcing a static egress IP", "ip", addr.IP, "interface", addr.Interface)
			left = 0
		}
		if left == 0 {
			delete(pending, addr)
		} else {
			pending[addr] = left
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.announceKick:
			a.mu.Lock()
			batch := a.toAnnounce
			a.toAnnounce = nil
			a.mu.Unlock()
			idle := len(pending) == 0
			for _, addr := range batch {
				logger.Info("announcing a static egress IP", "ip", addr.IP, "interface", addr.Interface)
				send(addr, announceCount-1)
			}
			if idle && len(pending) > 0 {
				tick.Reset(announceInterval)
			}
		case <-tick.C:
			for addr, left := range pending {
				send(addr, left-1)
			}
			if len(pending) == 0 {
				tick.Stop()
			}
		}
	}
}
