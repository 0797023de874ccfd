package lab

import (
	"fmt"
	"strings"
	"testing"
	"time"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/gateway/contract"
)

// TestAgentCrashLeaseHold is make-before-break for a gateway whose agent dies while its datapath
// forwards (2 zones x 2 gateways, EC2 timing): the agent of zone a's holder stays down past its
// Lease (contract.AgentLeaseDuration) and the coordinator's requeue, so the coordinator fails
// the gateway (AgentLeaseExpired) and moves its egress IP to the zone's Standby, which the
// fabric delivers seconds later. The workers keep the flows pinned to the old holder there
// (their probes of it answer) until the address landed on the new holder, then the pins move
// with the address. Checked: every long-lived connection through the old holder survives from
// the same address and port, and none is silent for as long as the cloud took to deliver the
// move (with the old behaviour their segments were held at the worker from the failure until
// the new holder was listed, at least that long); connections through the other gateways never
// break; once settled the egress IP set is the one before. Printed: the longest silence, the
// cloud's delay and the undelivered-source packets during the event.
func TestAgentCrashLeaseHold(t *testing.T) {
	l, ctx, before, _ := monitoredLab(t, Config{Zones: 2, GatewaysPerZone: 2, Timing: "aws"})
	conns, victim, ip := connsThroughZoneA(ctx, t, l, before)
	seen := map[string]bool{ip: true, cmpOr(before.Public[ip], ip): true}
	time.Sleep(time.Second)
	undelivered := func() uint64 {
		t.Helper()
		us, err := l.UndeliveredSources()
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, u := range us {
			n += u.Packets
		}
		return n
	}
	u0, moves0 := undelivered(), len(l.Moves())

	// Down past the Lease and the coordinator's requeue (up to another AgentLeaseDuration),
	// plus the move: the agent comes back after the address landed on the Standby.
	downFor := 2*contract.AgentLeaseDuration + 10*time.Second
	type crash struct {
		inc Incident
		err error
	}
	crashed := make(chan crash, 1)
	at := time.Now()
	go func() {
		inc, err := l.CrashAgent(ctx, downFor, victim)
		crashed <- crash{inc, err}
	}()
	moved, err := l.WaitFor(ctx, 2*time.Minute, ip+" Active on "+victim+"'s zone peer", func(v GatewayView) bool {
		return v.Holders[ip] != "" && v.Holders[ip] != victim && v.States[v.Holders[ip]] == string(egressv1.GatewayActive)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s's agent killed; %s Active on %s %s after", victim, ip, moved.Holders[ip], time.Since(at).Round(time.Millisecond))
	c := <-crashed
	if c.err != nil {
		t.Fatal(c.err)
	}
	inc := c.inc
	after, err := l.WaitFor(ctx, 2*time.Minute, "settled", func(v GatewayView) bool {
		return v.Ready && strings.Join(v.EgressIPs, ",") == strings.Join(before.EgressIPs, ",") && v.States[victim] != string(egressv1.GatewayUnhealthy)
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := conns.WaitFresh(ctx, connWait); n != 0 {
		t.Logf("%d connections without a fresh echo after %s", n, connWait)
	}
	end := time.Now()
	u := undelivered() - u0

	// The cloud's delay for this move: accepted to delivered.
	var delay time.Duration
	for _, m := range l.Moves()[moves0:] {
		if m.IP.String() == ip && m.To.Instance != "" {
			delay = m.DeliveredAt.Sub(m.AcceptedAt)
		}
	}
	if delay == 0 {
		t.Fatalf("no move of %s in the cloud's log: %+v", ip, l.Moves()[moves0:])
	}
	res := ConnsAt(conns.Records(), Event{At: inc.At, End: end}, seen)
	var longest time.Duration
	var report strings.Builder
	for _, o := range res.Conns {
		if !o.ThroughFailed {
			if !o.Survived {
				t.Errorf("connection %d from %s through %s (not %s's) broke: %s", o.ID, o.Pod, o.Before, victim, o.Err)
			}
			continue
		}
		longest = max(longest, o.MaxGap)
		fmt.Fprintf(&report, "\n  conn %d %s: %s -> %s, longest silence %s, survived %v %s", o.ID, o.Pod, o.Before, o.After,
			o.MaxGap.Round(time.Millisecond), o.Survived, o.Err)
		switch {
		case !o.Survived:
			t.Errorf("connection %d from %s through %s broke: %s", o.ID, o.Pod, o.Before, o.Err)
		case !o.SameSource:
			t.Errorf("connection %d from %s: seen from %s after the move, %s before", o.ID, o.Pod, o.After, o.Before)
		case o.MaxGap >= delay:
			t.Errorf("connection %d from %s through %s was silent %s, as long as the cloud's move (%s): its segments waited for the move instead of going on through %s",
				o.ID, o.Pod, o.Before, o.MaxGap.Round(time.Millisecond), delay.Round(time.Millisecond), victim)
		}
	}
	if res.ThroughFailed == 0 {
		t.Fatalf("no long-lived connection through %s before the crash: %v", ip, conns.Records())
	}
	t.Logf("FIGURE agent of %s down %s: %s moved to %s, the cloud delivered it %s after accepting; %d connections through it, longest silence %s; undelivered-source packets %d; IP set %v -> %v%s",
		victim, inc.RestoredAt.Sub(inc.At).Round(time.Millisecond), ip, moved.Holders[ip], delay.Round(time.Millisecond),
		res.ThroughFailed, longest.Round(time.Millisecond), u, before.EgressIPs, after.EgressIPs, report.String())
	if t.Failed() {
		t.Logf("%s's log:\n%s", moved.Holders[ip], Tail(l.LogPath(moved.Holders[ip]), 30))
	}
}
