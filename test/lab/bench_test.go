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

// BenchmarkFailover plays each event of the walkthrough EGRESSD_LAB_TRIALS times (default 20)
// on one four-zone lab with the monitor running, and reports what DESIGN.md §8 holds egressd
// to: failover outage p50/p99 for one gateway and for three of four, failed requests during
// planned drains, and whether the egress IP set survived every trial. The figures are printed
// and written to out/bench-lab.txt. One run is the whole measurement, whatever b.N.
func BenchmarkFailover(b *testing.B) {
	skipUnlessRoot(b)
	skipUnlessBinaries(b)
	trials := 20
	if v, err := strconv.Atoi(os.Getenv("EGRESSD_LAB_TRIALS")); err == nil && v > 0 {
		trials = v
	}
	l := upLab(b, Config{Zones: 4, BinDir: binDir()})
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(trials)*3*30*time.Second+5*time.Minute)
	defer cancel()
	if err := l.ApplyDemoPolicy(ctx); err != nil {
		b.Fatal(err)
	}
	start, err := l.WaitFor(ctx, 2*time.Minute, "gateway ready", l.AllActive)
	if err != nil {
		b.Fatal(err)
	}
	mon := NewMonitor(l.Monitor, l.Echo)
	mctx, mcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); mon.Run(mctx) }()
	defer func() { mcancel(); <-done }()
	time.Sleep(2 * time.Second)

	// The control plane's view over the run: every change of a gateway's state and reason.
	type stateChange struct {
		At    time.Time `json:"at"`
		Node  string    `json:"node"`
		State string    `json:"state"`
	}
	var states []stateChange
	sdone := make(chan struct{})
	go func() {
		defer close(sdone)
		last := map[string]string{}
		for mctx.Err() == nil {
			if gw, err := l.GatewayStatus(mctx); err == nil {
				for _, z := range gw.Status.Zones {
					for _, g := range z.Gateways {
						if st := string(g.State) + "/" + g.Reason; last[g.Node] != st {
							last[g.Node] = st
							states = append(states, stateChange{time.Now(), g.Node, st})
						}
					}
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	gws := names(l.Gateways())
	kinds := []struct {
		name  string
		nodes func(i int) []string
		drain bool
	}{
		{"reboot-1-of-4", func(i int) []string { return []string{gws[i%4]} }, false},
		{"reboot-3-of-4", func(i int) []string {
			var out []string
			for k := 1; k < 4; k++ {
				out = append(out, gws[(i+k)%4])
			}
			return out
		}, false},
		{"drain", func(i int) []string { return []string{gws[i%4]} }, true},
	}
	if only := os.Getenv("EGRESSD_LAB_EVENTS"); only != "" {
		kinds = slices.DeleteFunc(kinds, func(k struct {
			name  string
			nodes func(i int) []string
			drain bool
		}) bool {
			return !slices.Contains(strings.Split(only, ","), k.name)
		})
	}
	var events []Event
	var report strings.Builder
	fmt.Fprintf(&report, "BenchmarkFailover: %d trials per event, 4 zones x 1 gateway, monitor every %s (new connection per request)\n", trials, MonitorInterval)
	fmt.Fprintf(&report, "egress IP set at start: %v\n", start.EgressIPs)
	b.ResetTimer()
	for _, k := range kinds {
		var outages []time.Duration
		failed, changed, incomplete := 0, 0, 0
		for i := range trials {
			nodes := k.nodes(i)
			before, err := l.View(ctx)
			if err != nil {
				b.Fatal(err)
			}
			ev := Event{Name: k.name, Nodes: nodes, At: time.Now(), IPSetBefore: before.EgressIPs}
			if k.drain {
				err = l.Drain(ctx, nodes[0])
				if err == nil {
					time.Sleep(2 * time.Second)
					err = l.Undrain(ctx, nodes[0])
				}
			} else {
				err = l.Reboot(ctx, 2*time.Second, nodes...)
			}
			if err != nil {
				b.Fatal(err)
			}
			after, err := l.WaitFor(ctx, time.Minute, "gateway whole again", l.AllActive)
			if err != nil {
				incomplete++
				b.Logf("%s trial %d: %v", k.name, i, err)
			}
			time.Sleep(time.Second)
			ev.End, ev.IPSetAfter = time.Now(), after.EgressIPs
			events = append(events, ev)
			r := Analyze(mon.Samples(), ev)
			outages = append(outages, r.Outage)
			failed += r.Failed
			if !r.SameIPSet {
				changed++
			}
		}
		fmt.Fprintf(&report, "%-14s outage p50 %-8s p99 %-8s max %-8s failed requests %d, IP set changed in %d/%d trials, not whole again within 1 min in %d\n",
			k.name, fmtDur(Percentile(outages, 50)), fmtDur(Percentile(outages, 99)), fmtDur(slices.Max(outages)), failed, changed, trials, incomplete)
		b.ReportMetric(Percentile(outages, 50).Seconds(), k.name+"-p50-s")
		b.ReportMetric(Percentile(outages, 99).Seconds(), k.name+"-p99-s")
		b.ReportMetric(float64(failed), k.name+"-failed")
	}
	fmt.Fprintf(&report, "targets (DESIGN.md §8): p99 <= 0.5 s one gateway, <= 1 s three of four, 0 failed in drains, same IP set; published: 3 s, up to 6 s in batches\n")
	b.StopTimer()
	fmt.Print(report.String())
	out := filepath.Join(envtest.RepoRoot(), "out")
	if err := os.MkdirAll(out, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(out, "bench-lab.txt"), []byte(report.String()), 0o644)
		// Every request and event, for a look at single trials.
		mcancel()
		<-sdone
		if raw, err := json.Marshal(struct {
			Events  []Event       `json:"events"`
			Samples []Sample      `json:"samples"`
			States  []stateChange `json:"states"`
		}{events, mon.Samples(), states}); err == nil {
			_ = os.WriteFile(filepath.Join(out, "bench-lab-samples.json"), raw, 0o644)
		}
	}
}
