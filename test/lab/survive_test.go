package lab

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
)

// TestConnsFollowEgressIP is issue 14's long-lived connection goal on one zone: zone a's
// holder of its egress IP cold-crashes (all its state, conntrack included, gone), the IP moves
// to the zone's other gateway (EC2 timing: the move takes seconds), and every established
// connection that left with that IP before the crash carries data again afterwards, seen by
// the echo server from the same address and port. Connections through the other zone's
// gateway never break.
func TestConnsFollowEgressIP(t *testing.T) {
	skipUnlessRoot(t)
	skipUnlessBinaries(t)
	l := upLab(t, Config{Zones: 2, GatewaysPerZone: 2, Timing: "aws", BinDir: binDir(), NotReadyAfter: 2 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := l.ApplyDemoPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	before, err := l.WaitFor(ctx, 3*time.Minute, "gateway ready", l.AllActive)
	if err != nil {
		t.Fatalf("%v\ncontroller log:\n%s", err, Tail(l.LogPath(""), 20))
	}
	// The default timeout: the move is seconds of EC2 timing plus TCP's backoff, and the
	// connections wait for an echo as long as the datapath holds them (DefaultConnTimeout).
	conns, victim, ip := connsThroughZoneA(ctx, t, l, before)
	time.Sleep(time.Second)

	inc, err := l.ColdCrash(ctx, victim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Restore(context.WithoutCancel(ctx), victim) })
	moved, err := l.WaitFor(ctx, 2*time.Minute, ip+" on "+victim+"'s zone peer", func(v GatewayView) bool {
		return v.Holders[ip] != "" && v.Holders[ip] != victim && v.States[v.Holders[ip]] == string(egressv1.GatewayActive)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s cold-crashed; %s Active on %s %s after the crash", victim, ip, moved.Holders[ip], time.Since(inc.At).Round(time.Millisecond))

	// Wait (bounded by the hold and the connections' timeout) until every connection through
	// ip either echoes again after the move or broke.
	through := func() (out []ConnRecord) {
		for _, r := range conns.Records() {
			if s, ok := r.segmentBefore(inc.At); ok && sourceIP(s.Source) == ip {
				out = append(out, r)
			}
		}
		return out
	}
	if len(through()) == 0 {
		t.Fatalf("no long-lived connection through %s before the crash: %v", ip, conns.Records())
	}
	movedAt := time.Now()
	deadline := movedAt.Add(90 * time.Second)
	for time.Now().Before(deadline) {
		pending := 0
		for _, r := range through() {
			if r.Closed.IsZero() && !r.LastEcho().After(movedAt) {
				pending++
			}
		}
		if pending == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	end := time.Now()
	res := ConnsAt(conns.Records(), Event{At: inc.At, End: end}, map[string]bool{ip: true})
	var report strings.Builder
	for _, r := range through() {
		before, _ := r.segmentBefore(inc.At)
		after := r.Segments[len(r.Segments)-1]
		fmt.Fprintf(&report, "\n  conn %d %s %s: before %s, last %s at +%s, closed %v %s", r.ID, r.Pod, r.Local, before.Source,
			after.Source, after.Last.Sub(inc.At).Round(time.Millisecond), !r.Closed.IsZero(), r.Err)
		switch {
		case !r.Closed.IsZero():
			t.Errorf("connection %d from %s through %s broke: %s", r.ID, r.Pod, before.Source, r.Err)
		case !after.Last.After(movedAt):
			t.Errorf("connection %d from %s through %s: no echo since %s moved (last at +%s)", r.ID, r.Pod, before.Source, ip,
				after.Last.Sub(inc.At).Round(time.Millisecond))
		case after.Source != before.Source:
			t.Errorf("connection %d from %s: seen from %s after the move, %s before", r.ID, r.Pod, after.Source, before.Source)
		}
	}
	t.Logf("FIGURE connections through %s surviving its move: %d/%d (same address:port %d); through the other gateways %d, broken %d%s",
		ip, countSurvived(through(), movedAt), len(through()), res.ThroughFailedSameSource, res.ThroughSurvivors, res.SurvivorsBroken, report.String())
	if res.SurvivorsBroken != 0 {
		for _, o := range res.Conns {
			if !o.ThroughFailed && !o.Survived {
				t.Errorf("connection %d from %s through %s (not %s's) broke: %s", o.ID, o.Pod, o.Before, victim, o.Err)
			}
		}
	}
	if t.Failed() {
		t.Logf("%s's log:\n%s", moved.Holders[ip], Tail(l.LogPath(moved.Holders[ip]), 30))
	}
}

// countSurvived counts the records still open with an echo after t.
func countSurvived(recs []ConnRecord, t time.Time) int {
	return len(slices.DeleteFunc(slices.Clone(recs), func(r ConnRecord) bool {
		return !r.Closed.IsZero() || !r.LastEcho().After(t)
	}))
}

// TestConnsSurviveMoveBack drains the holder of zone a's egress IP past the grace period, so the
// IP moves to the zone's other gateway, then drains that one, so the IP moves back: what a
// rolling upgrade of a gateway pool does. Long-lived connections through the IP must survive
// both moves with the same address and port. The second move lands on a gateway that carried
// the connections before: if it kept their old conntrack entries, their segments, far past the
// sequence numbers those entries last saw, would be judged out of window and leave untranslated.
func TestConnsSurviveMoveBack(t *testing.T) {
	skipUnlessRoot(t)
	skipUnlessBinaries(t)
	l := upLab(t, Config{Zones: 2, GatewaysPerZone: 2, Timing: "aws", BinDir: binDir(), NotReadyAfter: 2 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	if err := l.ApplyDemoPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	before, err := l.WaitFor(ctx, 3*time.Minute, "gateway ready", l.AllActive)
	if err != nil {
		t.Fatalf("%v\ncontroller log:\n%s", err, Tail(l.LogPath(""), 20))
	}
	conns, first, ip := connsThroughZoneA(ctx, t, l, before)
	var second string
	for _, n := range l.Nodes {
		if n.Gateway && n.Zone != nil && n.Zone.Name == zoneName(0) && n.Name != first {
			second = n.Name
		}
	}
	if second == "" {
		t.Fatalf("zone %s has no second gateway", zoneName(0))
	}
	time.Sleep(time.Second)
	start := time.Now()
	through := func() (out []ConnRecord) {
		for _, r := range conns.Records() {
			if s, ok := r.segmentBefore(start); ok && sourceIP(s.Source) == ip {
				out = append(out, r)
			}
		}
		return out
	}
	if len(through()) == 0 {
		t.Fatalf("no long-lived connection through %s: %v", ip, conns.Records())
	}
	grace, err := l.LongDrain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// move drains from past its grace period, waits for ip to be Active on to, then for every
	// connection through ip to echo after that (bounded by TCP's backoff and the datapath's
	// hold) or break, and reports when ip landed.
	move := func(from, to string) time.Time {
		t.Helper()
		if _, err := l.DrainFor(ctx, grace, from); err != nil {
			t.Fatal(err)
		}
		if _, err := l.WaitFor(ctx, 2*time.Minute, ip+" on "+to, func(v GatewayView) bool {
			return v.Holders[ip] == to && v.States[to] == string(egressv1.GatewayActive)
		}); err != nil {
			t.Fatal(err)
		}
		landed := time.Now()
		for deadline := landed.Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			pending := 0
			for _, r := range through() {
				if r.Closed.IsZero() && !r.LastEcho().After(landed) {
					pending++
				}
			}
			if pending == 0 {
				break
			}
		}
		t.Logf("%s drained past its grace period; %s Active on %s; %d/%d connections through it echo since", from, ip, to,
			countSurvived(through(), landed), len(through()))
		return landed
	}
	move(first, second)
	back := move(second, first)
	var report strings.Builder
	for _, r := range through() {
		was, _ := r.segmentBefore(start)
		last := r.Segments[len(r.Segments)-1]
		fmt.Fprintf(&report, "\n  conn %d %s %s: before %s, last %s at +%s, closed %v %s", r.ID, r.Pod, r.Local, was.Source,
			last.Source, last.Last.Sub(start).Round(time.Millisecond), !r.Closed.IsZero(), r.Err)
		switch {
		case !r.Closed.IsZero():
			t.Errorf("connection %d from %s through %s broke: %s", r.ID, r.Pod, was.Source, r.Err)
		case !last.Last.After(back):
			t.Errorf("connection %d from %s through %s: no echo since %s came back to %s (last at +%s)", r.ID, r.Pod, was.Source,
				ip, first, last.Last.Sub(start).Round(time.Millisecond))
		case last.Source != was.Source:
			t.Errorf("connection %d from %s: seen from %s after the moves, %s before", r.ID, r.Pod, last.Source, was.Source)
		}
	}
	t.Logf("FIGURE connections through %s surviving its move to %s and back: %d/%d%s", ip, second,
		countSurvived(through(), back), len(through()), report.String())
	if t.Failed() {
		t.Logf("%s's log:\n%s", first, Tail(l.LogPath(first), 30))
	}
}

// connsThroughZoneA opens long-lived connections through every egress IP of before and returns
// them with zone a's holder and its one egress IP.
func connsThroughZoneA(ctx context.Context, t *testing.T, l *Lab, before GatewayView) (*ConnSet, string, string) {
	t.Helper()
	conns := l.NewConns(ctx, ConnOptions{})
	t.Cleanup(conns.Close)
	if err := conns.Open(ctx, egressSources(before)); err != nil {
		t.Fatal(err)
	}
	holder := holderIn(t, before, l, zoneName(0))
	held := before.HeldBy(holder)
	if len(held) != 1 {
		t.Fatalf("%s holds %v, want zone %s's one egress IP", holder, held, zoneName(0))
	}
	return conns, holder, held[0]
}
