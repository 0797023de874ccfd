package bpf

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// readEvents drains the flow events written so far.
func readEvents(tb testing.TB, r *FlowReader) []FlowEvent {
	tb.Helper()
	var out []FlowEvent
	for {
		r.SetDeadline(time.Now().Add(20 * time.Millisecond))
		e, err := r.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		must(tb, err)
		out = append(out, e)
	}
}

// TestObserveOnlyWhenEnabled: the classifier writes no flow event while observation is off,
// one per packet at its verdict (steered with gateway and egress IP, or dropped with the
// reason) once it is on, about 1 in N with sampling, and none again once it is off.
func TestObserveOnlyWhenEnabled(t *testing.T) {
	d := setup(t)
	egress := netip.MustParseAddr("198.51.100.20")
	gw := gwA
	gw.Egress = egress
	must(t, d.SetGroup(5, []Gateway{gw}))
	must(t, d.SetGroup(7, nil)) // no gateway: drops no_gateway
	must(t, d.SetRule(RuleKey{1, netip.MustParsePrefix("192.0.2.0/24")}, Rule{Group: 7}))
	r, err := d.OpenFlowReader()
	must(t, err)
	defer r.Close()
	steer := packet(pod4, dst4, unix.IPPROTO_TCP, 40000, 443)
	drop := packet(pod4, netip.MustParseAddr("192.0.2.9"), unix.IPPROTO_UDP, 40001, 53)

	for range 10 {
		run(t, d, steer)
		run(t, d, drop)
	}
	if ev := readEvents(t, r); len(ev) != 0 {
		t.Fatalf("observation off: %d events, want none: %+v", len(ev), ev[0])
	}

	must(t, d.SetObserve(ObserveConfig{Enabled: true}))
	if got := run(t, d, steer); got != actSteered {
		t.Fatalf("steer verdict %#x", got)
	}
	if got := run(t, d, drop); got != actShot {
		t.Fatalf("drop verdict %#x", got)
	}
	ev := readEvents(t, r)
	if len(ev) != 2 {
		t.Fatalf("observation on: %d events, want 2: %+v", len(ev), ev)
	}
	s := ev[0]
	if s.Point != ObservePod || s.Verdict != VerdictForwarded || s.Src != pod4 || s.Dst != dst4 ||
		s.Sport != 40000 || s.Dport != 443 || s.Proto != unix.IPPROTO_TCP || s.Group != 5 ||
		s.Gateway != gwA.ID || s.Underlay != gwA.Underlay || s.Egress != egress || s.Time == 0 {
		t.Errorf("steered event: %+v", s)
	}
	dr := ev[1]
	if dr.Verdict != VerdictDropped || dr.ReasonName() != "no_gateway" || dr.Group != 7 || dr.Gateway != 0 ||
		dr.Dst != netip.MustParseAddr("192.0.2.9") || dr.Dport != 53 {
		t.Errorf("dropped event: %+v (reason %q)", dr, dr.ReasonName())
	}

	must(t, d.SetObserve(ObserveConfig{Enabled: true, Sample: 4}))
	const n = 400
	for range n {
		run(t, d, steer)
	}
	if got := len(readEvents(t, r)); got < n/4/2 || got > n/4*2 {
		t.Errorf("1 in 4 of %d packets: %d events", n, got)
	}

	must(t, d.SetObserve(ObserveConfig{}))
	run(t, d, steer)
	if ev := readEvents(t, r); len(ev) != 0 {
		t.Errorf("observation off again: %d events", len(ev))
	}
}
