package probe

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func TestPacketRoundTrip(t *testing.T) {
	for _, p := range []Packet{{}, {Flags: FlagReply | FlagDraining, Seq: 1<<63 + 5}, {Seq: 42}} {
		b := p.Marshal()
		got, err := Parse(b[:])
		if err != nil || got != p {
			t.Errorf("Parse(Marshal(%+v)) = %+v, %v", p, got, err)
		}
	}
	good := Packet{Seq: 7}.Marshal()
	if string(good[:4]) != "EGRP" || good[4] != 1 || good[15] != 7 {
		t.Errorf("wire format: % x", good)
	}
	badMagic, badVersion := good, good
	badMagic[0] = 'X'
	badVersion[4] = 2
	for name, b := range map[string][]byte{
		"short": good[:15], "long": append(good[:], 0), "magic": badMagic[:], "version": badVersion[:],
	} {
		if _, err := Parse(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Parse error %v, want ErrMalformed", name, err)
		}
	}
}

func listen(t *testing.T, addr string) net.PacketConn {
	t.Helper()
	c, err := net.ListenPacket("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// responder runs a Responder on addr ("127.0.0.1:0" for any port) and returns it with a stop
// function that waits for Run to return.
func responder(t *testing.T, addr string) (*Responder, netip.AddrPort, func()) {
	t.Helper()
	r := NewResponder(listen(t, addr))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Responder.Run: %v", err)
		}
	}
	t.Cleanup(func() {
		cancel()
	})
	return r, r.Addr().(*net.UDPAddr).AddrPort(), stop
}

func TestResponder(t *testing.T) {
	r, addr, stop := responder(t, "127.0.0.1:0")
	defer stop()
	c := listen(t, "127.0.0.1:0")
	defer c.Close()
	ask := func(p []byte) (Packet, error) {
		if _, err := c.WriteTo(p, net.UDPAddrFromAddrPort(addr)); err != nil {
			return Packet{}, err
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		buf := make([]byte, 64)
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return Packet{}, err
		}
		return Parse(buf[:n])
	}
	req := Packet{Seq: 99}.Marshal()
	got, err := ask(req[:])
	if err != nil || got != (Packet{Flags: FlagReply, Seq: 99}) {
		t.Fatalf("reply %+v, %v", got, err)
	}
	r.SetDraining(true)
	got, err = ask(req[:])
	if err != nil || got != (Packet{Flags: FlagReply | FlagDraining, Seq: 99}) {
		t.Fatalf("draining reply %+v, %v", got, err)
	}
	// Garbage and replies get no answer (a reply loop between two responders is impossible).
	rep := Packet{Flags: FlagReply, Seq: 1}.Marshal()
	for _, b := range [][]byte{[]byte("hello"), rep[:]} {
		if got, err := ask(b); err == nil {
			t.Errorf("answer %+v to %q", got, b)
		}
	}
}

type recorder struct {
	mu  sync.Mutex
	ch  chan Status
	all []Status
}

func newRecorder() *recorder { return &recorder{ch: make(chan Status, 100)} }

func (r *recorder) onChange(s Status) {
	r.mu.Lock()
	r.all = append(r.all, s)
	r.mu.Unlock()
	r.ch <- s
}

func (r *recorder) wait(t *testing.T, what string, ok func(Status) bool) Status {
	t.Helper()
	timeout := time.After(3 * time.Second)
	for {
		select {
		case s := <-r.ch:
			if ok(s) {
				return s
			}
		case <-timeout:
			t.Fatalf("no change: %s", what)
		}
	}
}

func runProber(t *testing.T, opts Options, targets ...Target) *Prober {
	t.Helper()
	p := NewProber(listen(t, "127.0.0.1:0"), opts)
	p.SetTargets(targets)
	startProber(t, p)
	return p
}

// startProber runs p until the test ends.
func startProber(t *testing.T, p *Prober) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Prober.Run: %v", err)
		}
	})
}

func TestProberDownAndUp(t *testing.T) {
	r, addr, stop := responder(t, "127.0.0.1:0")
	rec := newRecorder()
	const interval, threshold = 20 * time.Millisecond, 3
	p := runProber(t, Options{OnChange: rec.onChange},
		Target{Addr: addr, Interval: interval, Timeout: 10 * time.Millisecond, FailureThreshold: threshold})

	waitFor(t, "first answer", func() bool { s, _ := p.Status(addr); return s.Probed && s.Up && s.RTT > 0 })

	r.SetDraining(true)
	rec.wait(t, "draining", func(s Status) bool { return s.Up && s.Draining })

	stopped := time.Now()
	stop()
	s := rec.wait(t, "down", func(s Status) bool { return !s.Up })
	detect := s.Since.Sub(stopped)
	t.Logf("detected a dead responder in %v (interval %v, threshold %d)", detect, interval, threshold)
	if s.Failures != threshold {
		t.Errorf("failures at down = %d, want %d", s.Failures, threshold)
	}
	if min := (threshold-1)*interval + 10*time.Millisecond; detect < min-5*time.Millisecond {
		t.Errorf("down after %v, before %d probes could fail", detect, threshold)
	}

	// A responder back on the same port brings the target up after one answer.
	_, _, stop2 := responder(t, addr.String())
	defer stop2()
	s = rec.wait(t, "up", func(s Status) bool { return s.Up })
	if s.Draining || s.Failures != 0 {
		t.Errorf("after recovery: %+v", s)
	}
}

func TestProberStartDownAndTargets(t *testing.T) {
	_, a, stopA := responder(t, "127.0.0.1:0")
	defer stopA()
	_, b, stopB := responder(t, "127.0.0.1:0")
	defer stopB()
	dead := netip.MustParseAddrPort("127.0.0.1:9") // discard: nobody answers
	rec := newRecorder()
	p := NewProber(listen(t, "127.0.0.1:0"), Options{OnChange: rec.onChange, StartDown: true})
	p.SetTargets([]Target{{Addr: a, Interval: 10 * time.Millisecond}, {Addr: dead, Interval: 10 * time.Millisecond, FailureThreshold: 1}})
	// Checked before Run starts: once it runs, the first probe may answer before any check.
	if s, _ := p.Status(a); s.Up || s.Probed {
		t.Errorf("StartDown target before the first probe: %+v", s)
	}
	startProber(t, p)
	rec.wait(t, "a up", func(s Status) bool { return s.Addr == a && s.Up })
	waitFor(t, "dead probed", func() bool { s, _ := p.Status(dead); return s.Probed && s.Failures >= 2 })
	if s, _ := p.Status(dead); s.Up {
		t.Errorf("dead target up: %+v", s)
	}

	// Replacing the set keeps a's status and drops dead.
	p.SetTargets([]Target{{Addr: a, Interval: 10 * time.Millisecond}, {Addr: b, Interval: 10 * time.Millisecond}})
	rec.wait(t, "b up", func(s Status) bool { return s.Addr == b && s.Up })
	st := p.Statuses()
	if len(st) != 2 || st[0].Addr.Compare(st[1].Addr) > 0 {
		t.Fatalf("statuses: %+v", st)
	}
	if _, ok := p.Status(dead); ok {
		t.Error("removed target still has a status")
	}
	if s, _ := p.Status(a); !s.Up || s.Since.IsZero() {
		t.Errorf("kept target: %+v", s)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
