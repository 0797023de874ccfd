package awssim

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/egressd/egressd/test/cloudsim/simkit"
)

// Three views of one account, as in EC2:
//   - the accepted state (s.w): what a mutating call validates against and changes, at once;
//   - the API view: what describe calls return, the accepted state of up to a drawn describe
//     lag ago (view);
//   - the fabric view: who the network delivers each address to, which follows an accepted
//     change after a drawn propagation delay (FabricHoldings).
// Every change of an address's holding is a Move, from which the fabric view is computed.

// maxMoves bounds the move log; older moves are dropped first.
const maxMoves = 10000

// Move is one change of who holds a private address (or of its Elastic IP): accepted by the
// API at AcceptedAt, delivered by the fabric at DeliveredAt (in the future until it is).
// From is the zero Holding for a new address, To for a released one.
type Move struct {
	// Seq numbers moves from 1 in the order they were accepted.
	Seq         uint64     `json:"seq"`
	VPC         string     `json:"vpcId"`
	IP          netip.Addr `json:"privateIp"`
	From        Holding    `json:"from"`
	To          Holding    `json:"to"`
	AcceptedAt  time.Time  `json:"acceptedAt"`
	DeliveredAt time.Time  `json:"deliveredAt"`
	// Action is the EC2 action (or settled transition, or admin call) that made the change.
	Action string `json:"action"`
}

// Delivered reports whether the fabric delivers the move at t.
func (m Move) Delivered(t time.Time) bool { return !t.Before(m.DeliveredAt) }

type holdKey struct {
	vpc string
	ip  netip.Addr
}

// fabric is the state behind the fabric view and the move log.
type fabric struct {
	last      map[holdKey]Holding // accepted holdings at the last commit
	delivered map[holdKey]Holding
	pending   []Move // accepted, not yet delivered, in the order accepted
	latest    map[holdKey]time.Time
	log       []Move
	seq       uint64
	gen       uint64 // bumped whenever the fabric view changes
	changed   chan struct{}
}

func newFabric() fabric {
	return fabric{last: map[holdKey]Holding{}, delivered: map[holdKey]Holding{}, latest: map[holdKey]time.Time{},
		changed: make(chan struct{})}
}

// SetTiming makes the simulator take its time as p says, drawing delays from a generator
// seeded with seed (0: from the clock). It returns the seed used, to print and replay. Describe
// lag set by SetDescribeLag stays until ClearFaults. The default is the instant profile.
func (s *Server) SetTiming(p simkit.Profile, seed int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.timing = simkit.NewTiming(p, seed)
	s.resetLagLocked()
	return s.timing.Seed()
}

// Timing returns the profile in use and its seed.
func (s *Server) Timing() (simkit.Profile, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.timing.Profile(), s.timing.Seed()
}

// lagOn reports whether describe calls may lag.
func (s *Server) lagOn() bool { return s.lag > 0 || !s.timing.Profile().DescribeLag.Zero() }

func (s *Server) drawLag() time.Duration {
	if s.lag > 0 {
		return s.lag
	}
	return s.timing.DescribeLag()
}

// resetLagLocked restarts the lag history: the state now is what describes see until the
// next write becomes visible.
func (s *Server) resetLagLocked() {
	s.history = nil
	if s.lagOn() {
		now := s.now()
		s.history = []snap{{at: now, visible: now, w: s.w.clone()}}
	}
}

// holdingsLocked lists the accepted holdings by (VPC, address).
func (s *Server) holdingsLocked() map[holdKey]Holding {
	w := s.w
	eips := map[string]*eip{} // ENI/private → Elastic IP
	for _, x := range w.EIPs {
		if x.ENI != "" {
			eips[x.ENI+"/"+x.Private.String()] = x
		}
	}
	out := make(map[holdKey]Holding, len(w.ENIs))
	for _, e := range w.ENIs {
		for i, a := range e.held() {
			h := Holding{PrivateIP: a, ENI: e.ID, Primary: i == 0}
			if e.Attach != nil {
				h.Instance = e.Attach.Instance
			}
			if x := eips[e.ID+"/"+a.String()]; x != nil {
				h.PublicIP, h.Allocation = x.Public, x.Allocation
			}
			out[holdKey{e.VPC, a}] = h
		}
	}
	return out
}

// commitLocked records what the change just made to s.w did, as of at: a describe-lag
// snapshot visible after a drawn lag, and a Move for every address whose holding changed,
// delivered after a drawn propagation delay (at once when propagate is false: seeding).
func (s *Server) commitLocked(action string, at time.Time, propagate bool) {
	if s.lagOn() {
		s.history = append(s.history, snap{at: at, visible: at.Add(s.drawLag()), w: s.w.clone()})
	}
	f := &s.fab
	prev, cur := f.last, s.holdingsLocked()
	var keys []holdKey
	for k, h := range cur {
		if prev[k] != h {
			keys = append(keys, k)
		}
	}
	for k := range prev {
		if _, ok := cur[k]; !ok {
			keys = append(keys, k)
		}
	}
	f.last = cur
	if len(keys) == 0 {
		return
	}
	slices.SortFunc(keys, func(a, b holdKey) int { return cmp.Or(cmp.Compare(a.vpc, b.vpc), a.ip.Compare(b.ip)) })
	var wake time.Time
	for _, k := range keys {
		var d time.Duration
		if propagate {
			d = s.timing.Propagation()
		}
		// The fabric applies an address's changes in the order they were accepted.
		due := at.Add(d)
		if l := f.latest[k]; l.After(due) {
			due = l
		}
		f.latest[k] = due
		f.seq++
		m := Move{Seq: f.seq, VPC: k.vpc, IP: k.ip, From: prev[k], To: cur[k], AcceptedAt: at, DeliveredAt: due, Action: action}
		f.log = append(f.log, m)
		f.pending = append(f.pending, m)
		if due.After(wake) {
			wake = due
		}
	}
	if over := len(f.log) - maxMoves; over > 0 {
		f.log = slices.Delete(f.log, 0, over)
	}
	s.deliverLocked(s.now())
	if len(f.pending) > 0 {
		s.wakeAt(wake)
	}
}

// deliverLocked applies every pending move due at now to the fabric view.
func (s *Server) deliverLocked(now time.Time) {
	f := &s.fab
	n := 0
	for _, m := range f.pending {
		if !m.Delivered(now) {
			f.pending[n] = m
			n++
			continue
		}
		k := holdKey{m.VPC, m.IP}
		if m.To.ENI == "" {
			delete(f.delivered, k)
		} else {
			f.delivered[k] = m.To
		}
	}
	if n == len(f.pending) {
		return
	}
	clear(f.pending[n:])
	f.pending = f.pending[:n]
	f.gen++
	close(f.changed)
	f.changed = make(chan struct{})
}

// wakeAt settles the simulator at t, so that the fabric view changes (and FabricChanged
// fires) when a move is due even if nobody calls in between.
func (s *Server) wakeAt(t time.Time) {
	d := t.Sub(s.now())
	if d < 0 {
		d = 0
	}
	time.AfterFunc(d+time.Millisecond, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.settleLocked()
	})
}

// settleLocked completes every interface transition due by now (each a commit of its own,
// at the time it was due) and delivers what the fabric has propagated.
func (s *Server) settleLocked() {
	now := s.now()
	for {
		var next *eni
		for _, e := range s.w.ENIs {
			a := e.Attach
			if a == nil || (a.State != stateAttaching && a.State != stateDetaching) || a.Until.After(now) {
				continue
			}
			if next == nil || a.Until.Before(next.Attach.Until) || (a.Until.Equal(next.Attach.Until) && e.ID < next.ID) {
				next = e
			}
		}
		if next == nil {
			break
		}
		at := next.Attach.Until
		if next.Attach.State == stateAttaching {
			next.Attach.State, next.Attach.Until = stateAttached, time.Time{}
			s.commitLocked("attached", at, false)
		} else {
			next.Attach = nil
			s.commitLocked("detached", at, false)
		}
	}
	s.deliverLocked(now)
}

// FabricHoldings lists every private address the fabric delivers, and to whom, in the shape
// of Holdings: what the lab's VPC router follows. It lags Holdings by each move's propagation.
func (s *Server) FabricHoldings() []Holding {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	out := slices.Collect(maps.Values(s.fab.delivered))
	sortHoldings(out)
	return out
}

// FabricGeneration counts the changes of the fabric view: a poller that saw the same number
// has nothing new to apply.
func (s *Server) FabricGeneration() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	return s.fab.gen
}

// FabricChanged returns a channel closed at the next change of the fabric view. Take it
// before reading FabricHoldings so that no change is missed.
func (s *Server) FabricChanged() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	return s.fab.changed
}

// Moves returns the move log (the newest maxMoves moves), oldest first.
func (s *Server) Moves() []Move {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	return slices.Clone(s.fab.log)
}

// MovesSince returns the logged moves numbered after seq, oldest first.
func (s *Server) MovesSince(seq uint64) []Move {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	i, _ := slices.BinarySearchFunc(s.fab.log, seq+1, func(m Move, seq uint64) int { return cmp.Compare(m.Seq, seq) })
	return slices.Clone(s.fab.log[i:])
}

// Pending reports whether an accepted change has not reached the fabric yet.
func (s *Server) Pending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	return len(s.fab.pending) > 0
}

func sortHoldings(hs []Holding) {
	slices.SortFunc(hs, func(a, b Holding) int {
		if c := cmp.Compare(a.ENI, b.ENI); c != 0 {
			return c
		}
		if a.Primary != b.Primary {
			if a.Primary {
				return -1
			}
			return 1
		}
		return a.PrivateIP.Compare(b.PrivateIP)
	})
}

// DeliverPending makes the fabric deliver every accepted change now, as if its propagation
// had just ended (tests that hold a move in flight with a long propagation, then release it).
func (s *Server) DeliverPending() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked()
	now := s.now()
	for i := range s.fab.pending {
		s.fab.pending[i].DeliveredAt = now
	}
	for k, t := range s.fab.latest {
		if t.After(now) {
			s.fab.latest[k] = now
		}
	}
	for i := range s.fab.log {
		if s.fab.log[i].DeliveredAt.After(now) {
			s.fab.log[i].DeliveredAt = now
		}
	}
	s.deliverLocked(now)
}
