package probe

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
)

// Target is one address to probe and how.
type Target struct {
	// Addr is the responder's underlay IP and probe port.
	Addr netip.AddrPort
	// Interval between probes; zero means the EgressGateway default
	// (egressv1.DefaultProbeInterval).
	Interval time.Duration
	// Timeout of one probe; zero or more than Interval means Interval.
	Timeout time.Duration
	// FailureThreshold is how many probes in a row must fail before the target is down; zero
	// means the EgressGateway default (egressv1.DefaultFailureThreshold).
	FailureThreshold int
}

func (t Target) withDefaults() Target {
	if t.Interval <= 0 {
		t.Interval = egressv1.DefaultProbeInterval
	}
	if t.Timeout <= 0 || t.Timeout > t.Interval {
		t.Timeout = t.Interval
	}
	if t.FailureThreshold <= 0 {
		t.FailureThreshold = egressv1.DefaultFailureThreshold
	}
	return t
}

// Status is what the Prober knows about a target.
type Status struct {
	Addr netip.AddrPort
	// Up is false once FailureThreshold probes in a row failed, and true again after one
	// answered probe.
	Up bool
	// Draining is the draining bit of the last reply.
	Draining bool
	// Probed is false until the first probe was answered or timed out; until then Up holds
	// the Prober's initial assumption.
	Probed bool
	// Failures is the number of consecutive failed probes.
	Failures int
	// RTT of the last answered probe.
	RTT time.Duration
	// Since is when Up last changed (or the target was added).
	Since time.Time
}

// Options of a Prober.
type Options struct {
	// OnChange is called, on the goroutine running Run, whenever a target's Up or Draining
	// changes. It must not block.
	OnChange func(Status)
	// StartDown makes new targets start down until their first answer. The default is to
	// start up: a gateway the coordinator lists as Active takes traffic at once, and is
	// dropped after FailureThreshold misses.
	StartDown bool
}

type target struct {
	cfg         Target
	st          Status
	outstanding bool
	seq         uint64
	sentAt      time.Time
	deadline    time.Time
	next        time.Time
}

type reply struct {
	pkt Packet
	at  time.Time
}

// Prober probes a set of targets from one UDP socket. Its methods are safe for concurrent use.
type Prober struct {
	conn net.PacketConn
	opts Options

	mu      sync.Mutex
	targets map[netip.AddrPort]*target
	bySeq   map[uint64]netip.AddrPort
	seq     uint64
	wake    chan struct{}
}

// NewProber returns a Prober that sends from conn (an unconnected UDP socket, e.g. from
// net.ListenPacket("udp4", ":0")) once Run is called. Run closes conn.
func NewProber(conn net.PacketConn, opts Options) *Prober {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &Prober{
		conn:    conn,
		opts:    opts,
		targets: map[netip.AddrPort]*target{},
		bySeq:   map[uint64]netip.AddrPort{},
		// A random start makes replies to an earlier Prober's probes (and guesses) miss.
		seq:  binary.BigEndian.Uint64(b[:]),
		wake: make(chan struct{}, 1),
	}
}

// SetTargets replaces the set of targets. Targets already present keep their status; new ones
// are probed at once.
func (p *Prober) SetTargets(targets []Target) {
	p.mu.Lock()
	want := map[netip.AddrPort]Target{}
	for _, t := range targets {
		want[t.Addr] = t.withDefaults()
	}
	for addr, t := range p.targets {
		if _, ok := want[addr]; !ok {
			if t.outstanding {
				delete(p.bySeq, t.seq)
			}
			delete(p.targets, addr)
		}
	}
	now := time.Now()
	for addr, cfg := range want {
		if t, ok := p.targets[addr]; ok {
			if t.cfg.Interval != cfg.Interval && t.next.After(now.Add(cfg.Interval)) {
				t.next = now.Add(cfg.Interval)
			}
			t.cfg = cfg
			continue
		}
		p.targets[addr] = &target{cfg: cfg, next: now,
			st: Status{Addr: addr, Up: !p.opts.StartDown, Since: now}}
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Status returns the status of one target.
func (p *Prober) Status(addr netip.AddrPort) (Status, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.targets[addr]
	if !ok {
		return Status{}, false
	}
	return t.st, true
}

// Statuses returns the status of every target, sorted by address.
func (p *Prober) Statuses() []Status {
	p.mu.Lock()
	out := make([]Status, 0, len(p.targets))
	for _, t := range p.targets {
		out = append(out, t.st)
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b Status) int { return a.Addr.Compare(b.Addr) })
	return out
}

// Run probes until ctx ends, then closes the socket and returns nil.
func (p *Prober) Run(ctx context.Context) error {
	replies := make(chan reply, 64)
	// The reader ends when the socket closes; readDone lets Run wait for it, readErr carries
	// its error when it ends first.
	readErr := make(chan error, 1)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		readErr <- p.read(ctx, replies)
	}()
	defer func() {
		_ = p.conn.Close()
		<-readDone
	}()

	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		var changes []Status
		select {
		case <-ctx.Done():
			return nil
		case err := <-readErr:
			if ctx.Err() != nil {
				return nil
			}
			return err
		case r := <-replies:
			changes = p.onReply(r)
		case <-timer.C:
		case <-p.wake:
		}
		sends, more, next := p.step(time.Now())
		changes = append(changes, more...)
		for _, s := range sends {
			b := s.pkt.Marshal()
			// A failed send shows up as a timeout.
			_, _ = p.conn.WriteTo(b[:], net.UDPAddrFromAddrPort(s.addr))
		}
		if p.opts.OnChange != nil {
			for _, c := range changes {
				p.opts.OnChange(c)
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
	}
}

func (p *Prober) read(ctx context.Context, out chan<- reply) error {
	buf := make([]byte, 64)
	for {
		n, _, err := p.conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return err
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		at := time.Now()
		pkt, err := Parse(buf[:n])
		if err != nil || !pkt.Reply() {
			continue
		}
		select {
		case out <- reply{pkt: pkt, at: at}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// onReply matches a reply by sequence number only: a responder bound to the wildcard address
// may answer from another of its node's addresses than the one probed.
func (p *Prober) onReply(r reply) []Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	addr, ok := p.bySeq[r.pkt.Seq]
	if !ok {
		return nil // late, duplicate or foreign
	}
	delete(p.bySeq, r.pkt.Seq)
	t := p.targets[addr]
	t.outstanding = false
	before := t.st
	t.st.Probed = true
	t.st.Failures = 0
	t.st.RTT = r.at.Sub(t.sentAt)
	t.st.Draining = r.pkt.Draining()
	if !t.st.Up {
		t.st.Up = true
		t.st.Since = r.at
	}
	if before.Up != t.st.Up || before.Draining != t.st.Draining {
		return []Status{t.st}
	}
	return nil
}

type send struct {
	addr netip.AddrPort
	pkt  Packet
}

func (t *target) fail(now time.Time) bool {
	t.outstanding = false
	t.st.Probed = true
	t.st.Failures++
	if t.st.Up && t.st.Failures >= t.cfg.FailureThreshold {
		t.st.Up = false
		t.st.Since = now
		return true
	}
	return false
}

// step counts timed-out probes, picks the probes due now and returns when to wake next.
func (p *Prober) step(now time.Time) (sends []send, changes []Status, next time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	earliest := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for addr, t := range p.targets {
		if t.outstanding && !now.Before(t.deadline) {
			delete(p.bySeq, t.seq)
			if t.fail(now) {
				changes = append(changes, t.st)
			}
		}
		if !now.Before(t.next) {
			if t.outstanding { // only when a timeout was longer than the interval
				delete(p.bySeq, t.seq)
				if t.fail(now) {
					changes = append(changes, t.st)
				}
			}
			p.seq++
			t.seq = p.seq
			t.outstanding = true
			t.sentAt = now
			t.deadline = now.Add(t.cfg.Timeout)
			p.bySeq[t.seq] = addr
			t.next = t.next.Add(t.cfg.Interval)
			if !t.next.After(now) {
				t.next = now.Add(t.cfg.Interval)
			}
			sends = append(sends, send{addr: addr, pkt: Packet{Seq: t.seq}})
		}
		if t.outstanding {
			earliest(t.deadline)
		}
		earliest(t.next)
	}
	return sends, changes, next
}
