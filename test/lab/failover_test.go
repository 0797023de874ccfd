package lab

import (
	"context"
	"os"
	"slices"
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

// monitoredLab brings up a two-zone lab with egressd and the demo policy, waits until every
// gateway is Active and starts the monitor. It returns the lab, a context for the test (4
// minutes), the gateway as it was then, and the monitor; both stop when the test ends.
func monitoredLab(t *testing.T) (*Lab, context.Context, GatewayView, *Monitor) {
	t.Helper()
	skipUnlessRoot(t)
	skipUnlessBinaries(t)
	l := upLab(t, Config{Zones: 2, BinDir: binDir(), NotReadyAfter: 2 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	if err := l.ApplyDemoPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	before, err := l.WaitFor(ctx, 2*time.Minute, "gateway ready", l.AllActive)
	if err != nil {
		t.Fatalf("%v\ncontroller log:\n%s", err, Tail(l.LogPath(""), 20))
	}
	mon := NewMonitor(l.Monitor, l.Echo)
	mctx, mcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); mon.Run(mctx) }()
	t.Cleanup(func() { mcancel(); <-done })
	return l, ctx, before, mon
}

// TestFailover brings up a two-zone lab with egressd, checks that the monitor's requests leave
// through both egress IPs, reboots one gateway and checks the gateway comes back whole with the
// same egress IP set and the monitor sees the same IPs as before.
func TestFailover(t *testing.T) {
	l, ctx, before, mon := monitoredLab(t)
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
	r := Analyze(mon.Samples(), Event{Name: "reboot gw-a1", At: at, End: end})
	t.Logf("reboot gw-a1: %d requests, %d failed, outage %s, longest gap %s", r.Requests, r.Failed, r.Outage, r.LongestGap)
}
