package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/test/envtest"
)

// benchEvent is one kind of event BenchmarkFailover plays: run plays trial i on the view just
// before it and returns the incident (At: the crash instant) and the zones whose monitor pods
// it takes down with it (their flows are not the survivors' outage).
type benchEvent struct {
	name string
	run  func(ctx context.Context, l *Lab, i int, v GatewayView) (Incident, []string, error)
}

// benchEvents are the events of issue 14, short and long variants, each aimed at zone i%4's
// Active gateway (the holder of its egress IP).
func benchEvents() []benchEvent {
	target := func(l *Lab, i int, v GatewayView) (string, string, error) {
		zones := l.ZoneNames()
		z := zones[i%len(zones)]
		n := l.HolderIn(v, z)
		if n == "" {
			return "", "", fmt.Errorf("no gateway of zone %s holds an egress IP: %s", z, v)
		}
		return n, z, nil
	}
	// zoneLoss takes down zone i%4 (allBut false) or every zone but that one (allBut true) for
	// down(l), and names the lost zones.
	zoneLoss := func(allBut bool, down func(*Lab) time.Duration) func(context.Context, *Lab, int, GatewayView) (Incident, []string, error) {
		return func(ctx context.Context, l *Lab, i int, v GatewayView) (Incident, []string, error) {
			_, z, err := target(l, i, v)
			if err != nil {
				return Incident{}, nil, err
			}
			lost := []string{z}
			if allBut {
				lost = slices.DeleteFunc(l.ZoneNames(), func(n string) bool { return n == z })
			}
			inc, err := l.LoseZones(ctx, down(l), lost...)
			return inc, lost, err
		}
	}
	one := func(play func(ctx context.Context, l *Lab, node string) (Incident, error)) func(context.Context, *Lab, int, GatewayView) (Incident, []string, error) {
		return func(ctx context.Context, l *Lab, i int, v GatewayView) (Incident, []string, error) {
			n, _, err := target(l, i, v)
			if err != nil {
				return Incident{}, nil, err
			}
			inc, err := play(ctx, l, n)
			return inc, nil, err
		}
	}
	return []benchEvent{
		{"cold-reboot-short", one(func(ctx context.Context, l *Lab, n string) (Incident, error) {
			return l.ColdReboot(ctx, l.ShortDown(), n)
		})},
		{"cold-reboot-long", one(func(ctx context.Context, l *Lab, n string) (Incident, error) {
			return l.ColdReboot(ctx, l.LongDown(), n)
		})},
		{"agent-crash-short", one(func(ctx context.Context, l *Lab, n string) (Incident, error) {
			return l.CrashAgent(ctx, l.ShortDown(), n)
		})},
		{"agent-crash-long", one(func(ctx context.Context, l *Lab, n string) (Incident, error) {
			return l.CrashAgent(ctx, l.LongDown(), n)
		})},
		{"partition-short", one(func(ctx context.Context, l *Lab, n string) (Incident, error) {
			return l.PartitionFor(ctx, l.ShortDown(), n)
		})},
		{"partition-long", one(func(ctx context.Context, l *Lab, n string) (Incident, error) {
			return l.PartitionFor(ctx, l.LongDown(), n)
		})},
		{"zone-loss-short", zoneLoss(false, func(l *Lab) time.Duration { return l.ShortDown() })},
		{"zone-loss-long", zoneLoss(false, func(l *Lab) time.Duration { return l.LongDown() })},
		{"three-zones-lost-short", zoneLoss(true, func(l *Lab) time.Duration { return l.ShortDown() })},
		{"three-zones-lost-long", zoneLoss(true, func(l *Lab) time.Duration { return l.LongDown() })},
		{"drain-long", one(func(ctx context.Context, l *Lab, n string) (Incident, error) {
			d, err := l.LongDrain(ctx)
			if err != nil {
				return Incident{}, err
			}
			return l.DrainFor(ctx, d, n)
		})},
		{"controller-crash-in-move", one(func(ctx context.Context, l *Lab, n string) (Incident, error) {
			// The gateway's cold crash starts the move; the controller dies while the cloud
			// call is under way. The crash is the instant the measurement anchors on.
			var crash Incident
			_, err := l.CrashControllerInMove(ctx, time.Minute, l.ShortDown(), func() error {
				var err error
				crash, err = l.ColdCrash(ctx, n)
				return err
			})
			if err == nil {
				err = l.Restore(ctx, n)
				crash.RestoredAt = time.Now()
			}
			return crash, err
		})},
		{"apiserver-restart-short", func(ctx context.Context, l *Lab, _ int, _ GatewayView) (Incident, []string, error) {
			inc, err := l.RestartAPIServer(ctx, l.ShortDown())
			return inc, nil, err
		}},
		{"apiserver-restart-long", func(ctx context.Context, l *Lab, _ int, _ GatewayView) (Incident, []string, error) {
			inc, err := l.RestartAPIServer(ctx, l.LongDown())
			return inc, nil, err
		}},
	}
}

// BenchmarkFailover plays each event of benchEvents EGRESSD_LAB_TRIALS times (default 20) on
// one lab of 4 zones × EGRESSD_LAB_GATEWAYS_PER_ZONE gateways (default 2) whose simulated EC2
// has the timing profile EGRESSD_LAB_TIMING (default aws; azure is the second case), with a
// monitor flow in every zone and long-lived connections through every gateway, and reports
// per event: the crash-anchored outage of the affected flows (p50/p99/max; trials with no
// affected flow apart), the time until the IP set settled, the cloud moves and the requests
// that failed during them, packets that left with an undelivered source, and connection
// survival. EGRESSD_LAB_EVENTS (comma-separated names) picks events; EGRESSD_LAB_PROBE_INTERVAL
// sets the gateway's probe interval (what bounds the outage). The figures are printed
// and written to out/bench-lab-<timing>.txt, every sample to out/bench-lab-<timing>.json. One
// run is the whole measurement, whatever b.N.
func BenchmarkFailover(b *testing.B) {
	skipUnlessRoot(b)
	skipUnlessBinaries(b)
	trials := envInt("EGRESSD_LAB_TRIALS", 20)
	gpz := envInt("EGRESSD_LAB_GATEWAYS_PER_ZONE", 2)
	timing := cmpOr(os.Getenv("EGRESSD_LAB_TIMING"), "aws")
	events := benchEvents()
	if only := os.Getenv("EGRESSD_LAB_EVENTS"); only != "" {
		want := strings.Split(only, ",")
		events = slices.DeleteFunc(events, func(e benchEvent) bool { return !slices.Contains(want, e.name) })
	}
	probe, err := time.ParseDuration(cmpOr(os.Getenv("EGRESSD_LAB_PROBE_INTERVAL"), "0s"))
	if err != nil {
		b.Fatalf("EGRESSD_LAB_PROBE_INTERVAL: %v", err)
	}
	l := upLab(b, Config{Zones: 4, GatewaysPerZone: gpz, Timing: timing, BinDir: binDir(), ProbeInterval: probe})
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(trials*len(events))*3*time.Minute+10*time.Minute)
	defer cancel()
	if err := l.ApplyDemoPolicy(ctx); err != nil {
		b.Fatal(err)
	}
	wholeTimeout := 3 * time.Minute
	if strings.HasPrefix(timing, "azure") {
		wholeTimeout = 10 * time.Minute
	}
	start, err := l.WaitFor(ctx, wholeTimeout, "gateway ready", l.AllActive)
	if err != nil {
		b.Fatal(err)
	}
	mctx, mcancel := context.WithCancel(ctx)
	mons := l.NewMonitors()
	done := make(chan struct{})
	go func() { defer close(done); mons.Run(mctx) }()
	views := l.RecordViews(mctx, 50*time.Millisecond)
	conns := l.NewConns(mctx, ConnOptions{})
	defer conns.Close()
	if err := conns.Open(ctx, egressSources(start)); err != nil {
		b.Fatal(err)
	}
	time.Sleep(2 * time.Second)

	var report strings.Builder
	probes := "probes every 100ms (default)"
	if probe > 0 {
		probes = "probes every " + probe.String()
	}
	fmt.Fprintf(&report, "BenchmarkFailover: %d trials per event, 4 zones x %d gateways, EC2 timing profile %s, %s x 3, %d monitor flows (one request every %s, new connection each), long-lived connections through every gateway\n",
		trials, gpz, timing, probes, len(mons), MonitorInterval)
	fmt.Fprintf(&report, "egress IP set at start: %v\n", start.EgressIPs)
	rec := RunRecord{IPSetBefore: start.EgressIPs}
	undelivered := func() uint64 {
		us, err := l.UndeliveredSources()
		if err != nil {
			b.Fatal(err)
		}
		var n uint64
		for _, u := range us {
			n += u.Packets
		}
		return n
	}
	b.ResetTimer()
	for _, e := range events {
		for i := range trials {
			before, err := l.View(ctx)
			if err != nil {
				b.Fatal(err)
			}
			u0, d0 := undelivered(), l.Drops()
			inc, lost, err := e.run(ctx, l, i, before)
			if err != nil {
				b.Fatalf("%s trial %d: %v", e.name, i, err)
			}
			ev := inc.Event(e.name)
			for _, n := range inc.Nodes {
				ev.AffectedIPs = append(ev.AffectedIPs, before.HeldBy(n)...)
			}
			ev.IPSetBefore, ev.LostZones = before.EgressIPs, lost
			after, err := l.WaitFor(ctx, wholeTimeout, "gateway whole again", l.AllActive)
			if err != nil {
				b.Logf("%s trial %d: %v", e.name, i, err)
			}
			time.Sleep(3 * time.Second)
			// The window ends once the connections that survived carry data again: TCP's
			// backoff can keep one silent for seconds after its path is back.
			conns.WaitFresh(ctx, l.ConnWait())
			ev.End, ev.IPSetAfter = time.Now(), after.EgressIPs
			ev.SettledAt = Settled(views.Views(), ev.At, 2*time.Second, l.AllActive)
			ev.UndeliveredSource = undelivered() - u0
			rec.Events = append(rec.Events, ev)
			fmt.Fprintf(os.Stderr, "%s %s trial %d: nodes %v, settled %v after the crash; datapath drops: %v; load %s\n", time.Now().Format("15:04:05"), e.name, i,
				inc.Nodes, ev.SettledAt.Sub(ev.At).Round(time.Millisecond), l.Drops().Since(d0), loadAverage())
			if err := conns.Refill(ctx, egressSources(after)); err != nil {
				b.Logf("%s trial %d: reopening long-lived connections: %v", e.name, i, err)
			}
		}
	}
	b.StopTimer()
	mcancel()
	<-done
	rec.Samples, rec.Conns = mons.Samples(), conns.Records()
	rec.Moves = l.moveWindows()
	if v, err := l.View(context.Background()); err == nil {
		rec.IPSetAfter = v.EgressIPs
	}
	// Per event kind, over the flows of the zones the event left standing.
	byName := map[string][]EventResult{}
	for _, ev := range rec.Events {
		byName[ev.Name] = append(byName[ev.Name], rec.Analyze(ev))
	}
	var sums []Summary
	for _, e := range events {
		s := Summarize(e.name, byName[e.name])
		sums = append(sums, s)
		b.ReportMetric(s.OutageP99.Seconds(), e.name+"-p99-s")
	}
	WriteSummaries(&report, sums)
	fmt.Fprintf(&report, "targets (DESIGN.md §8, crash-anchored): one gateway of 8 p99 <= 0.5 s, three of four zones <= 1 s, drain 0 failed, same IP set once settled, 0 packets with an undelivered source\n")
	if probes, err := l.UndeliveredProbes(); err == nil {
		var n uint64
		for _, p := range probes {
			n += p.Packets
		}
		fmt.Fprintf(&report, "delivery probes dropped by the source check before their address landed (egressd's own proofs, not user traffic): %d\n", n)
	}
	fmt.Print(report.String())
	out := filepath.Join(envtest.RepoRoot(), "out")
	if err := os.MkdirAll(out, 0o755); err == nil {
		name := strings.NewReplacer(":", "-", ".", "_").Replace(timing)
		_ = os.WriteFile(filepath.Join(out, "bench-lab-"+name+".txt"), []byte(report.String()), 0o644)
		if raw, err := json.Marshal(rec.Report()); err == nil {
			_ = os.WriteFile(filepath.Join(out, "bench-lab-"+name+".json"), raw, 0o644)
		}
	}
}

// loadAverage is the machine's 1-minute load average, printed with each trial: every hop and the
// monitor share the machine's cores, so a trial's figures mean something only next to it.
func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	first, _, _ := strings.Cut(string(raw), " ")
	return first
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
