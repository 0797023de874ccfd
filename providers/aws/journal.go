package aws

import (
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Read your own writes. EC2's describes lag its writes ("Eventual consistency in the Amazon EC2
// API": a describe right after a successful call may not show it, or show the state before):
// right after egressd assigned an address, a describe may show it nowhere; right after a move,
// on the old interface; right after an unassign, still there. Acting on such a read repeats
// calls EC2 already accepted (harmless, but not free), makes garbage collection miss an address
// it should list, and decides a dedicated interface is not yet empty.
//
// So the provider keeps a journal of the placements it made itself, for a consistency window
// longer than the describe lag, and lays it over every describe of interfaces: an address it
// assigned to an interface is there (with its ownership record and Elastic IP association) and
// on no other, an address it unassigned is nowhere. The journal is this process's: a new leader
// starts with none, and then reads what EC2 shows, as before.

// placement is the last write this process made for one address.
type placement struct {
	// eni is a copy of the interface the address was put on (its Secondary and Assoc as the
	// write left them are not kept: other writes change them); nil when the address was
	// unassigned (gone).
	eni *iface
	// record is the ownership tag's value on a non-dedicated interface ("" on a dedicated one).
	record string
	assoc  *assoc
	at     time.Time
}

type journal struct {
	mu     sync.Mutex
	window time.Duration
	now    func() time.Time
	byIP   map[netip.Addr]placement
	// deleted holds the Elastic IP allocations and interfaces this process released or
	// deleted, by ID, with when: describes may list them for a while yet.
	deleted map[string]time.Time
}

func newJournal(window time.Duration) *journal {
	return &journal{window: window, now: time.Now, byIP: map[netip.Addr]placement{}, deleted: map[string]time.Time{}}
}

// gone records that the resource id (an allocation or an interface) was released or deleted.
func (j *journal) gone(id string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.deleted[id] = j.now()
}

// isGone reports whether this process released or deleted id within the window.
func (j *journal) isGone(id string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	at, ok := j.deleted[id]
	if ok && j.now().Sub(at) >= j.window {
		delete(j.deleted, id)
		return false
	}
	return ok
}

// placed records that a is on f (assigned, or moved there), carrying f's ownership record of a.
func (j *journal) placed(a netip.Addr, f *iface) {
	c := *f
	c.Secondary, c.IPv6, c.Assoc, c.Tags = nil, nil, nil, maps.Clone(f.Tags)
	j.mu.Lock()
	defer j.mu.Unlock()
	p := placement{eni: &c, record: f.Tags[TagIPPrefix+a.String()], at: j.now()}
	if as, ok := f.Assoc[a]; ok {
		p.assoc = &as
	}
	j.byIP[a] = p
}

// associated records the Elastic IP association of a, placed on eni.
func (j *journal) associated(a netip.Addr, eni string, as assoc) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if p, ok := j.byIP[a]; ok && p.eni != nil && p.eni.ID == eni {
		p.assoc, p.at = &as, j.now()
		j.byIP[a] = p
	}
}

// removed records that a is on no interface any more.
func (j *journal) removed(a netip.Addr) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.byIP[a] = placement{at: j.now()}
}

// fresh returns the placements younger than the window, dropping the others.
func (j *journal) fresh() map[netip.Addr]placement {
	j.mu.Lock()
	defer j.mu.Unlock()
	now := j.now()
	out := map[netip.Addr]placement{}
	for a, p := range j.byIP {
		if now.Sub(p.at) >= j.window {
			delete(j.byIP, a)
			continue
		}
		out[a] = p
	}
	return out
}

// where returns the interface this process last put a on, within the window; ok is false when
// the journal has nothing fresh for a, and eni nil when a was unassigned.
func (j *journal) where(a netip.Addr) (eni *iface, ok bool) {
	p, ok := j.fresh()[a]
	if !ok || p.eni == nil {
		return nil, ok
	}
	c := *p.eni
	c.Tags = maps.Clone(p.eni.Tags)
	return &c, true
}

// overlay corrects interfaces read from a describe with the fresh placements: an address put on
// one of them is there, with its record and association; an address put elsewhere, or
// unassigned, is not.
func (j *journal) overlay(fs []*iface) {
	for a, p := range j.fresh() {
		for _, f := range fs {
			if f.Primary == a {
				continue
			}
			list := f.addrs(a)
			if p.eni == nil || p.eni.ID != f.ID {
				*list = slices.DeleteFunc(*list, func(x netip.Addr) bool { return x == a })
				delete(f.Assoc, a)
				continue
			}
			if !f.holds(a) {
				*list = append(*list, a)
			}
			if p.record != "" {
				f.Tags[TagIPPrefix+a.String()] = p.record
			}
			if p.assoc != nil {
				f.Assoc[a] = *p.assoc
			}
		}
	}
}
