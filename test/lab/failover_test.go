package lab

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// binDir is where the tests find egressd-agent and egressd-controller.
func binDir() string {
	if d := os.Getenv("EGRESSD_LAB_BIN"); d != "" {
		return d
	}
	return Config{}.binDefault()
}

func skipUnlessBinaries(t testing.TB) {
	t.Helper()
	if err := CheckBinaries(binDir()); err != nil {
		t.Skipf("the lab needs the egressd binaries: %v", err)
	}
}

// monitoredLab brings up a lab with egressd (cfg, with the test's binaries and a 2 s NotReady
// grace) and the demo policy, waits until every gateway is Active or Standby and starts the
// monitors of every zone. It returns the lab, a context for the test (4 minutes), the gateway
// as it was then, and the monitors; both stop when the test ends.
func monitoredLab(t *testing.T, cfg Config) (*Lab, context.Context, GatewayView, Monitors) {
	t.Helper()
	skipUnlessRoot(t)
	skipUnlessBinaries(t)
	cfg.BinDir, cfg.NotReadyAfter = binDir(), 2*time.Second
	l := upLab(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	if err := l.ApplyDemoPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	before, err := l.WaitFor(ctx, 2*time.Minute, "gateway ready", l.AllActive)
	if err != nil {
		t.Fatalf("%v\ncontroller log:\n%s", err, Tail(l.LogPath(""), 20))
	}
	t.Logf("gateway ready %s after the policy: %s", time.Since(start).Round(10*time.Millisecond), before)
	mons := l.NewMonitors()
	mctx, mcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); mons.Run(mctx) }()
	t.Cleanup(func() { mcancel(); <-done })
	return l, ctx, before, mons
}

// TestFailover is the one-gateway-per-zone case (4 × 1): the monitors' requests leave through
// every zone's egress IP; one gateway reboots, its IP has no other holder in its zone and stays
// unplaced until it is back; the gateway comes back whole with the same egress IP set and the
// monitors see the same IPs as before.
func TestFailover(t *testing.T) {
	l, ctx, before, mon := monitoredLab(t, Config{GatewaysPerZone: 1})
	time.Sleep(3 * time.Second)
	seenBefore := sources(mon.Samples())
	wantIPs := egressSources(before)
	if !slices.Equal(seenBefore, wantIPs) {
		t.Fatalf("before the failover the echo server saw %v, want the egress IPs %v", seenBefore, wantIPs)
	}
	at := time.Now()
	if err := l.Reboot(ctx, 4*time.Second, "gw-a1"); err != nil {
		t.Fatal(err)
	}
	after, err := l.WaitFor(ctx, time.Minute, "gateway whole again", l.AllActive)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before.EgressIPs, after.EgressIPs) {
		t.Errorf("egress IP set changed: %v → %v", before.EgressIPs, after.EgressIPs)
	}
	time.Sleep(3 * time.Second)
	end := time.Now()
	seenAfter := sources(mon.Since(end.Add(-2 * time.Second)))
	if !slices.Equal(seenAfter, wantIPs) {
		t.Errorf("after the failover the echo server saw %v, want %v", seenAfter, wantIPs)
	}
	r := Analyze(mon.Samples(), Event{Name: "reboot gw-a1", At: at, End: end, AffectedIPs: before.HeldBy("gw-a1")})
	if r.AffectedFlows == 0 {
		t.Errorf("no flow affected by the reboot of gw-a1, which held %v: %+v", before.HeldBy("gw-a1"), r.Flows)
	}
	t.Logf("reboot gw-a1: %d requests, %d failed, %d of %d flows affected, worst outage %s, longest gap %s",
		r.Requests, r.Failed, r.AffectedFlows, len(r.Flows), r.Outage, r.LongestGap)
}

// TestCrashReport plays one short event on the HA topology (4 zones × 2 gateways) with the
// monitors and the long-lived connections running: zone b's Active gateway crashes, its
// egress IP moves to the zone's Standby, the gateway is restored. It checks the report's
// structure, not its figures: affected flows found, each one's outage measured from the crash
// to a success after it, connections through the other gateways intact, the settle time seen.
func TestCrashReport(t *testing.T) {
	l, ctx, before, mons := monitoredLab(t, Config{})
	conns := l.NewConns(ctx, ConnOptions{})
	t.Cleanup(conns.Close)
	if err := conns.Open(ctx, egressSources(before)); err != nil {
		t.Fatal(err)
	}
	vctx, vcancel := context.WithCancel(ctx)
	t.Cleanup(vcancel)
	views := l.RecordViews(vctx, 50*time.Millisecond)
	time.Sleep(2 * time.Second)

	var victim, ip string
	for a, n := range before.Holders {
		if node := l.Node(n); node != nil && node.Zone.Name == zoneName(1) {
			victim, ip = n, a
		}
	}
	if victim == "" {
		t.Fatalf("no holder of zone %s's egress IP in %v", zoneName(1), before.Holders)
	}
	ev := Event{Name: "crash " + victim, Kind: "crash", Nodes: []string{victim}, AffectedIPs: []string{ip},
		IPSetBefore: before.EgressIPs, At: time.Now()}
	if err := l.Crash(ctx, victim); err != nil {
		t.Fatal(err)
	}
	moved, err := l.WaitFor(ctx, time.Minute, ip+" on "+victim+"'s zone peer", func(v GatewayView) bool {
		return l.ZonesHeld(v) && v.Holders[ip] != victim
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	ev.RestoredAt = time.Now()
	if err := l.Restore(ctx, victim); err != nil {
		t.Fatal(err)
	}
	after, err := l.WaitFor(ctx, time.Minute, "gateway whole again", l.AllActive)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	ev.End, ev.IPSetAfter = time.Now(), after.EgressIPs
	vcancel()
	ev.SettledAt = Settled(views.Views(), ev.At, time.Second, func(v GatewayView) bool {
		return l.ZonesHeld(v) && slices.Equal(v.EgressIPs, before.EgressIPs)
	})
	rep := RunRecord{Samples: mons.Samples(), Events: []Event{ev}, IPSetBefore: before.EgressIPs, IPSetAfter: after.EgressIPs,
		PublicOf: before.Public, Conns: conns.Records()}.Report()
	var out strings.Builder
	rep.WriteTable(&out)
	t.Log(out.String())
	if err := rep.Write(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	r := rep.Events[0]
	t.Logf("%s: %s moved to %s; %d of %d flows affected, worst outage %s, settled after %s; conns %+v",
		ev.Name, ip, moved.Holders[ip], r.AffectedFlows, len(r.Flows), r.Outage, r.Settle, *r.Conns)

	if len(r.Flows) != len(l.Monitors) {
		t.Errorf("%d flows in the report, want one per monitor pod (%d)", len(r.Flows), len(l.Monitors))
	}
	if r.AffectedFlows == 0 || r.NoAffected {
		t.Errorf("no affected flow, though every flow spreads over every zone's IP: %+v", r.Flows)
	}
	for _, f := range r.Flows {
		if f.Affected && (!f.Recovered || f.Outage <= 0 || f.FirstSource == "") {
			t.Errorf("affected flow %s: recovered %v, outage %s from the crash, first source %q", f.Pod, f.Recovered, f.Outage, f.FirstSource)
		}
	}
	if r.SettledAt.IsZero() || r.Settle <= 0 {
		t.Errorf("no settle time from %d views", len(views.Views()))
	}
	c := r.Conns
	if c == nil || c.ThroughFailed == 0 || c.ThroughSurvivors == 0 {
		t.Fatalf("long-lived connections: %+v, want some through %s and some through the other gateways", c, victim)
	}
	if c.SurvivorsBroken != 0 {
		for _, o := range c.Conns {
			if !o.ThroughFailed && !o.Survived {
				t.Errorf("connection %d from %s through %s (not %s's) broke: %s, longest gap %s", o.ID, o.Pod, o.Before, victim, o.Err, o.MaxGap)
			}
		}
	}
	if err := conns.Refill(ctx, egressSources(after)); err != nil {
		t.Errorf("refilling the long-lived connections: %v", err)
	}
}
