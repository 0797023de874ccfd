package lab

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	awssim "github.com/egressd/egressd/test/cloudsim/aws"
	"github.com/egressd/egressd/test/envtest"
)

// Bounds of BenchmarkCloudMove.
const (
	maxMoveTrials = 200
	// moveTimeout bounds the wait for one cloud move; past it the trial is recorded as not done.
	moveTimeout = time.Minute
	// movePoll is how often the ledger and the simulator are read during a move: fine against
	// moves of a second or more, and a light load on the API server.
	movePoll = 10 * time.Millisecond
	// moveSettle is how long the crashed node stays down after the move is done, so the monitor
	// shows the steady state through the survivor before the node comes back.
	moveSettle = 2 * time.Second
)

// moveTrial is what one crash of zone a's egress IP holder gave.
type moveTrial struct {
	crashed, survivor string
	// switched is crash → datapath switch on the worker: the first monitor success after the
	// last failure, or, when no request failed, the first success through another egress IP.
	switched   time.Duration
	noFailures bool
	failed     int
	// ledger and cloud are crash → EgressIP status.node on the survivor, and crash → the
	// simulator's holder is the survivor's instance; moved is the later of the two.
	ledger, cloud, moved time.Duration
	moveDone             bool
	publicFollowed       bool // the Elastic IP was on the survivor's address when the node came back
	ipSetSame            bool // status.egressIPs unchanged after the move and once whole again
	calls                map[string]int
}

// BenchmarkCloudMove measures the figure issue 7 asks for: time from a gateway's death to the
// datapath switch on the workers and to the cloud move done. A two-zone lab with two gateways
// per zone runs the walkthrough's gateway and policy (affinity Any, one egress IP per zone);
// each trial crashes the gateway holding zone a's egress IP (agent killed, fabric port cut),
// times the monitor's switch and the move of the IP to the zone's other gateway (the EgressIP
// ledger's status.node and the simulator's holder both on the survivor), checks the gateway's
// egress IP set, counts EC2's mutating calls, then restores the node and waits until the
// gateway is whole. EGRESSD_LAB_TRIALS trials (default 20). The figures are printed and written
// to out/bench-cloudmove.txt when out/ exists. One run is the whole measurement, whatever b.N.
func BenchmarkCloudMove(b *testing.B) {
	skipUnlessRoot(b)
	skipUnlessBinaries(b)
	trials := 20
	if v, err := strconv.Atoi(os.Getenv("EGRESSD_LAB_TRIALS")); err == nil && v > 0 {
		trials = min(v, maxMoveTrials)
	}
	l := upLab(b, Config{Zones: 2, GatewaysPerZone: 2, BinDir: binDir()})
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(trials)*3*time.Minute+5*time.Minute)
	defer cancel()
	if err := l.ApplyDemoPolicy(ctx); err != nil {
		b.Fatal(err)
	}
	start, err := l.WaitFor(ctx, 2*time.Minute, "gateway ready", l.AllActive)
	if err != nil {
		b.Fatalf("%v\ncontroller log:\n%s", err, Tail(l.LogPath(""), 20))
	}
	mon := NewMonitor(l.Monitor, l.Echo)
	mctx, mcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); mon.Run(mctx) }()
	defer func() { mcancel(); <-done }()
	time.Sleep(2 * time.Second)

	zone := zoneName(0)
	var results []moveTrial
	b.ResetTimer()
	for i := range trials {
		r, err := l.moveTrial(ctx, mon, zone)
		if err != nil {
			b.Fatalf("trial %d: %v\ncontroller log:\n%s", i, err, Tail(l.LogPath(""), 30))
		}
		b.Logf("trial %d: %s → %s: switch %s (failed %d), ledger %s, cloud %s, moved %s, mutating calls %d %v",
			i, r.crashed, r.survivor, fmtDur(r.switched), r.failed, fmtDur(r.ledger), fmtDur(r.cloud), fmtDur(r.moved),
			awssim.MutatingCalls(r.calls), r.calls)
		results = append(results, r)
	}
	b.StopTimer()

	report := moveReport(results, trials, start.EgressIPs)
	fmt.Print(report)
	var switched, moved []time.Duration
	mutating := 0
	for _, r := range results {
		switched = append(switched, r.switched)
		if r.moveDone {
			moved = append(moved, r.moved)
		}
		mutating += awssim.MutatingCalls(r.calls)
	}
	b.ReportMetric(Percentile(switched, 50).Seconds(), "switch-p50-s")
	b.ReportMetric(Percentile(switched, 99).Seconds(), "switch-p99-s")
	b.ReportMetric(Percentile(moved, 50).Seconds(), "move-p50-s")
	b.ReportMetric(Percentile(moved, 99).Seconds(), "move-p99-s")
	b.ReportMetric(float64(mutating)/float64(max(len(results), 1)), "mutating-calls/move")
	out := filepath.Join(envtest.RepoRoot(), "out")
	if st, err := os.Stat(out); err == nil && st.IsDir() {
		if err := os.WriteFile(filepath.Join(out, "bench-cloudmove.txt"), []byte(report), 0o644); err != nil {
			b.Error(err)
		}
	}
}

// moveTrial crashes the gateway holding zone's egress IP and measures until the node is back
// and the gateway whole again.
func (l *Lab) moveTrial(ctx context.Context, mon *Monitor, zone string) (moveTrial, error) {
	var r moveTrial
	eip, err := l.zoneEgressIP(ctx, zone)
	if err != nil {
		return r, err
	}
	ip, err := netip.ParseAddr(eip.Spec.IP)
	if err != nil {
		return r, err
	}
	r.crashed = eip.Status.Node
	for _, n := range l.Gateways() {
		if n.Zone.Name == zone && n.Name != r.crashed {
			r.survivor = n.Name
		}
	}
	surv := l.Node(r.survivor)
	if surv == nil {
		return r, fmt.Errorf("no other gateway than %s in %s", r.crashed, zone)
	}
	before, err := l.View(ctx)
	if err != nil {
		return r, err
	}
	affected := []string{ip.String()}
	if p := before.Public[ip.String()]; p != "" {
		affected = append(affected, p)
	}

	l.Sim.ResetCalls()
	at := time.Now()
	if err := l.Crash(ctx, r.crashed); err != nil {
		return r, err
	}
	restore := func() error { return l.Restore(context.WithoutCancel(ctx), r.crashed) }
	r.ledger, r.cloud, err = l.waitMove(ctx, at, eip.Name, ip, r.survivor, surv.Instance.ID)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return r, errors.Join(err, restore())
	}
	r.moveDone = err == nil
	r.moved = max(r.ledger, r.cloud)
	if !r.moveDone {
		r.moved = moveTimeout
	}
	if err := sleep(ctx, moveSettle); err != nil {
		return r, errors.Join(err, restore())
	}
	r.calls = l.Sim.Calls()
	down, derr := l.View(ctx)
	h, _ := l.Sim.Holder(l.VPC, ip)
	publicBefore := before.Public[ip.String()]
	r.publicFollowed = publicBefore == "" || (h.Instance == surv.Instance.ID && h.PublicIP.String() == publicBefore)
	restoredAt := time.Now()
	if err := restore(); err != nil {
		return r, err
	}
	r.switched, r.failed, r.noFailures = switchTime(mon.Samples(), at, restoredAt, affected)

	after, err := l.WaitFor(ctx, 2*time.Minute, "gateway whole again", func(v GatewayView) bool {
		if !l.AllActive(v) {
			return false
		}
		// No move in flight: the ledger and the cloud agree on zone's egress IP.
		e, err := l.zoneEgressIP(ctx, zone)
		if err != nil {
			return false
		}
		h, ok := l.Sim.Holder(l.VPC, ip)
		n := l.Node(e.Status.Node)
		return ok && n != nil && h.Instance == n.Instance.ID
	})
	if err != nil {
		return r, err
	}
	r.ipSetSame = derr == nil && slices.Equal(before.EgressIPs, down.EgressIPs) && slices.Equal(before.EgressIPs, after.EgressIPs)
	return r, sleep(ctx, time.Second)
}

// zoneEgressIP returns the one EgressIP of the lab's gateway in zone, with its holder.
func (l *Lab) zoneEgressIP(ctx context.Context, zone string) (egressv1.EgressIP, error) {
	list, err := l.EgressIPs(ctx)
	if err != nil {
		return egressv1.EgressIP{}, err
	}
	var found []egressv1.EgressIP
	for _, e := range list {
		if e.Spec.Gateway == GatewayGroup && e.Spec.Zone == zone && e.DeletionTimestamp == nil {
			found = append(found, e)
		}
	}
	if len(found) != 1 || found[0].Status.Node == "" {
		return egressv1.EgressIP{}, fmt.Errorf("want one held EgressIP of %s in %s, have %d (%v)", GatewayGroup, zone, len(found), found)
	}
	return found[0], nil
}

// waitMove polls the ledger and the simulator until the EgressIP's status.node is node and the
// simulator's holder of ip is instance, returning the time from at to each.
func (l *Lab) waitMove(ctx context.Context, at time.Time, name string, ip netip.Addr, node, instance string) (ledger, cloud time.Duration, err error) {
	ctx, cancel := context.WithDeadline(ctx, at.Add(moveTimeout))
	defer cancel()
	t := time.NewTicker(movePoll)
	defer t.Stop()
	for {
		if ledger == 0 {
			var e egressv1.EgressIP
			if err := l.API.Client.Get(ctx, client.ObjectKey{Name: name}, &e); err == nil && e.Status.Node == node {
				ledger = time.Since(at)
			}
		}
		if cloud == 0 {
			if h, ok := l.Sim.Holder(l.VPC, ip); ok && h.Instance == instance {
				cloud = time.Since(at)
			}
		}
		if ledger != 0 && cloud != 0 {
			return ledger, cloud, nil
		}
		if l.controller != nil && !l.ControllerRunning() {
			return ledger, cloud, fmt.Errorf("egressd-controller exited; last lines of %s:\n%s", l.LogPath(""), Tail(l.LogPath(""), 15))
		}
		select {
		case <-ctx.Done():
			return ledger, cloud, ctx.Err()
		case <-t.C:
		}
	}
}

// switchTime reads the monitor's record of [at, end): the time from at to the first success
// after the last failure or, when nothing failed, to the first success through an egress IP
// not in affected; and how many requests failed.
func switchTime(samples []Sample, at, end time.Time, affected []string) (d time.Duration, failed int, none bool) {
	var lastFail time.Time
	var window []Sample
	for _, s := range samples {
		if s.Sent.Before(at) || !s.Sent.Before(end) {
			continue
		}
		window = append(window, s)
		if !s.OK() {
			failed++
			lastFail = s.Sent
		}
	}
	for _, s := range window {
		if !s.OK() {
			continue
		}
		if (failed > 0 && s.Sent.After(lastFail)) || (failed == 0 && !slices.Contains(affected, s.Source)) {
			return s.Sent.Sub(at), failed, failed == 0
		}
	}
	return end.Sub(at), failed, failed == 0 // never switched within the window
}

func moveReport(rs []moveTrial, trials int, ipSet []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "BenchmarkCloudMove: %d trials, 2 zones x 2 gateways (ActiveActive, affinity Any, 1 egress IP per zone), monitor every %s (new connection per request)\n", trials, MonitorInterval)
	fmt.Fprintf(&b, "each trial: crash (agent SIGKILL + fabric port down) of the holder of %s's egress IP; node back %s after the move\n", zoneName(0), moveSettle)
	fmt.Fprintf(&b, "egress IP set at start: %v\n\n", ipSet)
	var switched, ledger, cloud, moved []time.Duration
	failed, noFail, notDone, ipChanged, eipLost, mutating := 0, 0, 0, 0, 0, 0
	calls := map[string]int{}
	for _, r := range rs {
		switched = append(switched, r.switched)
		failed += r.failed
		if r.noFailures {
			noFail++
		}
		if r.moveDone {
			ledger, cloud, moved = append(ledger, r.ledger), append(cloud, r.cloud), append(moved, r.moved)
		} else {
			notDone++
		}
		if !r.ipSetSame {
			ipChanged++
		}
		if !r.publicFollowed {
			eipLost++
		}
		mutating += awssim.MutatingCalls(r.calls)
		for a, n := range r.calls {
			calls[a] += n
		}
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FROM CRASH TO\tP50\tP99\tMAX")
	row := func(name string, ds []time.Duration) {
		if len(ds) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\n", name)
			return
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, fmtDur(Percentile(ds, 50)), fmtDur(Percentile(ds, 99)), fmtDur(slices.Max(ds)))
	}
	row("datapath switch (monitor)", switched)
	row("EgressIP status.node on survivor", ledger)
	row("simulator holder is survivor", cloud)
	row("cloud move done (both)", moved)
	tw.Flush()
	n := max(len(rs), 1)
	fmt.Fprintf(&b, "\nfailed requests: %d (%.1f per trial); trials without a failed request: %d\n", failed, float64(failed)/float64(n), noFail)
	fmt.Fprintf(&b, "move not done within %s: %d/%d; egress IP set changed: %d/%d; Elastic IP not on the survivor's address: %d/%d\n",
		moveTimeout, notDone, len(rs), ipChanged, len(rs), eipLost, len(rs))
	fmt.Fprintf(&b, "EC2 calls from the crash to the node's return (%d moves): mutating %d (%.1f per move)", len(rs), mutating, float64(mutating)/float64(n))
	for _, a := range slices.Sorted(maps.Keys(calls)) {
		fmt.Fprintf(&b, "; %s %d", a, calls[a])
	}
	b.WriteString("\n\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TRIAL\tCRASHED\tSURVIVOR\tSWITCH\tFAILED\tLEDGER\tCLOUD\tMOVED\tMUTATING CALLS\tIP SET SAME")
	for i, r := range rs {
		moved := fmtDur(r.moved)
		if !r.moveDone {
			moved = "not done"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%d\t%v\n", i, r.crashed, r.survivor, fmtDur(r.switched), r.failed,
			fmtDur(r.ledger), fmtDur(r.cloud), moved, awssim.MutatingCalls(r.calls), r.ipSetSame)
	}
	tw.Flush()
	return b.String()
}
